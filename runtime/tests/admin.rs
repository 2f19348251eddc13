//! The admin server and the logs against the real binary: `--admin` serves `/metrics` in the
//! Prometheus text format (parsed here, sample by sample), `/healthz` and `/readyz` (which turns
//! 503 once shutdown begins); `--access-log` writes one line per request; `--log-format json`
//! one JSON object per line. Fixture: tests/fixtures/admin/app.js; all traffic is to loopback.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn config() -> PathBuf {
  let main = fixture("admin/app.js").display().to_string();
  let path = scratch_dir("admin").join("runtime.toml");
  std::fs::write(
    &path,
    format!(
      "[[workers]]\nname = \"app\"\nmain = {main:?}\nroutes = [\"*/app/*\"]\n\
       [[workers]]\nname = \"spin\"\nmain = {main:?}\nroutes = [\"*/spin/*\"]\n\
       limits = {{ cpu_ms = 20 }}\n"
    ),
  )
  .unwrap();
  path
}

/// Starts the config's server with `args`, and finds its admin address in the log.
async fn serve_with_admin(args: &[&str]) -> (Server, String) {
  let mut cmd = serve_config_cmd(&config());
  cmd
    .args(["--admin", "127.0.0.1:0", "--threads", "2"])
    .args(args);
  let srv = serve(cmd);
  let admin = srv.admin_url().await;
  (srv, admin)
}

/// The samples of a Prometheus text exposition: `name{labels}` → value, with the labels sorted
/// so that a key does not depend on their order. Checks every line is a comment or a sample.
fn parse_exposition(text: &str) -> HashMap<String, f64> {
  let mut samples = HashMap::new();
  for line in text.lines().filter(|l| !l.is_empty()) {
    if line.starts_with("# HELP ") || line.starts_with("# TYPE ") || line == "# EOF" {
      continue;
    }
    let (series, value) = line
      .rsplit_once(' ')
      .unwrap_or_else(|| panic!("bad line {line:?}"));
    let value: f64 = match value {
      "+Inf" => f64::INFINITY,
      v => v
        .parse()
        .unwrap_or_else(|_| panic!("bad value in {line:?}")),
    };
    let key = match series.split_once('{') {
      Some((name, labels)) => {
        let labels = labels
          .strip_suffix('}')
          .unwrap_or_else(|| panic!("bad labels {line:?}"));
        let mut pairs: Vec<&str> = labels.split(',').collect();
        pairs.sort();
        format!("{name}{{{}}}", pairs.join(","))
      }
      None => series.to_string(),
    };
    assert!(
      samples.insert(key, value).is_none(),
      "a repeated sample: {line}"
    );
  }
  samples
}

async fn scrape(c: &reqwest::Client, admin: &str) -> HashMap<String, f64> {
  let response = c.get(format!("{admin}/metrics")).send().await.unwrap();
  assert_eq!(response.status(), 200);
  let content_type = response.headers()["content-type"]
    .to_str()
    .unwrap()
    .to_string();
  assert!(
    content_type.starts_with("text/plain; version=0.0.4"),
    "{content_type}"
  );
  parse_exposition(&response.text().await.unwrap())
}

fn sample(samples: &HashMap<String, f64>, key: &str) -> f64 {
  *samples.get(key).unwrap_or_else(|| {
    panic!(
      "no sample {key}; have {:?}",
      samples.keys().collect::<Vec<_>>()
    )
  })
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_requests_by_worker_status_and_outcome_and_probes_answer() {
  within(60, async {
    let (mut srv, admin) = serve_with_admin(&["--access-log"]).await;
    let c = client();
    assert_eq!(
      get_text(&c, &format!("{admin}/healthz")).await,
      (200, "ok\n".into())
    );
    assert_eq!(
      get_text(&c, &format!("{admin}/readyz")).await,
      (200, "ready\n".into())
    );
    assert_eq!(get_text(&c, &format!("{admin}/elsewhere")).await.0, 404);

    for _ in 0..3 {
      assert_eq!(get_text(&c, &srv.url("/app/ok")).await.0, 200);
    }
    assert_eq!(get_text(&c, &srv.url("/app/boom")).await.0, 500);
    assert_eq!(get_text(&c, &srv.url("/spin/spin")).await.0, 503);
    // Not routed to a worker: not a worker's request.
    assert_eq!(get_text(&c, &srv.url("/nowhere")).await.0, 404);

    let m = scrape(&c, &admin).await;
    assert_eq!(
      sample(&m, r#"runtime_requests_total{status="2xx",worker="app"}"#),
      3.0
    );
    assert_eq!(
      sample(&m, r#"runtime_requests_total{status="5xx",worker="app"}"#),
      1.0
    );
    assert_eq!(
      sample(&m, r#"runtime_requests_total{status="5xx",worker="spin"}"#),
      1.0
    );
    assert_eq!(
      sample(&m, r#"runtime_requests_total{status="4xx",worker="app"}"#),
      0.0
    );
    assert_eq!(sample(&m, r#"runtime_exceptions_total{worker="app"}"#), 1.0);
    assert_eq!(
      sample(&m, r#"runtime_exceptions_total{worker="spin"}"#),
      0.0
    );
    assert_eq!(
      sample(&m, r#"runtime_limit_terminations_total{worker="spin"}"#),
      1.0
    );
    assert_eq!(
      sample(&m, r#"runtime_limit_terminations_total{worker="app"}"#),
      0.0
    );
    // The histogram: cumulative buckets up to +Inf, which is the count.
    assert_eq!(
      sample(
        &m,
        r#"runtime_request_duration_seconds_count{worker="app"}"#
      ),
      4.0
    );
    let mut last = 0.0;
    for le in ["0.0005", "0.001", "0.01", "0.1", "1", "10", "+Inf"] {
      let key = format!(r#"runtime_request_duration_seconds_bucket{{le="{le}",worker="app"}}"#);
      let count = sample(&m, &key);
      assert!(count >= last, "{key} = {count} after {last}");
      last = count;
    }
    assert_eq!(last, 4.0);
    let sum = sample(&m, r#"runtime_request_duration_seconds_sum{worker="app"}"#);
    assert!(sum > 0.0 && sum < 10.0, "{sum}");
    // The looping request ran at least its 20 ms of CPU on one of the two threads.
    let cpu = sample(&m, r#"runtime_thread_cpu_seconds_total{thread="0"}"#)
      + sample(&m, r#"runtime_thread_cpu_seconds_total{thread="1"}"#);
    assert!(cpu >= 0.02, "{cpu}");
    // app and spin each made an isolate, spin another after its limit stop.
    assert!(sample(&m, "runtime_isolates_created_total") >= 2.0);
    sample(&m, "runtime_spare_isolate_misses_total");
    assert_eq!(sample(&m, "runtime_isolates_evicted_total"), 0.0);
    // The gauges come from each thread's one-second tick.
    let mut alive = 0.0;
    for _ in 0..50 {
      let m = scrape(&c, &admin).await;
      alive = sample(&m, "runtime_isolates_alive");
      if alive >= 1.0 && sample(&m, "runtime_heap_used_bytes") > 0.0 {
        assert!(sample(&m, "runtime_heap_committed_bytes") > 0.0);
        break;
      }
      tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(alive >= 1.0, "no isolate alive after 5 s");

    // One access line per worker request, with its outcome.
    let access = srv.log_lines_with(&["access:"]);
    assert_eq!(access.len(), 6, "{access:#?}");
    let boom = srv.log_lines_with(&["access:", "path=/app/boom"]);
    assert!(
      boom[0].contains("worker=app")
        && boom[0].contains("method=GET")
        && boom[0].contains("status=500")
        && boom[0].contains("outcome=exception")
        && boom[0].contains("cpu_us=")
        && boom[0].contains("wall_ms="),
      "{boom:?}"
    );
    let spin = srv.log_lines_with(&["access:", "path=/spin/spin"]);
    assert!(
      spin[0].contains("status=503") && spin[0].contains("outcome=limit"),
      "{spin:?}"
    );
    let nowhere = srv.log_lines_with(&["access:", "path=/nowhere"]);
    assert!(
      nowhere[0].contains("worker=-") && nowhere[0].contains("status=404"),
      "{nowhere:?}"
    );

    // Once shutdown begins /readyz says so, while a request in flight finishes.
    let slow = tokio::spawn({
      let c = c.clone();
      let url = srv.url("/app/slow");
      async move { get_text(&c, &url).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    srv.signal("TERM");
    let mut not_ready = false;
    for _ in 0..40 {
      match c.get(format!("{admin}/readyz")).send().await {
        Ok(r) if r.status() == 503 => {
          not_ready = true;
          break;
        }
        _ => tokio::time::sleep(Duration::from_millis(25)).await,
      }
    }
    assert!(not_ready, "/readyz did not turn 503 after SIGTERM");
    assert_eq!(slow.await.unwrap(), (200, "slow done".into()));
    srv.assert_clean_exit(20, "SIGTERM").await;
  })
  .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_are_one_object_per_line_with_stable_fields() {
  within(60, async {
    let (mut srv, _) = serve_with_admin(&["--access-log", "--log-format", "json"]).await;
    let c = client();
    assert_eq!(get_text(&c, &srv.url("/app/hello")).await.0, 200);
    assert_eq!(get_text(&c, &srv.url("/app/boom")).await.0, 500);
    srv.wait_for_stderr("\"outcome\":\"exception\"", 10).await;
    srv.stop_cleanly().await;
    let lines: Vec<Value> = srv
      .stderr()
      .lines()
      .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
      .collect();
    for line in &lines {
      for field in ["timestamp", "level", "target", "message"] {
        assert!(
          line.get(field).is_some() || field == "message",
          "no {field}: {line}"
        );
      }
    }
    let access: Vec<&Value> = lines.iter().filter(|l| l["target"] == "access").collect();
    assert_eq!(access.len(), 2, "{access:?}");
    let hello = access.iter().find(|l| l["path"] == "/app/hello").unwrap();
    assert_eq!(hello["worker"], "app");
    assert_eq!(hello["method"], "GET");
    assert_eq!(hello["status"], 200);
    assert_eq!(hello["outcome"], "ok");
    assert!(hello["cpu_us"].is_u64(), "{hello}");
    // console output is tagged with its worker; the handler's error with its stack.
    let console = lines
      .iter()
      .find(|l| {
        l["message"]
          .as_str()
          .is_some_and(|m| m.contains("served hello"))
      })
      .unwrap_or_else(|| panic!("no console line in {lines:?}"));
    assert_eq!(console["worker"], "app", "{console}");
    let error = lines
      .iter()
      .find(|l| {
        l["message"]
          .as_str()
          .is_some_and(|m| m.contains("boom for the metrics"))
      })
      .unwrap();
    assert_eq!(error["level"], "ERROR");
    assert!(
      error["message"].as_str().unwrap().contains("app.js:"),
      "{error}"
    );
  })
  .await;
}

#[tokio::test]
async fn an_admin_address_in_use_is_a_start_up_error() {
  let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
  let addr = taken.local_addr().unwrap().to_string();
  let mut cmd = serve_config_cmd(&config());
  cmd.args(["--admin", &addr]);
  let stderr = serve_fails(cmd);
  assert!(
    stderr.contains(&format!("--admin {addr}: cannot listen")),
    "{stderr}"
  );
}
