//! `runtime wpt`: runs web-platform-tests against the runtime's global scope.
//!
//! Each test (a `*.any.js` or `*.worker.js` file, or one `// META: variant=`
//! of it) runs in its own child process (`runtime wpt --single ID`), in a
//! fresh isolate from the same startup snapshot `runtime serve` uses. A
//! child streams its results as JSON lines, so a test that hangs in a
//! synchronous loop (killed) or crashes V8 (an abort, an out-of-memory)
//! loses only itself, and whatever it reported before counts. Children run
//! in parallel, one per core by default. wptserve, started once, serves the
//! WPT directory on loopback for tests that fetch.

mod expectations;
mod isolate;
mod results;
mod server;
mod tests;
mod tls;

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use clap::Args;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};

use expectations::{Expectation, Expectations};
use results::{by_dir, parse_child, summary_json, Counts, Exit, FileResult};
use server::WptServer;
use tests::TestCase;

/// The arguments of `runtime wpt`.
#[derive(Args, Debug, Clone)]
pub struct WptArgs {
  /// Tests to run: path prefixes under the WPT directory (`url/`,
  /// `streams/piping`) or patterns with `*` (`url/urlsearchparams-*`). All
  /// when none.
  pub filters: Vec<String>,
  /// The web-platform-tests checkout (default: $WPT_DIR, else ../shared/wpt).
  #[arg(long)]
  pub wpt_dir: Option<PathBuf>,
  /// The expectations file (default: wpt/expectations.json of this project).
  #[arg(long)]
  pub expectations: Option<PathBuf>,
  /// Rewrite the expectations from this run's results.
  #[arg(long)]
  pub update: bool,
  /// Write a summary (per directory and per file) as JSON to this file.
  #[arg(long)]
  pub json: Option<PathBuf>,
  /// Tests run at once (default: one per core).
  #[arg(long, short)]
  pub jobs: Option<usize>,
  /// Multiply every timeout (10 s, 60 s for `timeout=long`) by this.
  #[arg(long, default_value_t = 1.0)]
  pub timeout_multiplier: f64,
  /// Do not start wptserve (tests that fetch from it then fail).
  #[arg(long)]
  pub no_server: bool,
  /// Python to run wptserve with.
  #[arg(long, default_value = "python3")]
  pub python: String,
  /// Show every failing subtest, not only the unexpected ones.
  #[arg(long, short)]
  pub verbose: bool,
  /// Internal: run one test in this process and print its results.
  #[arg(long, hide = true)]
  pub single: Option<String>,
  /// Internal (--single): the test's origin, as `location` shows it.
  #[arg(long, hide = true)]
  pub origin: Option<String>,
  /// Internal (--single): wptserve's http origin, for `.sub.` scripts.
  #[arg(long, hide = true)]
  pub server_origin: Option<String>,
  /// Internal (--single): the harness timeout in milliseconds.
  #[arg(long, hide = true)]
  pub timeout_ms: Option<u64>,
}

/// The tracing filter `runtime wpt` logs with unless RUST_LOG says
/// otherwise: a test's `console.*` and its uncaught errors are noise here.
pub const LOG_FILTER: &str = "error,console=off";

/// Runs `runtime wpt`.
pub fn main(args: WptArgs) -> ExitCode {
  let result = if args.single.is_some() {
    run_single(&args).map(|()| ExitCode::SUCCESS)
  } else {
    run_all(&args)
  };
  match result {
    Ok(code) => code,
    Err(error) => {
      eprintln!("wpt: error: {error:#}");
      ExitCode::from(2)
    }
  }
}

fn wpt_dir(args: &WptArgs) -> anyhow::Result<PathBuf> {
  let dir = match (&args.wpt_dir, std::env::var_os("WPT_DIR")) {
    (Some(dir), _) => dir.clone(),
    (None, Some(dir)) if !dir.is_empty() => PathBuf::from(dir),
    _ => {
      let candidates = [
        PathBuf::from("../shared/wpt"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/wpt"),
      ];
      candidates
        .into_iter()
        .find(|d| d.join("resources/testharness.js").is_file())
        .ok_or_else(|| anyhow!("no WPT directory: pass --wpt-dir or set WPT_DIR"))?
    }
  };
  let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
  if !dir.join("resources/testharness.js").is_file() {
    return Err(anyhow!(
      "{} is not a web-platform-tests checkout (no resources/testharness.js)",
      dir.display()
    ));
  }
  Ok(dir)
}

fn expectations_path(args: &WptArgs) -> PathBuf {
  if let Some(path) = &args.expectations {
    return path.clone();
  }
  let local = PathBuf::from("wpt/expectations.json");
  if local.exists() {
    return local;
  }
  Path::new(env!("CARGO_MANIFEST_DIR")).join("expectations.json")
}

fn base_timeout(test: &TestCase, multiplier: f64) -> Duration {
  let seconds = if test.meta.long_timeout { 60.0 } else { 10.0 };
  Duration::from_secs_f64(seconds * multiplier.max(0.1))
}

/// The WPT commit the expectations are for (`wpt/WPT_COMMIT`).
const WPT_COMMIT: &str = include_str!("../WPT_COMMIT");

/// Warns when the WPT directory is at another commit than the expectations
/// were written for.
fn check_commit(dir: &Path) {
  let expected = WPT_COMMIT.trim();
  let found = std::fs::read_to_string(dir.join("WPT_COMMIT"))
    .ok()
    .or_else(|| {
      let output = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "HEAD"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
      output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    });
  match found {
    Some(found) if found.trim() != expected => println!(
      "wpt: warning: {} is at commit {}, the expectations are for {expected}",
      dir.display(),
      found.trim()
    ),
    Some(_) => {}
    None => println!(
      "wpt: warning: cannot tell the commit of {} (expectations are for {expected})",
      dir.display()
    ),
  }
}

/// `--single`: one test in this process.
fn run_single(args: &WptArgs) -> anyhow::Result<()> {
  let id = args.single.as_deref().unwrap_or_default();
  let dir = wpt_dir(args)?;
  let split = id.find(['?', '#']).unwrap_or(id.len());
  let (path, variant) = id.split_at(split);
  let source =
    std::fs::read_to_string(dir.join(path)).with_context(|| format!("no test {path}"))?;
  let test = TestCase {
    id: id.to_string(),
    path: path.to_string(),
    variant: variant.to_string(),
    meta: tests::Meta::parse(&source),
  };
  let origin = args
    .origin
    .clone()
    .unwrap_or_else(|| "http://localhost:8000".to_string());
  let server_origin = args.server_origin.clone().unwrap_or_else(|| origin.clone());
  let timeout = args
    .timeout_ms
    .map(Duration::from_millis)
    .unwrap_or_else(|| base_timeout(&test, args.timeout_multiplier));
  // The parent kills a test that overstays; this is in case the parent is
  // gone (a test never yielding would otherwise spin forever).
  let limit = timeout + Duration::from_secs(30);
  std::thread::spawn(move || {
    std::thread::sleep(limit);
    eprintln!("wpt: {}s passed: exiting", limit.as_secs());
    std::process::exit(4);
  });
  let runtime = tokio::runtime::Builder::new_current_thread()
    .enable_all()
    .build()?;
  runtime.block_on(isolate::run_single(
    &dir,
    &test,
    &origin,
    &server_origin,
    timeout,
  ))
}

/// How the children reach the server.
#[derive(Clone)]
struct Origins {
  http: String,
  https: String,
  /// The server's ports and how expectations spell them: subtest names that
  /// hold a URL are the same from one run to the next.
  ports: Vec<(u16, &'static str)>,
  /// The CA the https server's certificate is signed by, trusted by the
  /// test children (`RUNTIME_CA_CERTS`).
  ca_file: Option<PathBuf>,
}

fn run_all(args: &WptArgs) -> anyhow::Result<ExitCode> {
  let started = Instant::now();
  let dir = wpt_dir(args)?;
  let expectations_file = expectations_path(args);
  let mut expectations = Expectations::load(&expectations_file)?;
  check_commit(&dir);
  // By default the directories this project tracks (all of the shared
  // subset; a full WPT checkout has many more).
  let filters: Vec<String> = if args.filters.is_empty() {
    results::DIRS.iter().map(|d| format!("{d}/")).collect()
  } else {
    args.filters.clone()
  };
  let (tests, not_applicable) = tests::discover(&dir, &filters)?;
  if tests.is_empty() {
    return Err(anyhow!("no tests match {:?} in {}", filters, dir.display()));
  }
  for file in &not_applicable {
    println!("not applicable: {} ({})", file.path, file.reason);
  }

  // Skipped by the expectations: not run, one failed subtest each.
  let mut results: Vec<FileResult> = Vec::new();
  let mut to_run: Vec<TestCase> = Vec::new();
  for test in tests.iter() {
    match expectations.get(&test.id) {
      Some(Expectation::Skip(reason)) => {
        println!("skip: {} ({reason})", test.id);
        results.push(FileResult::skipped(&test.id, &reason));
      }
      _ => to_run.push(test.clone()),
    }
  }

  let server = if args.no_server {
    None
  } else {
    match WptServer::start(&args.python, &dir) {
      Ok(server) => Some(server),
      Err(error) => {
        println!("wpt: warning: no wptserve ({error:#}): tests that fetch from it will fail");
        None
      }
    }
  };
  let origins = match &server {
    Some(server) => Origins {
      http: server.http_origin(),
      https: server.https_origin(),
      ports: server.port_names(),
      ca_file: server.tls.as_ref().map(|tls| tls.ca()),
    },
    None => Origins {
      http: "http://localhost:8000".to_string(),
      https: "https://localhost:8443".to_string(),
      ports: vec![(8000, "{{ports[http][0]}}"), (8443, "{{ports[https][0]}}")],
      ca_file: None,
    },
  };
  let jobs = args
    .jobs
    .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
    .unwrap_or(1)
    .max(1);
  println!(
    "wpt: {} tests from {} ({} jobs{})",
    to_run.len(),
    dir.display(),
    jobs,
    match &server {
      Some(_) => format!(", wptserve at {}", origins.http),
      None => String::new(),
    }
  );

  let runtime = tokio::runtime::Builder::new_current_thread()
    .enable_all()
    .build()?;
  let ran = runtime.block_on(run_children(
    &dir,
    to_run,
    &origins,
    jobs,
    args.timeout_multiplier,
    &expectations,
    args.verbose,
  ))?;
  drop(server);
  results.extend(ran);
  results.sort_by(|a, b| a.id.cmp(&b.id));

  // Unexpected results, listed once more at the end.
  let mut unexpected = 0;
  let mut report = String::new();
  for result in &results {
    if matches!(result.harness, results::Harness::Skip(_)) {
      continue;
    }
    let failing = result.failing();
    let verdict = expectations.check(&result.id, &failing);
    if verdict.is_ok() {
      continue;
    }
    unexpected += verdict.unexpected_failures.len() + verdict.unexpected_passes.len();
    report.push_str(&format!(
      "  {}{}\n",
      result.id,
      if verdict.missing {
        " (no expectation)"
      } else {
        ""
      }
    ));
    for name in &verdict.unexpected_failures {
      report.push_str(&format!(
        "    unexpected failure: {}: {}\n",
        printable(name),
        result.failure_message(name)
      ));
    }
    for name in &verdict.unexpected_passes {
      let how = if result.subtests.iter().any(|s| &s.name == name) {
        "passed"
      } else {
        "did not run"
      };
      report.push_str(&format!(
        "    unexpected pass: {} ({how})\n",
        printable(name)
      ));
    }
  }

  // The table.
  println!();
  println!("| directory | subtests passed | rate | files fully passing |");
  println!("| --- | ---: | ---: | ---: |");
  let mut total = Counts::default();
  for (dir_name, (counts, files, files_passing)) in by_dir(&results) {
    println!(
      "| {dir_name} | {} / {} | {:.1}% | {files_passing} / {files} |",
      counts.passed,
      counts.total(),
      counts.percent()
    );
  }
  for result in &results {
    total.add(result);
  }
  let files_passing = results.iter().filter(|r| r.failed() == 0).count();
  println!(
    "| **total** | {} / {} | {:.1}% | {files_passing} / {} |",
    total.passed,
    total.total(),
    total.percent(),
    results.len()
  );
  println!();

  if let Some(path) = &args.json {
    let text = serde_json::to_string_pretty(&summary_json(&results))?;
    std::fs::write(path, text + "\n")
      .with_context(|| format!("cannot write {}", path.display()))?;
    println!("wpt: summary written to {}", path.display());
  }

  if args.update {
    for result in &results {
      if !matches!(result.harness, results::Harness::Skip(_)) {
        expectations.record(&result.id, &result.failing());
      }
    }
    if args.filters.is_empty() {
      let known: BTreeSet<&str> = tests.iter().map(|t| t.id.as_str()).collect();
      expectations.retain(|id| known.contains(id));
    }
    expectations.save(&expectations_file)?;
    println!(
      "wpt: expectations written to {}",
      expectations_file.display()
    );
  }

  if unexpected > 0 && !args.update {
    println!(
      "wpt: unexpected results ({unexpected}), against {}:",
      expectations_file.display()
    );
    print!("{report}");
    println!("wpt: to accept them: runtime wpt --update [FILTER...]");
  } else if unexpected == 0 {
    println!("wpt: all results as expected");
  }
  println!(
    "wpt: {} files in {:.0}s; subtests below (a skipped, timed-out or crashed file counts as one failed subtest)",
    results.len(),
    started.elapsed().as_secs_f64()
  );
  println!("{} passed, {} failed", total.passed, total.failed);
  Ok(if unexpected > 0 && !args.update {
    ExitCode::FAILURE
  } else {
    ExitCode::SUCCESS
  })
}

/// Runs the tests as child processes, `jobs` at a time, printing a line
/// for each as it ends.
async fn run_children(
  dir: &Path,
  mut tests: Vec<TestCase>,
  origins: &Origins,
  jobs: usize,
  multiplier: f64,
  expectations: &Expectations,
  verbose: bool,
) -> anyhow::Result<Vec<FileResult>> {
  let exe = std::env::current_exe().context("cannot find the runner binary")?;
  // The long ones first, so they do not end up alone at the end.
  tests.sort_by_key(|t| !t.meta.long_timeout);
  let total = tests.len();
  let queue = Arc::new(Mutex::new(VecDeque::from(tests)));
  let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
  for _ in 0..jobs.min(total) {
    let queue = queue.clone();
    let tx = tx.clone();
    let exe = exe.clone();
    let dir = dir.to_path_buf();
    let origins = origins.clone();
    tokio::spawn(async move {
      loop {
        let Some(test) = queue.lock().unwrap().pop_front() else {
          break;
        };
        let result = run_child(&exe, &dir, &test, &origins, multiplier).await;
        if tx.send(result).is_err() {
          break;
        }
      }
    });
  }
  drop(tx);
  let mut results = Vec::with_capacity(total);
  while let Some(result) = rx.recv().await {
    results.push(result);
    let result = results.last().unwrap();
    let verdict = expectations.check(&result.id, &result.failing());
    let mark = if verdict.is_ok() { "ok" } else { "UNEXPECTED" };
    let mut line = format!(
      "[{:>3}/{total}] {mark:<10} {} {}/{} passed{} ({:.1}s)",
      results.len(),
      result.id,
      result.passed(),
      result.subtests.len(),
      match &result.harness {
        results::Harness::Ok => String::new(),
        other => format!(", harness {}", other.label()),
      },
      result.seconds
    );
    if verbose || !verdict.is_ok() {
      for name in result.failing() {
        line.push_str(&format!(
          "\n      {}: {}",
          printable(&name),
          result.failure_message(&name)
        ));
      }
    }
    println!("{line}");
  }
  Ok(results)
}

/// Runs one test in a child process and reads its results.
async fn run_child(
  exe: &Path,
  dir: &Path,
  test: &TestCase,
  origins: &Origins,
  multiplier: f64,
) -> FileResult {
  let started = Instant::now();
  let timeout = base_timeout(test, multiplier);
  let origin = if test.is_https() {
    &origins.https
  } else {
    &origins.http
  };
  let mut command = tokio::process::Command::new(exe);
  if let Some(ca) = &origins.ca_file {
    command.env("RUNTIME_CA_CERTS", ca);
  }
  command
    .arg("wpt")
    .arg("--single")
    .arg(&test.id)
    .arg("--wpt-dir")
    .arg(dir)
    .arg("--origin")
    .arg(origin)
    .arg("--server-origin")
    .arg(&origins.http)
    .arg("--timeout-ms")
    .arg(timeout.as_millis().to_string())
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
  let mut child = match command.spawn() {
    Ok(child) => child,
    Err(e) => {
      return FileResult {
        id: test.id.clone(),
        subtests: Vec::new(),
        harness: results::Harness::Crash(format!("cannot start: {e}")),
        seconds: 0.0,
      }
    }
  };
  let stdout = child.stdout.take().expect("piped");
  let stderr = child.stderr.take().expect("piped");
  let out_task = tokio::spawn(async move {
    let mut lines = BufReader::new(stdout).lines();
    let mut out = String::new();
    while let Ok(Some(line)) = lines.next_line().await {
      out.push_str(&line);
      out.push('\n');
    }
    out
  });
  let err_task = tokio::spawn(async move {
    let mut buf = Vec::new();
    let _ = BufReader::new(stderr).read_to_end(&mut buf).await;
    let start = buf.len().saturating_sub(4096);
    String::from_utf8_lossy(&buf[start..]).into_owned()
  });
  // The child ends the harness itself at `timeout`; this is for a script
  // that never yields to its event loop.
  let hard_limit = timeout + Duration::from_secs(10);
  let exit = match tokio::time::timeout(hard_limit, child.wait()).await {
    Ok(Ok(status)) => Exit::Exited(status.success(), describe_exit(status)),
    Ok(Err(e)) => Exit::Exited(false, format!("wait failed: {e}")),
    Err(_) => {
      let _ = child.kill().await;
      Exit::Killed(hard_limit.as_secs())
    }
  };
  let stdout = out_task.await.unwrap_or_default();
  let stderr = err_task.await.unwrap_or_default();
  let mut result = parse_child(
    &test.id,
    &stdout,
    exit,
    &stderr,
    started.elapsed().as_secs_f64(),
  );
  for subtest in &mut result.subtests {
    subtest.name = name_ports(&subtest.name, &origins.ports);
    if let Some(message) = &subtest.message {
      subtest.message = Some(name_ports(message, &origins.ports));
    }
  }
  result
}

/// Spells the server's ports in `text` as WPT's templates do
/// (`localhost:{{ports[http][0]}}`): they change from run to run.
fn name_ports(text: &str, ports: &[(u16, &str)]) -> String {
  let mut out = String::with_capacity(text.len());
  let mut rest = text;
  while let Some(i) = rest.find(':') {
    out.push_str(&rest[..=i]);
    rest = &rest[i + 1..];
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let named = rest[..digits]
      .parse::<u16>()
      .ok()
      .and_then(|port| ports.iter().find(|(p, _)| *p == port));
    if let Some((_, name)) = named {
      out.push_str(name);
      rest = &rest[digits..];
    }
  }
  out.push_str(rest);
  out
}

/// A subtest name on one line: control characters escaped.
fn printable(name: &str) -> String {
  name
    .chars()
    .flat_map(|c| {
      let escaped: Vec<char> = if c.is_control() {
        c.escape_default().collect()
      } else {
        vec![c]
      };
      escaped
    })
    .collect()
}

fn describe_exit(status: std::process::ExitStatus) -> String {
  #[cfg(unix)]
  {
    use std::os::unix::process::ExitStatusExt as _;
    if let Some(signal) = status.signal() {
      return format!("killed by signal {signal}");
    }
  }
  match status.code() {
    Some(code) => format!("exit code {code}"),
    None => "exited".to_string(),
  }
}

#[cfg(test)]
mod unit {
  #[test]
  fn ports_in_names() {
    let ports = [(34859, "{{ports[http][0]}}"), (8443, "{{ports[https][0]}}")];
    assert_eq!(
      super::name_ports(
        "Fetch http://localhost:34859/x and https://a:8443 :348590 :3485",
        &ports
      ),
      "Fetch http://localhost:{{ports[http][0]}}/x and https://a:{{ports[https][0]}} :348590 :3485"
    );
    assert_eq!(
      super::name_ports("no port: here:", &ports),
      "no port: here:"
    );
  }
}
