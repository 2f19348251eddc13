//! Time that leaks nothing: with coarse time (the default for the workers of a config file)
//! `Date.now()` and `performance.now()` stand still while JavaScript runs and move on at I/O, as
//! in Workers; a script served by itself keeps fine-grained clocks. Against the real binary,
//! with the fixture tests/fixtures/clock/clock.js reporting what it read.

mod common;

use std::path::PathBuf;

use common::*;
use serde_json::Value;

/// Two workers of one config: `frozen` with the default (coarse time), `live` opting out.
fn config() -> PathBuf {
  let main = fixture("clock/clock.js").display().to_string();
  let path = scratch_dir("clock").join("runtime.toml");
  std::fs::write(
    &path,
    format!(
      "[[workers]]\nname = \"frozen\"\nmain = {main:?}\nroutes = [\"frozen.test/*\"]\n\
       limits = {{ cpu_ms = 2000 }}\n\
       [[workers]]\nname = \"live\"\nmain = {main:?}\nroutes = [\"live.test/*\"]\n\
       coarse_time = false\nlimits = {{ cpu_ms = 2000 }}\n"
    ),
  )
  .unwrap();
  path
}

async fn read_clocks(srv: &Server, host: &str) -> Value {
  let response = client()
    .get(srv.url("/"))
    .header("host", host)
    .send()
    .await
    .unwrap();
  assert_eq!(response.status(), 200, "{host}");
  response.json().await.unwrap()
}

fn f(v: &Value, key: &str) -> f64 {
  v[key].as_f64().unwrap_or_else(|| panic!("{key} in {v}"))
}

/// What every `Date` shows whatever its clock: the wrapper keeps Date's own behaviour.
fn assert_date_behaves(v: &Value) {
  assert_eq!(v["dateString"], "string", "{v}");
  assert_eq!(v["fromArgs"], "2020-01-02T00:00:00.000Z", "{v}");
  assert_eq!(f(v, "parsed"), 1_577_934_245_000.0, "{v}");
  assert_eq!(f(v, "utc"), 1_577_923_200_000.0, "{v}");
  assert_eq!(v["isDate"], true, "{v}");
  assert_eq!(v["subclass"], true, "{v}");
  assert_eq!(v["constructor"], true, "{v}");
  assert_eq!(f(v, "length"), 7.0, "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_workers_clocks_stand_still_while_it_runs_and_move_on_at_a_timer() {
  within(60, async {
    let mut srv = serve(serve_config_cmd(&config()));
    let before = std::time::SystemTime::now()
      .duration_since(std::time::UNIX_EPOCH)
      .unwrap()
      .as_millis() as f64;
    let v = read_clocks(&srv, "frozen.test").await;
    assert_date_behaves(&v);
    // Frozen across ~20 ms of busy loop, in whole milliseconds.
    assert_eq!(f(&v, "date0"), f(&v, "date1"), "{v}");
    assert_eq!(f(&v, "perf0"), f(&v, "perf1"), "{v}");
    assert_eq!(f(&v, "newDate"), f(&v, "date0"), "{v}");
    assert_eq!(f(&v, "perf0").fract(), 0.0, "{v}");
    // Moved on by at least the timer's 30 ms once it fired.
    assert!(f(&v, "date2") - f(&v, "date0") >= 29.0, "{v}");
    assert!(f(&v, "perf2") - f(&v, "perf0") >= 29.0, "{v}");
    // The request's time is the real time, and performance's agrees with Date's.
    assert!((f(&v, "date0") - before).abs() < 5_000.0, "{v}");
    let performance_date = f(&v, "timeOrigin") + f(&v, "perf0");
    assert!((performance_date - f(&v, "date0")).abs() < 3.0, "{v}");
    // A second request sees a later time.
    let later = read_clocks(&srv, "frozen.test").await;
    assert!(f(&later, "date0") >= f(&v, "date2"), "{later} after {v}");
    srv.stop_cleanly().await;
  })
  .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_that_opts_out_and_a_script_served_alone_keep_fine_clocks() {
  within(60, async {
    let mut srv = serve(serve_config_cmd(&config()));
    let v = read_clocks(&srv, "live.test").await;
    assert_date_behaves(&v);
    assert!(
      f(&v, "perf1") - f(&v, "perf0") > 1.0,
      "the busy loop took no time: {v}"
    );
    assert!(f(&v, "date2") - f(&v, "date0") >= 29.0, "{v}");
    srv.stop_cleanly().await;

    let mut cmd = serve_script_cmd(&fixture("clock/clock.js"));
    cmd.args(["--cpu-limit", "2000"]);
    let mut alone = serve(cmd);
    let v = read_clocks(&alone, "localhost").await;
    assert_date_behaves(&v);
    assert!(
      f(&v, "perf1") - f(&v, "perf0") > 1.0,
      "the busy loop took no time: {v}"
    );
    assert_ne!(f(&v, "perf0").fract(), 0.0, "{v}");
    alone.stop_cleanly().await;

    // --coarse-time freezes a script served alone too.
    let mut cmd = serve_script_cmd(&fixture("clock/clock.js"));
    cmd.args(["--coarse-time", "--cpu-limit", "2000"]);
    let mut frozen = serve(cmd);
    let v = read_clocks(&frozen, "localhost").await;
    assert_eq!(f(&v, "perf0"), f(&v, "perf1"), "{v}");
    assert_eq!(f(&v, "date0"), f(&v, "date1"), "{v}");
    frozen.stop_cleanly().await;
  })
  .await;
}
