//! wptserve (from PyPI, pinned) on loopback, serving the WPT directory with
//! its `.py` handlers, for the tests that fetch from a server and for the
//! `.sub.` scripts (`{{host}}`, `{{ports[http][0]}}`...).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{anyhow, Context as _};

use crate::tls::TestCertificates;

pub const WPTSERVE_VERSION: &str = "4.0.3";
const LAUNCHER: &str = include_str!("launch_wptserve.py");

pub struct WptServer {
  child: Child,
  pub http_ports: Vec<u16>,
  pub https_ports: Vec<u16>,
  /// The certificates its https ports serve with (None: no TLS, nothing
  /// listens on those ports).
  pub tls: Option<TestCertificates>,
}

impl WptServer {
  /// `http://localhost:PORT`: where tests are "served" from.
  pub fn http_origin(&self) -> String {
    format!("http://localhost:{}", self.http_ports[0])
  }

  /// The https origin `.https.` tests see in `location`.
  pub fn https_origin(&self) -> String {
    format!("https://localhost:{}", self.https_ports[0])
  }

  /// Each port, and the template that names it.
  pub fn port_names(&self) -> Vec<(u16, &'static str)> {
    const HTTP: [&str; 2] = ["{{ports[http][0]}}", "{{ports[http][1]}}"];
    const HTTPS: [&str; 2] = ["{{ports[https][0]}}", "{{ports[https][1]}}"];
    let http = self.http_ports.iter().zip(HTTP);
    let https = self.https_ports.iter().zip(HTTPS);
    http
      .chain(https)
      .map(|(port, name)| (*port, name))
      .collect()
  }

  /// Starts wptserve with `python` (installing wptserve next to the runner
  /// binary from PyPI with pip if `python` cannot import it).
  pub fn start(python: &str, wpt_dir: &Path) -> anyhow::Result<WptServer> {
    let python_path = ensure_wptserve(python)?;
    let tls = match TestCertificates::generate() {
      Ok(tls) => Some(tls),
      Err(error) => {
        println!("wpt: warning: no certificates for https ({error:#}): https tests will fail");
        None
      }
    };
    let mut command = Command::new(python);
    command.arg("-c").arg(LAUNCHER).arg(wpt_dir);
    if let Some(tls) = &tls {
      command.arg(tls.cert()).arg(tls.key());
    }
    command
      .stdin(Stdio::piped())
      .stdout(Stdio::piped())
      .stderr(Stdio::null());
    // Its own process group, with the stash's manager process it forks:
    // stopping it stops them all.
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    if let Some(dir) = &python_path {
      command.env("PYTHONPATH", dir);
    }
    let mut child = command
      .spawn()
      .with_context(|| format!("cannot start {python}"))?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
      let mut line = String::new();
      let _ = BufReader::new(stdout).read_line(&mut line);
      let _ = tx.send(line);
    });
    let line = match rx.recv_timeout(Duration::from_secs(60)) {
      Ok(line) if !line.trim().is_empty() => line,
      _ => {
        let _ = child.kill();
        let _ = child.wait();
        return Err(anyhow!("wptserve did not start"));
      }
    };
    let ports: serde_json::Value =
      serde_json::from_str(&line).with_context(|| format!("wptserve said {line:?}"))?;
    let list = |key: &str| -> Vec<u16> {
      ports[key]
        .as_array()
        .map(|a| {
          a.iter()
            .filter_map(|p| p.as_u64())
            .map(|p| p as u16)
            .collect()
        })
        .unwrap_or_default()
    };
    let (http_ports, https_ports) = (list("http"), list("https"));
    if http_ports.is_empty() || https_ports.is_empty() {
      let _ = child.kill();
      let _ = child.wait();
      return Err(anyhow!("wptserve said {line:?}"));
    }
    Ok(WptServer {
      child,
      http_ports,
      https_ports,
      tls,
    })
  }
}

impl Drop for WptServer {
  fn drop(&mut self) {
    // Closing its stdin asks it to stop (it shuts its stash down first);
    // then make sure, the whole process group.
    drop(self.child.stdin.take());
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
      if let Ok(Some(_)) = self.child.try_wait() {
        break;
      }
      std::thread::sleep(Duration::from_millis(20));
    }
    #[cfg(unix)]
    if let Ok(pid) = i32::try_from(self.child.id()) {
      // SAFETY: kill(2) on the group this child leads; no memory involved.
      unsafe {
        libc::kill(-pid, libc::SIGKILL);
      }
    }
    let _ = self.child.kill();
    let _ = self.child.wait();
  }
}

fn can_import(python: &str, python_path: Option<&Path>) -> bool {
  let mut command = Command::new(python);
  command
    .args(["-c", "import wptserve"])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
  if let Some(dir) = python_path {
    command.env("PYTHONPATH", dir);
  }
  command.status().is_ok_and(|s| s.success())
}

/// Where the runner installs wptserve when Python lacks it: beside the
/// binary (`target/<profile>/wptserve-4.0.3`).
fn private_dir() -> Option<PathBuf> {
  let exe = std::env::current_exe().ok()?;
  Some(exe.parent()?.join(format!("wptserve-{WPTSERVE_VERSION}")))
}

/// Returns the `PYTHONPATH` wptserve needs (None: Python has it already).
fn ensure_wptserve(python: &str) -> anyhow::Result<Option<PathBuf>> {
  if can_import(python, None) {
    return Ok(None);
  }
  let dir = private_dir().ok_or_else(|| anyhow!("cannot locate the runner binary"))?;
  if can_import(python, Some(&dir)) {
    return Ok(Some(dir));
  }
  eprintln!(
    "wpt: installing wptserve {WPTSERVE_VERSION} from PyPI into {}",
    dir.display()
  );
  let status = Command::new(python)
    .args([
      "-m",
      "pip",
      "install",
      "--quiet",
      "--disable-pip-version-check",
    ])
    .arg("--target")
    .arg(&dir)
    .arg(format!("wptserve=={WPTSERVE_VERSION}"))
    .stdin(Stdio::null())
    .status()
    .with_context(|| format!("cannot run {python} -m pip"))?;
  if !status.success() || !can_import(python, Some(&dir)) {
    return Err(anyhow!(
      "cannot install wptserve: run `{python} -m pip install wptserve=={WPTSERVE_VERSION}`"
    ));
  }
  Ok(Some(dir))
}
