//! `runtime dev` against the real binary: a change to a module the worker imports is served on the
//! next request without a restart (same port, a request in flight finishes on the old version);
//! a change that fails to load prints its error with file, line and column and the previous
//! version keeps serving, also from new isolates; fixing it serves the fix. Fixture:
//! tests/fixtures/dev/, copied to a scratch folder that the test edits.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

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
    let mut cmd = dev_cmd(["--threads", "1"]);
    cmd.arg(dir.join("main.js"));
    let mut srv = serve(cmd);
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

fn write_config(dir: &Path, name: &str, vars: &str, extra: &str) {
  std::fs::write(
    dir.join("runtime.toml"),
    format!("[[workers]]\nname = \"{name}\"\nmain = \"config.js\"\nvars = {{ {vars} }}\n{extra}"),
  )
  .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_edit_reloads_the_workers_and_a_broken_one_keeps_the_last_good_config() {
  within(90, async {
    let dir = scratch_dir("dev-config");
    std::fs::copy(fixture("dev/config.js"), dir.join("config.js")).unwrap();
    write_config(&dir, "site", "GREETING = \"hi\"", "");
    let mut cmd = dev_cmd(["--threads", "2", "--config"]);
    cmd.arg(dir.join("runtime.toml"));
    let mut srv = serve(cmd);
    srv.wait_for_stderr("dev: watching", 10).await;
    let c = client();
    let url = srv.url("/");
    assert_eq!(get_text(&c, &url).await, (200, "hi (undefined)".into()));

    // New vars and a new KV binding: served on every thread, on the same socket.
    write_config(
      &dir,
      "site",
      "GREETING = \"hello\"",
      "kv = { KV = \"notes\" }\n[kv.notes]\nstore = \"sqlite:notes.sqlite\"\n",
    );
    until_served(&c, &url, "hello (object)").await;
    for _ in 0..10 {
      assert_eq!(get_text(&c, &url).await, (200, "hello (object)".into()));
    }
    srv
      .wait_for_stderr("runtime.toml reloaded (1 workers)", 10)
      .await;

    // A config that does not parse: reported, and the last good one keeps serving.
    std::fs::write(dir.join("runtime.toml"), "[[workers]\nname = ").unwrap();
    srv
      .wait_for_stderr("the previous configuration keeps serving", 10)
      .await;
    assert_eq!(get_text(&c, &url).await, (200, "hello (object)".into()));

    // A worker that no longer loads (its main is missing): the same.
    let len = srv.stderr_len();
    std::fs::write(
      dir.join("runtime.toml"),
      "[[workers]]\nname = \"site\"\nmain = \"missing.js\"\n",
    )
    .unwrap();
    let report = srv
      .wait_for_stderr_growth(len, 10, "the missing main reported")
      .await;
    srv
      .wait_for_stderr("the previous configuration keeps serving", 10)
      .await;
    assert!(
      srv.stderr()[len..].contains("missing.js"),
      "the report names the file: {report}"
    );
    assert_eq!(get_text(&c, &url).await, (200, "hello (object)".into()));

    // Renaming the worker needs a restart: said so, and nothing changes.
    let len = srv.stderr_len();
    write_config(&dir, "renamed", "GREETING = \"renamed\"", "");
    srv
      .wait_for_stderr_growth(len, 10, "the rename reported")
      .await;
    srv
      .wait_for_stderr("restart `runtime dev` to add, remove or rename workers", 10)
      .await;
    assert_eq!(get_text(&c, &url).await, (200, "hello (object)".into()));

    // Fixed, saved as some editors save (a new file renamed over the old one): served.
    write_config(&dir, "site", "GREETING = \"fixed\"", "");
    std::fs::rename(dir.join("runtime.toml"), dir.join("saved.tmp")).unwrap();
    std::fs::rename(dir.join("saved.tmp"), dir.join("runtime.toml")).unwrap();
    until_served(&c, &url, "fixed (undefined)").await;
    // ... and so are edits after that.
    write_config(&dir, "site", "GREETING = \"again\"", "");
    until_served(&c, &url, "again (undefined)").await;
    srv.stop_cleanly().await;
  })
  .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrangler_project_reloads_on_an_edit_of_its_vars_or_dev_vars() {
  within(60, async {
    let dir = scratch_dir("dev-wrangler");
    std::fs::copy(fixture("dev/config.js"), dir.join("config.js")).unwrap();
    let project = |greeting: &str| {
      std::fs::write(
        dir.join("wrangler.toml"),
        format!("name = \"site\"\nmain = \"config.js\"\n[vars]\nGREETING = \"{greeting}\"\n"),
      )
      .unwrap()
    };
    project("from vars");
    let mut cmd = dev_cmd(["--threads", "1", "--state-dir"]);
    cmd.arg(dir.join("state")).current_dir(&dir);
    let mut srv = serve(cmd);
    srv.wait_for_stderr("dev: watching", 10).await;
    let c = client();
    let url = srv.url("/");
    assert_eq!(
      get_text(&c, &url).await,
      (200, "from vars (undefined)".into())
    );
    project("edited");
    until_served(&c, &url, "edited (undefined)").await;
    // A local secret of the same name overrides the var, as in `wrangler dev`.
    std::fs::write(dir.join(".dev.vars"), "GREETING=\"from dev vars\"\n").unwrap();
    until_served(&c, &url, "from dev vars (undefined)").await;
    srv.stop_cleanly().await;
  })
  .await;
}
