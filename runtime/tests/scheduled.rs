//! Scheduled (cron) events: `export default { scheduled }` and `addEventListener("scheduled")`,
//! run by `--test-scheduled`'s `GET /__scheduled?cron=...` and by a `* * * * *` cron trigger of
//! a config file, against the real binary on 127.0.0.1.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

fn scheduled_fixture(name: &str) -> std::path::PathBuf {
  fixture("scheduled").join(name)
}

fn test_scheduled_cmd(script: &str) -> Command {
  let mut cmd = serve_script_cmd(&scheduled_fixture(script));
  cmd.args(["--threads", "1", "--test-scheduled"]);
  cmd
}

fn now_ms() -> f64 {
  std::time::SystemTime::now()
    .duration_since(std::time::UNIX_EPOCH)
    .unwrap()
    .as_millis() as f64
}

async fn runs(c: &reqwest::Client, srv: &Server) -> Vec<Value> {
  let (status, v) = get_json(c, &srv.url("/runs")).await;
  assert_eq!(status, 200, "{v}");
  v.as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_scheduled_runs_both_syntaxes_and_waits_for_wait_until() {
  within(60, async {
    let c = client();
    for (script, kind) in [
      ("module.js", "[object ScheduledController]"),
      ("sw.js", "[object ScheduledEvent]"),
    ] {
      let mut srv = serve(test_scheduled_cmd(script));
      let before = now_ms();
      let (status, body) = get_text(&c, &srv.url("/__scheduled?cron=*/5+*+*+*+*")).await;
      assert_eq!(
        (status, body.as_str()),
        (200, "Ran scheduled event"),
        "{script}"
      );
      let runs = runs(&c, &srv).await;
      assert_eq!(runs.len(), 1, "{script}: {runs:?}");
      let run = &runs[0];
      assert_eq!(run["cron"], "*/5 * * * *", "{script}");
      assert_eq!(
        run["waited"], true,
        "{script}: the run ends after its waitUntil work"
      );
      let kind_key = if script == "module.js" {
        "controller"
      } else {
        "event"
      };
      assert_eq!(run[kind_key], kind, "{script}");
      let time = run["scheduledTime"].as_f64().unwrap();
      assert!(
        time >= before - 1000.0 && time <= now_ms() + 1000.0,
        "{script}: {time}"
      );
      srv
        .wait_for_log_lines(&["scheduled run ok", "*/5 * * * *"], 1, 10)
        .await;
      srv.stop_cleanly().await;
    }
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_scheduled_run_is_a_500_with_its_stack_logged() {
  within(60, async {
    let c = client();
    let mut srv = serve(test_scheduled_cmd("module.js"));
    let (status, body) = get_text(&c, &srv.url("/__scheduled?cron=fail")).await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("cron handler failed on purpose"), "{body}");
    // The log line may reach the pipe after the response does.
    srv
      .wait_for_log_lines(
        &["scheduled run failed", "cron handler failed on purpose"],
        1,
        10,
      )
      .await;
    let lines = srv.log_lines_with(&["scheduled run failed", "cron handler failed on purpose"]);
    assert_eq!(lines.len(), 1, "{}", srv.stderr());
    assert!(
      srv
        .stderr()
        .contains(&file_url(&scheduled_fixture("module.js"))),
      "the stack names the script: {}",
      srv.stderr()
    );
    // The worker goes on serving.
    let (status, body) = get_text(&c, &srv.url("/__scheduled?cron=ok")).await;
    assert_eq!((status, body.as_str()), (200, "Ran scheduled event"));
    assert_eq!(runs(&c, &srv).await.len(), 1);
    srv.stop_cleanly().await;
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_test_scheduled_the_path_is_the_worker_s() {
  within(30, async {
    let c = client();
    let mut cmd = serve_script_cmd(&scheduled_fixture("module.js"));
    cmd.args(["--threads", "1"]);
    let mut srv = serve(cmd);
    // module.js answers every path with its runs: none ran.
    let (status, v) = get_json(&c, &srv.url("/__scheduled?cron=x")).await;
    assert_eq!((status, v), (200, Value::Array(vec![])));
    srv.stop_cleanly().await;
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_only_a_scheduled_handler_starts_and_requests_get_500() {
  within(30, async {
    let c = client();
    let mut srv = serve(test_scheduled_cmd("only-scheduled.js"));
    let (status, body) = get_text(&c, &srv.url("/__scheduled")).await;
    assert_eq!((status, body.as_str()), (200, "Ran scheduled event"));
    let (status, _) = get_text(&c, &srv.url("/")).await;
    assert_eq!(status, 500);
    srv.wait_for_log_lines(&["No fetch handler"], 1, 10).await;
    srv.stop_cleanly().await;
  })
  .await;
}

/// A config's `crons`: a `* * * * *` trigger fires at the next minute (within 70 s), with
/// `controller.cron` as written and `scheduledTime` the minute it fired for; the run is logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_trigger_fires_the_scheduled_handler() {
  within(120, async {
    let dir = scratch_dir("cron");
    let config = dir.join("runtime.toml");
    std::fs::write(
      &config,
      format!(
        "[[workers]]\nname = \"cron\"\nmain = {:?}\ncrons = [\"* * * * *\", \"0 3 * * mon\"]\nvars = {{ NAME = \"cron\" }}\n",
        scheduled_fixture("module.js").display().to_string()
      ),
    )
    .unwrap();
    let mut cmd = serve_config_cmd(&config);
    cmd.args(["--threads", "1"]);
    let mut srv = serve(cmd);
    srv
      .wait_for_log_lines(&["cron", "scheduled run ok", "* * * * *"], 1, 75)
      .await;
    let c = client();
    let seen = runs(&c, &srv).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["cron"], "* * * * *");
    assert_eq!(seen[0]["name"], "cron", "env reaches the scheduled handler");
    let time = seen[0]["scheduledTime"].as_f64().unwrap();
    assert_eq!(time % 60_000.0, 0.0, "scheduledTime is the minute it fired for: {time}");
    srv.stop_cleanly().await;
  })
  .await;
}

/// `limits.scheduled_cpu_ms`: a scheduled run may use more CPU than a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_runs_have_their_own_cpu_limit() {
  within(60, async {
    let dir = scratch_dir("cron-cpu");
    let config = dir.join("runtime.toml");
    std::fs::write(
      &config,
      format!(
        // The fixture busy-waits on Date.now(), which a config worker's coarse clock would freeze.
        "[[workers]]\nname = \"cron\"\nmain = {:?}\nlimits = {{ cpu_ms = 5, scheduled_cpu_ms = 5000 }}\ncoarse_time = false\n",
        scheduled_fixture("module.js").display().to_string()
      ),
    )
    .unwrap();
    let mut cmd = serve_config_cmd(&config);
    cmd.args(["--threads", "1", "--test-scheduled"]);
    let mut srv = serve(cmd);
    let c = client();
    // The isolate's first event may use what start-up left; the next ones may not.
    assert_eq!(runs(&c, &srv).await.len(), 0);
    let (status, body) = get_text(&c, &srv.url("/__scheduled?cron=busy")).await;
    assert_eq!((status, body.as_str()), (200, "Ran scheduled event"));
    let (status, _) = get_text(&c, &srv.url("/runs?busy=100")).await;
    assert_eq!(status, 503, "a request is held to cpu_ms");
    srv
      .wait_for_log_lines(&["cron", "exceeded its CPU time limit of 5 ms"], 1, 10)
      .await;
    srv.stop_cleanly().await;
  })
  .await;
}

#[test]
fn a_bad_cron_expression_is_a_start_up_error_naming_it() {
  let dir = scratch_dir("bad-cron");
  let config = dir.join("runtime.toml");
  std::fs::write(
    &config,
    format!(
      "[[workers]]\nname = \"cron\"\nmain = {:?}\ncrons = [\"61 * * * *\"]\n",
      scheduled_fixture("module.js").display().to_string()
    ),
  )
  .unwrap();
  let stderr = serve_fails(serve_config_cmd(&config));
  assert!(
    stderr.contains("61 * * * *") && stderr.contains("crons"),
    "{stderr}"
  );
  let mut cmd = serve_script_cmd(&scheduled_fixture("module.js"));
  cmd.args(["--cron", "every minute"]);
  let stderr = serve_fails(cmd);
  assert!(
    stderr.contains("every minute") && stderr.contains("--cron"),
    "{stderr}"
  );
}
