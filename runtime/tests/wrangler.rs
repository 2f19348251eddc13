//! Workers projects as they are: `runtime serve` on a wrangler.toml, wrangler.jsonc, an
//! `[env.NAME]` section and a project folder with no argument (tests/fixtures/wrangler/), against
//! the real binary over HTTP: vars (strings and JSON), `.dev.vars` secrets, KV namespaces kept in
//! the state folder across restarts, cron triggers, and what is logged for the keys this runtime
//! does not use. And a real npm app (the Hono KV bundle) from its wrangler.toml.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::json;

fn project() -> PathBuf {
  fixture("wrangler")
}

/// `runtime serve --config <file>` with its KV state in `state`, plus `extra` arguments.
fn project_cmd(config: &Path, state: &Path, extra: &[&str]) -> Command {
  let mut cmd = serve_config_cmd(config);
  cmd.arg("--state-dir").arg(state).args(extra);
  cmd
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrangler_toml_serves_its_vars_secrets_and_kv_and_logs_what_it_does_not_use() {
  within(60, async {
    let state = scratch_dir("wrangler-state");
    let config = project().join("wrangler.toml");
    let c = client();
    let mut srv = serve(project_cmd(&config, &state, &[]));
    let (status, env) = get_json(&c, &srv.url("/env")).await;
    assert_eq!(status, 200, "{env}");
    assert_eq!(
      env,
      json!({
        "greeting": "hello from wrangler.toml",
        "settings": { "retries": 3, "tags": ["a", "b"] },
        "token": "dev-token",
        "store": "function",
        "bucket": "undefined",
      })
    );
    let put = c
      .put(srv.url("/kv?key=colour"))
      .body("teal")
      .send()
      .await
      .unwrap();
    assert_eq!(put.status(), 200);
    assert_eq!(
      get_text(&c, &srv.url("/kv?key=colour")).await,
      (200, "teal".to_string())
    );
    // What the runtime does not use is named, never silent.
    let log = srv.stderr();
    for needle in [
      "compatibility_date 2024-09-23",
      "unknown key \"made_up_key\" ignored",
      "r2_buckets is not available in this runtime: env.BUCKET will be undefined",
      "account_id, workers_dev only configure Cloudflare's deploy",
      "worker=wrangler-fixture",
    ] {
      assert!(log.contains(needle), "log lacks {needle:?}:\n{log}");
    }
    srv.stop_cleanly().await;

    // The namespace lives in the state folder, named by its id, and survives a restart.
    assert!(state
      .join("kv/0f2ac74b498b48028cb68387c421e279.sqlite")
      .is_file());
    let mut srv = serve(project_cmd(&config, &state, &[]));
    assert_eq!(
      get_text(&c, &srv.url("/kv?key=colour")).await,
      (200, "teal".to_string())
    );
    srv.stop_cleanly().await;
  })
  .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_env_section_overrides_and_inherits_as_wrangler_does() {
  within(60, async {
    let state = scratch_dir("wrangler-env");
    let config = project().join("wrangler.toml");
    let c = client();
    let mut srv = serve(project_cmd(&config, &state, &["--env", "staging"]));
    let (status, env) = get_json(&c, &srv.url("/env")).await;
    assert_eq!(status, 200, "{env}");
    // vars and kv_namespaces are not inherited; main and the name are (as <name>-<env>).
    assert_eq!(env["greeting"], "hello from staging");
    assert_eq!(env["settings"], json!(null));
    assert_eq!(env["store"], "undefined");
    assert_eq!(env["token"], "dev-token");
    let log = srv.stderr();
    assert!(log.contains("worker=wrangler-fixture-staging"), "{log}");
    assert!(
      log.contains("kv_namespaces is set at the top level but not in [env.staging]"),
      "{log}"
    );
    srv.stop_cleanly().await;

    let stderr = serve_fails(project_cmd(&config, &state, &["--env", "production"]));
    assert!(
      stderr
        .contains("--env production: there is no [env.production] (environments defined: staging)"),
      "{stderr}"
    );
  })
  .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_without_arguments_finds_the_project_in_the_folder_and_runs_its_crons() {
  within(60, async {
    let state = scratch_dir("wrangler-folder");
    let mut cmd = serve_cmd(["--port", "0", "--host", "127.0.0.1", "--test-scheduled"]);
    cmd.arg("--state-dir").arg(&state).current_dir(project());
    let c = client();
    let mut srv = serve(cmd);
    let (status, body) = get_text(&c, &srv.url("/__scheduled?cron=0+3+*+*+*")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
      get_text(&c, &srv.url("/kv?key=last-cron")).await,
      (200, "0 3 * * *".to_string())
    );
    srv.stop_cleanly().await;

    // A folder with no project says what it looked for.
    let empty = scratch_dir("wrangler-empty");
    let mut cmd = serve_cmd(["--port", "0"]);
    cmd.current_dir(&empty);
    let stderr = serve_fails(cmd);
    assert!(
      stderr.contains("no wrangler.json, wrangler.jsonc, wrangler.toml or runtime.toml"),
      "{stderr}"
    );
  })
  .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrangler_jsonc_with_comments_and_trailing_commas() {
  within(60, async {
    let state = scratch_dir("wrangler-jsonc");
    let config = project().join("jsonc/wrangler.jsonc");
    let c = client();
    let mut srv = serve(project_cmd(&config, &state, &[]));
    let (status, env) = get_json(&c, &srv.url("/env")).await;
    assert_eq!(status, 200, "{env}");
    assert_eq!(env["greeting"], "hello from wrangler.jsonc");
    assert_eq!(env["settings"], json!({ "retries": 5 }));
    // .dev.vars is read beside the config file only.
    assert_eq!(env["token"], json!(null));
    assert_eq!(env["store"], "function");
    assert!(state.join("kv/jsonc-store.sqlite").is_file());
    // `$schema` is an editor's key, accepted quietly.
    assert!(!srv.stderr().contains("unknown key \"$schema\""));
    srv.stop_cleanly().await;
  })
  .await;
}

#[test]
fn project_errors_name_the_file_and_the_key() {
  let dir = scratch_dir("wrangler-errors");
  let cases: &[(&str, &str, &[&str])] = &[
    (
      "wrangler.toml",
      "name = \"x\"\n",
      &["wrangler.toml", "`main` is not set"],
    ),
    (
      "wrangler.toml",
      "main = \"missing.js\"\n",
      &["wrangler.toml: main", "missing.js"],
    ),
    (
      "wrangler.toml",
      "main = \"w.js\"\n[triggers]\ncrons = [\"every day\"]\n",
      &["triggers.crons", "every day"],
    ),
    (
      "wrangler.json",
      "{ \"main\": \"w.js\" \n",
      &["wrangler.json"],
    ),
    (
      "wrangler.toml",
      "main = \"w.js\"\n[[kv_namespaces]]\nid = \"x\"\n",
      &["kv_namespaces[0].binding must be a string"],
    ),
  ];
  std::fs::write(
    dir.join("w.js"),
    "export default { fetch() { return new Response('x') } };\n",
  )
  .unwrap();
  for (file, text, needles) in cases {
    let config = dir.join(file);
    std::fs::write(&config, text).unwrap();
    let stderr = serve_fails(project_cmd(&config, &dir.join("state"), &[]));
    for needle in *needles {
      assert!(
        stderr.contains(needle),
        "{file} {text:?}: {needle:?} not in\n{stderr}"
      );
    }
    std::fs::remove_file(&config).unwrap();
  }
  // --env belongs to wrangler projects.
  let toml = dir.join("runtime.toml");
  std::fs::write(&toml, "[[workers]]\nname = \"w\"\nmain = \"w.js\"\n").unwrap();
  let stderr = serve_fails(project_cmd(&toml, &dir.join("state"), &["--env", "x"]));
  assert!(
    stderr.contains("--env selects an [env.NAME] of a wrangler project"),
    "{stderr}"
  );
}

/// A real npm app: the Hono KV bundle, served from a wrangler.toml that binds its namespace.
#[tokio::test(flavor = "multi_thread")]
async fn the_hono_kv_app_runs_from_its_wrangler_toml() {
  within(60, async {
    let state = scratch_dir("wrangler-hono");
    let config = project().join("hono/wrangler.toml");
    let c = client();
    let mut srv = serve(project_cmd(&config, &state, &[]));
    for expected in 1..=3 {
      let (status, body) = get_json(&c, &srv.url("/count/ada")).await;
      assert_eq!(status, 200, "{body}");
      assert_eq!(body, json!({ "name": "ada", "count": expected }));
    }
    assert!(state.join("kv/hono-kv-namespace.sqlite").is_file());
    srv.stop_cleanly().await;
  })
  .await;
}
