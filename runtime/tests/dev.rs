//! `runtime dev` against the real binary: a change to a module the worker imports is served on the
//! next request without a restart (same port, a request in flight finishes on the old version);
//! a change that fails to load prints its error with file, line and column and the previous
//! version keeps serving, also from new isolates; fixing it serves the fix. Fixture:
//! tests/fixtures/dev/, copied to a scratch folder that the test edits.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

fn dev_cmd(script: &Path, threads: &str) -> std::process::Command {
  let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_runtime"));
  cmd
    .args([
      "dev",
      "--port",
      "0",
      "--host",
      "127.0.0.1",
      "--threads",
      threads,
    ])
    .arg(script)
    .env_remove("RUST_LOG");
  cmd
}

/// Polls until the worker answers `want` (each edit is seen within a bounded wait).
async fn until_served(c: &reqwest::Client, url: &str, want: &str) {
  for _ in 0..100 {
    if get_text(c, url).await == (200, want.to_string()) {
      return;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
  }
  panic!("{url} never answered {want:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edit_is_served_without_a_restart_and_a_broken_one_keeps_the_last_good_version() {
  within(90, async {
    let dir = scratch_dir("dev");
    for file in ["main.js", "message.js"] {
      std::fs::copy(fixture(&format!("dev/{file}")), dir.join(file)).unwrap();
    }
    let message = dir.join("message.js");
    let mut srv = serve(dev_cmd(&dir.join("main.js"), "1"));
    srv.wait_for_stderr("dev: watching", 10).await;
    let c = client();
    let url = srv.url("/");
    assert_eq!(get_text(&c, &url).await, (200, "v1".into()));

    // A request in flight when the change lands finishes on its version.
    let slow = tokio::spawn({
      let c = c.clone();
      let url = srv.url("/slow");
      async move { get_text(&c, &url).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::write(&message, "export const message = \"v2\";\n").unwrap();
    until_served(&c, &url, "v2").await;
    assert_eq!(slow.await.unwrap(), (200, "v1".into()));
    srv.wait_for_stderr("dev: reloaded (2 modules)", 10).await;

    // A syntax error: reported with its place, and v2 keeps serving.
    std::fs::write(&message, "export const message = \"v3\";\nlet = ;\n").unwrap();
    srv
      .wait_for_stderr("dev: reload failed, the previous version keeps serving", 10)
      .await;
    let failed = srv.log_lines_with(&["reload failed"]).join("\n");
    let stderr = srv.stderr();
    let report = &stderr[stderr.find("reload failed").unwrap()..];
    assert!(
      report.contains("message.js:2:"),
      "no file:line:column in {failed}\n{report}"
    );
    for _ in 0..10 {
      assert_eq!(get_text(&c, &url).await, (200, "v2".into()));
    }
    // A new isolate, started after a limit stopped the old one, loads v2 too: the version's
    // files were kept (the disk's are broken).
    assert_eq!(get_text(&c, &srv.url("/spin")).await.0, 503);
    assert_eq!(get_text(&c, &url).await, (200, "v2".into()));
    assert!(
      srv.stderr().matches("failed to start").count() == 0,
      "{}",
      srv.stderr()
    );

    std::fs::write(&message, "export const message = \"v4\";\n").unwrap();
    until_served(&c, &url, "v4").await;
    // The listening socket never changed.
    assert!(srv.stderr().matches("Listening on").count() <= 1);
    srv.stop_cleanly().await;
  })
  .await;
}
