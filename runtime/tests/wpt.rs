//! Tests of `runtime wpt`, the web-platform-tests runner, through the real binary: on a few files
//! of the shared WPT checkout (`../shared/wpt`, or `$WPT_DIR`), and on small test files written
//! here into a temporary WPT directory (with a copy of its `testharness.js`) to show that a
//! hanging or throwing test file ends as it should without stopping the run.
//!
//! Run with `cargo test -p runtime --test wpt`. None of these needs wptserve (`--no-server`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use serde_json::Value;

fn wpt_dir() -> PathBuf {
  match std::env::var_os("WPT_DIR") {
    Some(dir) if !dir.is_empty() => PathBuf::from(dir),
    _ => repo_root().join("../shared/wpt"),
  }
}

fn wpt(args: &[&str]) -> Output {
  run_wpt(&[&["--no-server"], args].concat())
}

/// `run` (`wpt` or `run_wpt`) over the fake tree `dir` with no expectations (every failure is
/// unexpected), writing its JSON summary to `summary`, then `extra`.
fn run_fake_tree(run: fn(&[&str]) -> Output, dir: &Path, summary: &Path, extra: &[&str]) -> Output {
  let none = dir.join("none.json");
  let args = [
    "--wpt-dir",
    dir.to_str().unwrap(),
    "--expectations",
    none.to_str().unwrap(),
    "--json",
    summary.to_str().unwrap(),
  ];
  run(&[&args, extra].concat())
}

/// `runtime wpt ARGS`, with the runner's wptserve unless ARGS say otherwise.
fn run_wpt(args: &[&str]) -> Output {
  let output = Command::new(BIN)
    .arg("wpt")
    .args(args)
    .output()
    .expect("runs the binary");
  eprintln!(
    "--- stdout\n{}\n--- stderr\n{}",
    String::from_utf8_lossy(&output.stdout),
    String::from_utf8_lossy(&output.stderr)
  );
  output
}

fn stdout(output: &Output) -> String {
  String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The closing `N passed, N failed` line.
fn closing_counts(output: &Output) -> (u64, u64) {
  let text = stdout(output);
  let last = text.lines().last().expect("some output");
  let (passed, failed) = last
    .split_once(" passed, ")
    .unwrap_or_else(|| panic!("closing line {last:?}"));
  let failed = failed.strip_suffix(" failed").expect("N failed");
  (passed.parse().unwrap(), failed.parse().unwrap())
}

fn read_json(path: &Path) -> Value {
  serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn urlsearchparams_files_report_results_and_a_json_summary() {
  let dir = scratch_dir("summary");
  let summary = dir.join("summary.json");
  let wpt_dir = wpt_dir();
  let output = wpt(&[
    "--wpt-dir",
    wpt_dir.to_str().unwrap(),
    "--json",
    summary.to_str().unwrap(),
    "url/urlsearchparams-*",
  ]);
  // The project's expectations hold for these files.
  assert!(output.status.success(), "{}", stdout(&output));
  let (passed, failed) = closing_counts(&output);
  assert!(passed >= 80, "passed {passed}");

  let summary = read_json(&summary);
  let url = &summary["dirs"]["url"];
  assert_eq!(url["passed"].as_u64(), Some(passed));
  assert_eq!(url["failed"].as_u64(), Some(failed));
  assert_eq!(url["total"].as_u64(), Some(passed + failed));
  assert_eq!(summary["dirs"].as_object().unwrap().len(), 1, "{summary}");
  let files = summary["files"].as_object().unwrap();
  assert!(files.len() >= 10, "{files:?}");
  for (id, file) in files {
    assert!(id.starts_with("url/urlsearchparams-"), "{id}");
    let (p, f, t) = (
      file["passed"].as_u64().unwrap(),
      file["failed"].as_u64().unwrap(),
      file["total"].as_u64().unwrap(),
    );
    assert_eq!(p + f, t, "{id}");
    assert_eq!(file["status"], "OK", "{id}");
  }
  assert_eq!(
    files["url/urlsearchparams-sort.any.js"]["failed"].as_u64(),
    Some(0)
  );
  std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn expectations_fail_the_run_on_unexpected_passes_and_failures_and_update_rewrites_them() {
  let dir = scratch_dir("expectations");
  let expectations = dir.join("expectations.json");
  let wpt_dir = wpt_dir();
  let run = |filter: &str| {
    wpt(&[
      "--wpt-dir",
      wpt_dir.to_str().unwrap(),
      "--expectations",
      expectations.to_str().unwrap(),
      filter,
    ])
  };

  // A subtest that passes, listed as failing: an unexpected pass.
  std::fs::write(
    &expectations,
    r#"{"url/urlsearchparams-sort.any.js": {"fail": ["Sorting non-existent params removes ? from URL"]}}"#,
  )
  .unwrap();
  let output = run("url/urlsearchparams-sort");
  assert_eq!(output.status.code(), Some(1));
  assert!(
    stdout(&output).contains("unexpected pass: Sorting non-existent params removes ? from URL")
  );

  // Expected to pass, with a subtest that fails: an unexpected failure. The file's own
  // expectation says `pass`; a test written here fails one subtest.
  let tmp_wpt = fake_wpt("expect-fail");
  std::fs::write(
    tmp_wpt.join("x/one-fails.any.js"),
    "test(() => {}, 'fine');\ntest(() => { assert_equals(1, 2); }, 'broken');\n",
  )
  .unwrap();
  std::fs::write(&expectations, r#"{"x/one-fails.any.js": "pass"}"#).unwrap();
  let args = |extra: &[&str]| -> Output {
    let mut all = vec![
      "--wpt-dir",
      tmp_wpt.to_str().unwrap(),
      "--expectations",
      expectations.to_str().unwrap(),
    ];
    all.extend_from_slice(extra);
    all.push("x/one-fails");
    wpt(&all)
  };
  let output = args(&[]);
  assert_eq!(output.status.code(), Some(1));
  assert!(stdout(&output).contains("unexpected failure: broken: FAIL assert_equals"));
  assert_eq!(closing_counts(&output), (1, 1));

  // --update records what happened; the next run is as expected.
  let output = args(&["--update"]);
  assert!(output.status.success());
  let written = read_json(&expectations);
  assert_eq!(
    written["x/one-fails.any.js"],
    serde_json::json!({"fail": ["broken"]})
  );
  let output = args(&[]);
  assert!(output.status.success(), "{}", stdout(&output));

  // A skipped file is not run, and counts as one failed subtest.
  std::fs::write(
    &expectations,
    r#"{"x/one-fails.any.js": {"skip": "not today"}}"#,
  )
  .unwrap();
  let output = args(&[]);
  assert!(output.status.success());
  assert!(stdout(&output).contains("skip: x/one-fails.any.js (not today)"));
  assert_eq!(closing_counts(&output), (0, 1));

  std::fs::remove_dir_all(&dir).ok();
  std::fs::remove_dir_all(&tmp_wpt).ok();
}

/// A WPT directory with the real testharness.js and an empty `x/` for test files.
fn fake_wpt(name: &str) -> PathBuf {
  let dir = scratch_dir(name);
  std::fs::create_dir_all(dir.join("resources")).unwrap();
  std::fs::create_dir_all(dir.join("x/resources")).unwrap();
  std::fs::copy(
    wpt_dir().join("resources/testharness.js"),
    dir.join("resources/testharness.js"),
  )
  .unwrap();
  dir
}

#[test]
fn meta_scripts_variants_and_hanging_or_throwing_files() {
  let dir = fake_wpt("robust");
  let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
  // META scripts (relative and /-rooted) run in order before the test; each variant is a test
  // with its own location.search; the worker wrapper's globals are there.
  write("x/resources/helper.js", "var order = ['helper'];\n");
  write("common.js", "order.push('common');\n");
  write(
    "x/meta.any.js",
    "// META: title=Meta things\n// META: script=resources/helper.js\n// META: script=/common.js\n\
     // META: variant=?a\n// META: variant=?b\n\
     test(() => assert_array_equals(order, ['helper', 'common']), 'scripts in order');\n\
     test(() => assert_true(['?a', '?b'].includes(location.search)), 'variant ' + location.search);\n\
     test(() => {\n  assert_true(GLOBAL.isWorker());\n  assert_false(GLOBAL.isWindow());\n  \
     assert_equals(self, globalThis);\n  assert_true(location.href.endsWith('/x/meta.any.js' + location.search));\n\
     }, 'worker globals');\n",
  );
  // A promise nobody settles: the harness times the subtest out as soon as nothing is left to do.
  write(
    "x/never.any.js",
    "promise_test(() => new Promise(() => {}), 'never settles');\ntest(() => {}, 'fine');\n",
  );
  // A synchronous infinite loop: killed; the subtests reported before it count.
  write(
    "x/spin.any.js",
    "test(() => {}, 'before');\npromise_test(async () => { await null; for (;;) {} }, 'spins');\n",
  );
  // A throw at top level: the harness reports an error.
  write(
    "x/throws.any.js",
    "test(() => {}, 'defined first');\nthrow new Error('top-level boom');\n",
  );
  // A .worker.js test: importScripts and done() of its own.
  write(
    "x/plain.worker.js",
    "importScripts('/resources/testharness.js');\ntest(() => {}, 'in a worker');\ndone();\n",
  );
  // Not for a worker scope: listed, not run.
  write(
    "x/window-only.any.js",
    "// META: global=window\ntest(() => {}, 'w');\n",
  );

  let summary = dir.join("summary.json");
  let started = std::time::Instant::now();
  let output = run_fake_tree(
    wpt,
    &dir,
    &summary,
    // 10 s × 0.2: the harness gives up after 2 s; the runner kills a spinning file 10 s later.
    &["--timeout-multiplier", "0.2", "x/"],
  );
  assert!(
    started.elapsed().as_secs() < 40,
    "took {:?}",
    started.elapsed()
  );
  // No expectations file: every failure is unexpected.
  assert_eq!(output.status.code(), Some(1));
  let text = stdout(&output);
  assert!(
    text.contains("not applicable: x/window-only.any.js (global=window: no worker scope)"),
    "{text}"
  );

  let summary = read_json(&summary);
  let file = |id: &str| summary["files"][id].clone();
  for variant in ["x/meta.any.js?a", "x/meta.any.js?b"] {
    let meta = file(variant);
    assert_eq!(meta["status"], "OK", "{meta}");
    assert_eq!(meta["passed"], 3, "{meta}");
    assert_eq!(meta["failed"], 0, "{meta}");
  }

  let never = file("x/never.any.js");
  assert_eq!(never["status"], "TIMEOUT", "{never}");
  assert_eq!(never["passed"], 1, "{never}");
  assert_eq!(never["failures"][0]["name"], "never settles", "{never}");
  assert_eq!(never["failures"][0]["status"], "TIMEOUT", "{never}");

  let spin = file("x/spin.any.js");
  assert_eq!(spin["status"], "TIMEOUT", "{spin}");
  assert!(
    spin["message"].as_str().unwrap().contains("killed"),
    "{spin}"
  );
  assert_eq!(spin["passed"], 1, "{spin}");

  let throws = file("x/throws.any.js");
  assert_eq!(throws["status"], "ERROR", "{throws}");
  assert!(
    throws["message"]
      .as_str()
      .unwrap()
      .contains("top-level boom"),
    "{throws}"
  );

  let worker = file("x/plain.worker.js");
  assert_eq!(worker["status"], "OK", "{worker}");
  assert_eq!(worker["passed"], 1, "{worker}");

  assert!(summary["files"].get("x/window-only.any.js").is_none());
  std::fs::remove_dir_all(&dir).ok();
}

/// `.https.` tests are served over TLS by the runner's wptserve, with a certificate made for
/// the run that the test's isolate trusts; plain-http tests fetch over http as before.
#[test]
fn https_tests_fetch_from_wptserve_over_tls() {
  let dir = fake_wpt("tls");
  let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
  write("x/resources/data.txt", "served\n");
  let fetch_test = "promise_test(async () => {\n  \
     const response = await fetch('resources/data.txt');\n  \
     assert_equals(new URL(response.url).protocol, location.protocol);\n  \
     assert_equals(await response.text(), 'served\\n');\n\
     }, 'fetch ' + location.protocol);\n";
  write("x/secure.https.any.js", fetch_test);
  write("x/plain.any.js", fetch_test);

  let summary = dir.join("summary.json");
  let output = run_fake_tree(run_wpt, &dir, &summary, &["x/"]);
  let text = stdout(&output);
  assert!(output.status.success(), "{text}");
  let summary = read_json(&summary);
  for id in ["x/secure.https.any.js", "x/plain.any.js"] {
    let file = &summary["files"][id];
    assert_eq!(file["passed"], 1, "{id}: {file}");
    assert_eq!(file["failed"], 0, "{id}: {file}");
  }
  std::fs::remove_dir_all(&dir).ok();
}
