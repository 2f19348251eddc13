//! The harness the integration tests share: paths to fixtures, time limits, the real `runtime`
//! binary started on port 0 (its `Listening on http://127.0.0.1:PORT/` line parsed, its stderr
//! kept and printed when a test fails), and plain HTTP requests to it.
//!
//! Each test file includes it with `mod common;` (the `tests/common/mod.rs` layout keeps Cargo
//! from building it as a test binary of its own).

// Each test binary uses only some of these helpers; the rest would be dead code there.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod redis;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_runtime");

// ---------------------------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------------------------

pub fn repo_root() -> PathBuf {
  Path::new(env!("CARGO_MANIFEST_DIR"))
    .parent()
    .unwrap()
    .to_path_buf()
}

/// `tests/fixtures/<name>` (a file, or a directory of them such as `engine`).
pub fn fixture(name: &str) -> PathBuf {
  repo_root().join("tests/fixtures").join(name)
}

/// `examples/<name>`.
pub fn example(name: &str) -> PathBuf {
  repo_root().join("examples").join(name)
}

/// `file:///abs/path/to/script.js`, the form stack traces must use.
pub fn file_url(path: &Path) -> String {
  format!("file://{}", path.canonicalize().unwrap().display())
}

/// A fresh, empty directory under the system's temporary directory, unique to this call.
pub fn scratch_dir(name: &str) -> PathBuf {
  static COUNTER: AtomicUsize = AtomicUsize::new(0);
  let dir = std::env::temp_dir().join(format!(
    "runtime-test-{}-{}-{name}",
    std::process::id(),
    COUNTER.fetch_add(1, Ordering::Relaxed)
  ));
  let _ = std::fs::remove_dir_all(&dir);
  std::fs::create_dir_all(&dir).unwrap();
  dir
}

// ---------------------------------------------------------------------------------------------
// Time limits
// ---------------------------------------------------------------------------------------------

/// Runs a test body with a time limit, so nothing hangs forever.
pub async fn within<T>(secs: u64, f: impl Future<Output = T>) -> T {
  match tokio::time::timeout(Duration::from_secs(secs), f).await {
    Ok(v) => v,
    Err(_) => panic!("test did not finish within {secs}s"),
  }
}

/// Awaits `f`, panicking with `what` if it takes longer than `secs`.
pub async fn deadline<T>(secs: u64, what: &str, f: impl Future<Output = T>) -> T {
  match tokio::time::timeout(Duration::from_secs(secs), f).await {
    Ok(v) => v,
    Err(_) => panic!("timed out after {secs}s: {what}"),
  }
}

// ---------------------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------------------

type Buf = Arc<Mutex<Vec<u8>>>;

fn text(buf: &Buf) -> String {
  String::from_utf8_lossy(&buf.lock().unwrap()).into_owned()
}

/// Appends what `r` yields to `buf` until EOF, so the child never blocks on a full pipe.
fn drain_into(mut r: impl Read, buf: &Buf) {
  let mut chunk = [0u8; 8192];
  loop {
    match r.read(&mut chunk) {
      Ok(0) | Err(_) => break,
      Ok(n) => buf.lock().unwrap().extend_from_slice(&chunk[..n]),
    }
  }
}

fn pump(r: impl Read + Send + 'static, buf: Buf) -> JoinHandle<()> {
  std::thread::spawn(move || drain_into(r, &buf))
}

/// A running `runtime serve` process. Killed on drop; its stderr (and any stdout after the
/// Listening line) is printed if the test failed.
pub struct Server {
  child: Child,
  pub port: u16,
  stderr: Buf,
  stdout_rest: Buf,
  exit: Option<ExitStatus>,
}

/// A server's stderr as it grows, for a task that cannot borrow the `Server`.
#[derive(Clone)]
pub struct StderrHandle(Buf);

impl StderrHandle {
  pub fn text(&self) -> String {
    text(&self.0)
  }
}

/// What `launch` saw: either the server is listening, or it exited before printing the line.
pub enum Launch {
  Listening(Server),
  Exited { status: ExitStatus, stderr: String },
}

/// `runtime serve <args...>`, with the runtime's log filter at its default (an inherited
/// `RUST_LOG` would change what the tests read in the log).
pub fn serve_cmd<I, S>(args: I) -> Command
where
  I: IntoIterator<Item = S>,
  S: AsRef<OsStr>,
{
  let mut cmd = Command::new(BIN);
  cmd.arg("serve").args(args).env_remove("RUST_LOG");
  cmd
}

/// `runtime dev --port 0 --host 127.0.0.1 <args>`.
pub fn dev_cmd<I, S>(args: I) -> Command
where
  I: IntoIterator<Item = S>,
  S: AsRef<OsStr>,
{
  let mut cmd = Command::new(BIN);
  cmd
    .args(["dev", "--port", "0", "--host", "127.0.0.1"])
    .args(args)
    .env_remove("RUST_LOG");
  cmd
}

/// `runtime serve <script> --port 0 --host 127.0.0.1`.
pub fn serve_script_cmd(script: &Path) -> Command {
  let mut cmd = serve_cmd([script]);
  cmd.args(["--port", "0", "--host", "127.0.0.1"]);
  cmd
}

/// `runtime serve --config <config> --port 0 --host 127.0.0.1`.
pub fn serve_config_cmd(config: &Path) -> Command {
  let mut cmd = serve_cmd([OsStr::new("--config"), config.as_os_str()]);
  cmd.args(["--port", "0", "--host", "127.0.0.1"]);
  cmd
}

/// Starts `cmd` and waits (up to `secs`) for the exact `Listening on http://127.0.0.1:PORT/` line
/// on stdout, or for the process to exit without it.
pub fn launch(mut cmd: Command, secs: u64) -> Launch {
  cmd
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
  let mut child = cmd.spawn().expect("failed to spawn the runtime binary");

  let stderr: Buf = Arc::default();
  let stderr_thread = pump(child.stderr.take().unwrap(), stderr.clone());

  let stdout_rest: Buf = Arc::default();
  let (line_tx, line_rx) = mpsc::channel::<Option<String>>();
  let stdout = child.stdout.take().unwrap();
  let rest = stdout_rest.clone();
  let stdout_thread = std::thread::spawn(move || {
    let mut reader = BufReader::new(stdout);
    let mut first = String::new();
    match reader.read_line(&mut first) {
      Ok(n) if n > 0 => {
        let _ = line_tx.send(Some(first));
      }
      _ => {
        let _ = line_tx.send(None);
        return;
      }
    }
    drain_into(reader, &rest);
  });

  match line_rx.recv_timeout(Duration::from_secs(secs)) {
    Ok(Some(line)) => {
      let port = parse_listening_line(&line).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
          "first stdout line must be exactly `Listening on http://127.0.0.1:PORT/`, got {line:?}\n\
           stderr:\n{}",
          text(&stderr)
        )
      });
      Launch::Listening(Server {
        child,
        port,
        stderr,
        stdout_rest,
        exit: None,
      })
    }
    Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
      // stdout closed without a line: the process should be exiting.
      let start = Instant::now();
      let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
          break status;
        }
        if start.elapsed() > Duration::from_secs(30) {
          let _ = child.kill();
          let _ = child.wait();
          panic!(
            "stdout closed without a Listening line but the process did not exit; stderr:\n{}",
            text(&stderr)
          );
        }
        std::thread::sleep(Duration::from_millis(20));
      };
      let _ = stderr_thread.join();
      let _ = stdout_thread.join();
      Launch::Exited {
        status,
        stderr: text(&stderr),
      }
    }
    Err(mpsc::RecvTimeoutError::Timeout) => {
      let _ = child.kill();
      let _ = child.wait();
      panic!(
        "neither a Listening line nor an exit within {secs}s; stderr:\n{}",
        text(&stderr)
      );
    }
  }
}

fn parse_listening_line(line: &str) -> Option<u16> {
  let line = line.strip_suffix('\n')?;
  let port = line
    .strip_prefix("Listening on http://127.0.0.1:")?
    .strip_suffix('/')?;
  if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
    return None;
  }
  port.parse().ok().filter(|p| *p != 0)
}

/// Starts a server that must come up (within 60s).
pub fn serve(cmd: Command) -> Server {
  let what = format!("{cmd:?}");
  match launch(cmd, 60) {
    Launch::Listening(s) => s,
    Launch::Exited { status, stderr } => {
      panic!("`{what}` exited ({status}) instead of listening; stderr:\n{stderr}")
    }
  }
}

/// Starts `runtime serve <script>` on port 0; it must come up.
pub fn serve_script(script: &Path) -> Server {
  serve(serve_script_cmd(script))
}

/// Starts `runtime serve <script>` with a single isolate (`--threads 1`), for tests whose
/// requests share state in JS globals: with several server threads each has its own isolate, so
/// two connections may see different globals.
pub fn serve_one_isolate(script: &Path) -> Server {
  let mut cmd = serve_script_cmd(script);
  cmd.args(["--threads", "1"]);
  serve(cmd)
}

/// Starts a server that must fail to come up (within `secs`); returns its stderr after checking
/// the exit status is non-zero.
pub fn serve_fails_within(cmd: Command, secs: u64) -> String {
  let what = format!("{cmd:?}");
  match launch(cmd, secs) {
    Launch::Listening(s) => panic!("`{what}` should have failed but is listening on {}", s.port),
    Launch::Exited { status, stderr } => {
      assert!(
        !status.success(),
        "`{what}` must exit non-zero, got {status}; stderr:\n{stderr}"
      );
      stderr
    }
  }
}

/// `serve_fails_within` with the 60s a start-up may take.
pub fn serve_fails(cmd: Command) -> String {
  serve_fails_within(cmd, 60)
}

impl Server {
  pub fn url(&self, path: &str) -> String {
    format!("http://127.0.0.1:{}{}", self.port, path)
  }

  pub fn pid(&self) -> u32 {
    self.child.id()
  }

  pub fn stderr(&self) -> String {
    text(&self.stderr)
  }

  pub fn stderr_handle(&self) -> StderrHandle {
    StderrHandle(self.stderr.clone())
  }

  pub fn stdout_after_listening(&self) -> String {
    text(&self.stdout_rest)
  }

  /// Waits until stderr contains `needle`; panics after `secs`.
  pub async fn wait_for_stderr(&self, needle: &str, secs: u64) {
    let start = Instant::now();
    while !self.stderr().contains(needle) {
      if start.elapsed() > Duration::from_secs(secs) {
        panic!("stderr did not contain {needle:?} within {secs}s");
      }
      tokio::time::sleep(Duration::from_millis(20)).await;
    }
  }

  /// The base URL (`http://127.0.0.1:PORT`) a start-up log line gives after `label`, as in
  /// `admin on http://...` (for a server listening on port 0).
  async fn logged_url(&self, label: &str, path: &str) -> String {
    let line = format!("{label} on http://");
    self.wait_for_stderr(&line, 10).await;
    let log = self.stderr();
    let at = log.find(&line).unwrap() + label.len() + " on ".len();
    log[at..]
      .split_whitespace()
      .next()
      .unwrap()
      .trim_end_matches(path)
      .trim_end_matches('/')
      .to_string()
  }

  /// The admin server's base URL (for a server started with `--admin 127.0.0.1:0`).
  pub async fn admin_url(&self) -> String {
    self.logged_url("admin", "/").await
  }

  /// The inspector's base URL (for a server started with `--inspect=127.0.0.1:0`).
  pub async fn inspector_url(&self) -> String {
    self.logged_url("inspector", "/json/list").await
  }

  /// Waits until stderr has grown past `len` bytes; returns the new part.
  pub async fn wait_for_stderr_growth(&self, len: usize, secs: u64, what: &str) -> String {
    let start = Instant::now();
    loop {
      let all = self.stderr.lock().unwrap().clone();
      if all.len() > len {
        // Give the rest of the log record a moment to arrive.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let all = self.stderr.lock().unwrap().clone();
        return String::from_utf8_lossy(&all[len..]).into_owned();
      }
      if start.elapsed() > Duration::from_secs(secs) {
        panic!("nothing was logged to stderr within {secs}s after {what}");
      }
      tokio::time::sleep(Duration::from_millis(20)).await;
    }
  }

  pub fn stderr_len(&self) -> usize {
    self.stderr.lock().unwrap().len()
  }

  /// Log lines that contain every one of `parts`.
  pub fn log_lines_with(&self, parts: &[&str]) -> Vec<String> {
    self
      .stderr()
      .lines()
      .filter(|l| parts.iter().all(|p| l.contains(p)))
      .map(str::to_string)
      .collect()
  }

  /// Waits until the log has at least `n` lines containing every one of `parts`.
  pub async fn wait_for_log_lines(&self, parts: &[&str], n: usize, secs: u64) {
    let start = Instant::now();
    while self.log_lines_with(parts).len() < n {
      if start.elapsed() > Duration::from_secs(secs) {
        panic!(
          "the log did not get {n} line(s) containing all of {parts:?} within {secs}s (has {})",
          self.log_lines_with(parts).len()
        );
      }
      tokio::time::sleep(Duration::from_millis(20)).await;
    }
  }

  /// Sends a signal (`TERM`, `INT`) with the `kill` command.
  pub fn signal(&self, sig: &str) {
    let status = Command::new("kill")
      .arg(format!("-{sig}"))
      .arg(self.pid().to_string())
      .status()
      .unwrap();
    assert!(status.success(), "kill -{sig} failed");
  }

  /// Waits for the process to exit; `None` if it is still running after `secs`.
  pub async fn wait_exit(&mut self, secs: u64) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
      if let Some(status) = self.child.try_wait().unwrap() {
        self.exit = Some(status);
        return Some(status);
      }
      if start.elapsed() > Duration::from_secs(secs) {
        return None;
      }
      tokio::time::sleep(Duration::from_millis(20)).await;
    }
  }

  /// The process is still running (it did not crash).
  pub fn assert_alive(&mut self) {
    if let Some(status) = self.child.try_wait().unwrap() {
      self.exit = Some(status);
      panic!("the server exited unexpectedly: {status}");
    }
  }

  /// Waits up to `secs` for the exit that `signal` (`SIGTERM`, `SIGINT`) asked for; its status
  /// must be 0 (no crash on the way out).
  pub async fn assert_clean_exit(&mut self, secs: u64, signal: &str) {
    let exit = self
      .wait_exit(secs)
      .await
      .unwrap_or_else(|| panic!("server did not exit within {secs}s of {signal}"));
    assert_eq!(exit.code(), Some(0), "exit status after {signal}: {exit}");
  }

  /// SIGTERM, then a clean exit with status 0.
  pub async fn stop_cleanly(&mut self) {
    self.assert_alive();
    self.signal("TERM");
    self.assert_clean_exit(20, "SIGTERM").await;
  }

  /// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`).
  pub fn proc_status_kib(&self, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
    let line = status
      .lines()
      .find(|l| l.starts_with(&format!("{field}:")))
      .unwrap_or_else(|| panic!("no {field} in /proc/pid/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
  }
}

impl Drop for Server {
  fn drop(&mut self) {
    if self.exit.is_none() {
      let _ = self.child.kill();
      let _ = self.child.wait();
    }
    if std::thread::panicking() {
      eprintln!(
        "----- server stderr -----\n{}\n-------------------------",
        self.stderr()
      );
      let out = self.stdout_after_listening();
      if !out.is_empty() {
        eprintln!(
          "----- server stdout after the Listening line -----\n{out}\n-------------------------"
        );
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// A client with its own connection pool (a fresh client means a fresh connection).
pub fn client() -> reqwest::Client {
  reqwest::Client::builder()
    .no_proxy()
    .redirect(reqwest::redirect::Policy::none())
    .timeout(Duration::from_secs(60))
    .build()
    .unwrap()
}

pub async fn get(c: &reqwest::Client, url: &str) -> reqwest::Response {
  c.get(url)
    .send()
    .await
    .unwrap_or_else(|e| panic!("GET {url} failed: {e}"))
}

/// GET `url`; returns (status, body).
pub async fn get_text(c: &reqwest::Client, url: &str) -> (u16, String) {
  let r = get(c, url).await;
  let status = r.status().as_u16();
  (status, r.text().await.unwrap())
}

/// GET `url`; the body must be JSON.
pub async fn get_json(c: &reqwest::Client, url: &str) -> (u16, Value) {
  let (status, body) = get_text(c, url).await;
  let v = serde_json::from_str(&body)
    .unwrap_or_else(|e| panic!("GET {url}: body is not JSON ({e}): {body:?}"));
  (status, v)
}

/// Reads an HTTP request's head from `socket` (for the tests' own raw upstreams); `None` if the
/// connection ends first.
pub async fn read_request_head<S: tokio::io::AsyncRead + Unpin>(socket: &mut S) -> Option<Vec<u8>> {
  use tokio::io::AsyncReadExt;
  let mut head = Vec::new();
  let mut buf = [0u8; 1024];
  while !head.windows(4).any(|w| w == b"\r\n\r\n") {
    match socket.read(&mut buf).await {
      Ok(0) | Err(_) => return None,
      Ok(n) => head.extend_from_slice(&buf[..n]),
    }
  }
  Some(head)
}
