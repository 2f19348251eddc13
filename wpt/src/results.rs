//! A test's results, read from its child's output, and the summary over a
//! run.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{json, Value};

use crate::isolate::line;

/// The name standing for the harness status among the subtests: a file
/// whose harness did not end OK (an error, a timeout, a crash), or that was
/// skipped, counts it as one failed subtest.
pub const HARNESS: &str = "(harness)";

/// The directories the summary reports, each over all files beneath it.
pub const DIRS: &[&str] = &[
  "url",
  "urlpattern",
  "encoding",
  "streams",
  "fetch/api",
  "fetch/data-urls",
  "FileAPI",
  "WebCryptoAPI",
  "dom/abort",
  "dom/events",
  "console",
  "hr-time",
  "html/webappapis/atob",
  "html/webappapis/timers",
  "html/webappapis/structured-clone",
  "html/webappapis/microtask-queuing",
  "xhr/formdata",
  "compression",
  "webidl",
];

#[derive(Debug, Clone)]
pub struct Subtest {
  pub name: String,
  /// testharness.js: 0 PASS, 1 FAIL, 2 TIMEOUT, 3 NOTRUN, 4 PRECONDITION_FAILED.
  pub status: i32,
  pub message: Option<String>,
}

impl Subtest {
  pub fn passed(&self) -> bool {
    self.status == 0
  }

  pub fn status_name(&self) -> &'static str {
    match self.status {
      0 => "PASS",
      1 => "FAIL",
      2 => "TIMEOUT",
      3 => "NOTRUN",
      4 => "PRECONDITION_FAILED",
      _ => "UNKNOWN",
    }
  }
}

/// How the file as a whole ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Harness {
  Ok,
  /// testharness.js reported ERROR or PRECONDITION_FAILED, or the runner
  /// could not finish the file.
  Error(String),
  Timeout(String),
  Crash(String),
  Skip(String),
}

impl Harness {
  pub fn label(&self) -> &'static str {
    match self {
      Harness::Ok => "OK",
      Harness::Error(_) => "ERROR",
      Harness::Timeout(_) => "TIMEOUT",
      Harness::Crash(_) => "CRASH",
      Harness::Skip(_) => "SKIP",
    }
  }

  pub fn message(&self) -> &str {
    match self {
      Harness::Ok => "",
      Harness::Error(m) | Harness::Timeout(m) | Harness::Crash(m) | Harness::Skip(m) => m,
    }
  }
}

#[derive(Debug, Clone)]
pub struct FileResult {
  pub id: String,
  pub subtests: Vec<Subtest>,
  pub harness: Harness,
  pub seconds: f64,
}

impl FileResult {
  pub fn skipped(id: &str, reason: &str) -> FileResult {
    FileResult {
      id: id.to_string(),
      subtests: Vec::new(),
      harness: Harness::Skip(reason.to_string()),
      seconds: 0.0,
    }
  }

  pub fn passed(&self) -> usize {
    self.subtests.iter().filter(|s| s.passed()).count()
  }

  /// Failed subtests, plus one for a harness that did not end OK.
  pub fn failed(&self) -> usize {
    self.subtests.iter().filter(|s| !s.passed()).count() + usize::from(self.harness != Harness::Ok)
  }

  /// The names of everything that failed, `(harness)` included.
  pub fn failing(&self) -> BTreeSet<String> {
    let mut failing: BTreeSet<String> = self
      .subtests
      .iter()
      .filter(|s| !s.passed())
      .map(|s| s.name.clone())
      .collect();
    if self.harness != Harness::Ok {
      failing.insert(HARNESS.to_string());
    }
    failing
  }

  /// Why `name` failed, for reports.
  pub fn failure_message(&self, name: &str) -> String {
    if name == HARNESS {
      let message = self.harness.message();
      return format!("{} {}", self.harness.label(), first_line(message));
    }
    match self.subtests.iter().find(|s| s.name == name) {
      Some(s) => format!(
        "{} {}",
        s.status_name(),
        first_line(s.message.as_deref().unwrap_or(""))
      ),
      None => "not run".to_string(),
    }
  }
}

fn first_line(text: &str) -> String {
  let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
  if line.chars().count() > 300 {
    let cut: String = line.chars().take(300).collect();
    format!("{cut}…")
  } else {
    line.to_string()
  }
}

/// How the child process ended.
pub enum Exit {
  /// Exited by itself: success, and a description when it did not succeed.
  Exited(bool, String),
  /// Killed by the runner after `seconds`.
  Killed(u64),
}

/// Reads a child's output lines into the file's result.
pub fn parse_child(
  id: &str,
  stdout: &str,
  exit: Exit,
  stderr_tail: &str,
  seconds: f64,
) -> FileResult {
  let mut subtests: Vec<Subtest> = Vec::new();
  let mut index: HashMap<String, usize> = HashMap::new();
  let mut complete: Option<(i64, Option<String>)> = None;
  let mut errors: Vec<String> = Vec::new();
  for text in stdout.lines() {
    let Ok(value) = serde_json::from_str::<Value>(text) else {
      continue;
    };
    let message = value["message"].as_str().map(str::to_string);
    match value["kind"].as_str() {
      Some(line::RESULT) => {
        let subtest = Subtest {
          name: value["name"].as_str().unwrap_or("").to_string(),
          status: value["status"].as_i64().unwrap_or(1) as i32,
          message,
        };
        match index.get(&subtest.name) {
          Some(&i) => subtests[i] = subtest,
          None => {
            index.insert(subtest.name.clone(), subtests.len());
            subtests.push(subtest);
          }
        }
      }
      Some(line::COMPLETE) => complete = Some((value["status"].as_i64().unwrap_or(1), message)),
      Some(line::ERROR) => errors.push(message.unwrap_or_default()),
      _ => {}
    }
  }
  let harness = match (exit, complete) {
    (Exit::Killed(after), _) => Harness::Timeout(format!(
      "killed after {after}s: the script did not yield (a synchronous loop?)"
    )),
    (_, Some((status, message))) => {
      let message = message.unwrap_or_default();
      match status {
        0 if errors.is_empty() => Harness::Ok,
        0 => Harness::Error(errors.join("; ")),
        2 => Harness::Timeout(if errors.is_empty() {
          "a subtest did not finish in time".to_string()
        } else {
          errors.join("; ")
        }),
        3 => Harness::Error(format!("PRECONDITION_FAILED: {message}")),
        _ => Harness::Error(message),
      }
    }
    (Exit::Exited(true, _), None) => Harness::Error(if errors.is_empty() {
      "the harness never completed".to_string()
    } else {
      errors.join("; ")
    }),
    (Exit::Exited(false, how), None) => {
      let mut message = how;
      if !errors.is_empty() {
        message = format!("{message}: {}", errors.join("; "));
      }
      let tail = stderr_tail.trim();
      if !tail.is_empty() {
        message = format!("{message}: {}", tail.lines().last().unwrap_or(""));
      }
      Harness::Crash(message)
    }
  };
  FileResult {
    id: id.to_string(),
    subtests,
    harness,
    seconds,
  }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
  pub passed: usize,
  pub failed: usize,
}

impl Counts {
  pub fn total(&self) -> usize {
    self.passed + self.failed
  }

  pub fn add(&mut self, result: &FileResult) {
    self.passed += result.passed();
    self.failed += result.failed();
  }

  pub fn json(&self) -> Value {
    json!({"passed": self.passed, "failed": self.failed, "total": self.total()})
  }

  pub fn percent(&self) -> f64 {
    if self.total() == 0 {
      0.0
    } else {
      100.0 * self.passed as f64 / self.total() as f64
    }
  }
}

/// Whether the test `id` is under `dir`.
pub fn in_dir(id: &str, dir: &str) -> bool {
  id.strip_prefix(dir)
    .is_some_and(|rest| rest.starts_with('/'))
}

/// Per-directory counts, over the directories of [`DIRS`] that have tests.
pub fn by_dir(results: &[FileResult]) -> BTreeMap<&'static str, (Counts, usize, usize)> {
  let mut dirs = BTreeMap::new();
  for dir in DIRS {
    let mut counts = Counts::default();
    let (mut files, mut files_passing) = (0, 0);
    for result in results.iter().filter(|r| in_dir(&r.id, dir)) {
      counts.add(result);
      files += 1;
      if result.failed() == 0 {
        files_passing += 1;
      }
    }
    if files > 0 {
      dirs.insert(*dir, (counts, files, files_passing));
    }
  }
  dirs
}

/// The `--json` summary.
pub fn summary_json(results: &[FileResult]) -> Value {
  let mut dirs = serde_json::Map::new();
  for (dir, (counts, files, files_passing)) in by_dir(results) {
    let mut entry = counts.json();
    entry["files"] = json!(files);
    entry["files_passing"] = json!(files_passing);
    dirs.insert(dir.to_string(), entry);
  }
  let mut files = serde_json::Map::new();
  let mut total = Counts::default();
  for result in results {
    total.add(result);
    let mut counts = Counts::default();
    counts.add(result);
    let mut entry = counts.json();
    entry["status"] = json!(result.harness.label());
    if result.harness != Harness::Ok {
      entry["message"] = json!(result.harness.message());
    }
    let failures: Vec<Value> = result
      .subtests
      .iter()
      .filter(|s| !s.passed())
      .map(|s| json!({"name": s.name, "status": s.status_name(), "message": s.message}))
      .collect();
    if !failures.is_empty() {
      entry["failures"] = Value::Array(failures);
    }
    files.insert(result.id.clone(), entry);
  }
  json!({"dirs": dirs, "files": files, "total": total.json()})
}

#[cfg(test)]
mod unit {
  use super::*;

  #[test]
  fn parse() {
    let out = r#"{"kind":"result","name":"a","status":0,"message":null}
{"kind":"result","name":"b","status":1,"message":"boom"}
{"kind":"result","name":"a","status":0,"message":null}
{"kind":"complete","status":0,"message":null}
"#;
    let r = parse_child("x.any.js", out, Exit::Exited(true, String::new()), "", 0.1);
    assert_eq!(r.harness, Harness::Ok);
    assert_eq!((r.passed(), r.failed()), (1, 1));
    assert_eq!(r.failing().into_iter().collect::<Vec<_>>(), ["b"]);

    let partial = "{\"kind\":\"result\",\"name\":\"a\",\"status\":0,\"message\":null}\n";
    let r = parse_child("x.any.js", partial, Exit::Killed(15), "", 15.0);
    assert!(matches!(r.harness, Harness::Timeout(_)));
    assert_eq!((r.passed(), r.failed()), (1, 1));

    let r = parse_child(
      "x.any.js",
      "",
      Exit::Exited(false, "signal 6".into()),
      "oom\n",
      1.0,
    );
    assert!(matches!(r.harness, Harness::Crash(ref m) if m.contains("oom")));
    assert_eq!(r.failing().into_iter().collect::<Vec<_>>(), [HARNESS]);
  }

  #[test]
  fn dirs() {
    assert!(in_dir("url/a.any.js", "url"));
    assert!(!in_dir("urlpattern/a.any.js", "url"));
    assert!(in_dir(
      "html/webappapis/timers/a.any.js",
      "html/webappapis/timers"
    ));
  }
}
