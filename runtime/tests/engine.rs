//! End-to-end tests of the isolate engine (issue 6): `runtime serve --config runtime.toml` with
//! several workers, routing, vars and secrets, the CPU and memory limits, responses that can never
//! come, eviction past `max_isolates`, per-request isolation, config errors, and the shorthand's
//! limit flags. Each test starts the real binary on fixtures from `tests/fixtures/engine/` (port 0)
//! and talks to it over HTTP on 127.0.0.1.
//!
//! Run with `cargo test -p runtime --test engine`. Every test has its own time limit, so a broken
//! engine makes tests fail rather than hang; when a test fails, the server's stderr is printed.
//! No timing assertions: the tests prove behaviour (limits fire, eviction restores, routes route)
//! and order of events, with generous deadlines only so that nothing hangs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Helpers for these tests (the shared harness is in common/mod.rs): configs, Host headers
// ---------------------------------------------------------------------------------------------

/// `tests/fixtures/engine/<name>`.
fn engine_fixture(name: &str) -> PathBuf {
  fixture("engine").join(name)
}

/// `runtime serve --config <engine fixture> --port 0 --host 127.0.0.1 --threads <threads>`.
fn config_cmd(config: &str, threads: usize) -> Command {
  let mut cmd = serve_config_cmd(&engine_fixture(config));
  cmd.args(["--threads", &threads.to_string()]);
  cmd
}

/// `runtime serve <engine fixture script> --port 0 --host 127.0.0.1 --threads 1 <extra...>`.
fn shorthand_cmd(script: &str, extra: &[&str]) -> Command {
  let mut cmd = serve_script_cmd(&engine_fixture(script));
  cmd.args(["--threads", "1"]).args(extra);
  cmd
}

/// GET `path` with the given Host header (HTTP/1.1); returns (status, body).
async fn get_host(c: &reqwest::Client, srv: &Server, host: &str, path: &str) -> (u16, String) {
  get_url(c, &srv.url(path), host).await
}

/// GET `url` with the given Host header (HTTP/1.1); returns (status, body).
async fn get_url(c: &reqwest::Client, url: &str, host: &str) -> (u16, String) {
  let r = c
    .get(url)
    .header("host", host)
    .send()
    .await
    .unwrap_or_else(|e| panic!("GET {url} (Host: {host}) failed: {e}"));
  let status = r.status().as_u16();
  (status, r.text().await.unwrap())
}

/// GET `path` with the given Host header; the body must be JSON.
async fn get_json_host(c: &reqwest::Client, srv: &Server, host: &str, path: &str) -> (u16, Value) {
  let (status, body) = get_host(c, srv, host, path).await;
  let v = serde_json::from_str(&body).unwrap_or_else(|e| {
    panic!("GET {path} (Host: {host}): {status}, body is not JSON ({e}): {body:?}")
  });
  (status, v)
}

/// GET on a worker whose answer is `{"count": N, ...}`; returns N (status must be 200).
async fn count(c: &reqwest::Client, srv: &Server, host: &str, path: &str) -> u64 {
  let (status, v) = get_json_host(c, srv, host, path).await;
  assert_eq!(status, 200, "GET {path} (Host: {host}): {v}");
  v["count"]
    .as_u64()
    .unwrap_or_else(|| panic!("GET {path} (Host: {host}): no count in {v}"))
}

/// Writes `runtime.toml` with `toml` into a scratch directory that also holds `ok.js` (a valid
/// worker) and `bad.js` (a syntax error on line 4, column 9); returns the config's path.
fn scratch_config(name: &str, toml: &str) -> PathBuf {
  let dir = scratch_dir(name);
  std::fs::copy(engine_fixture("whoami.js"), dir.join("ok.js")).unwrap();
  std::fs::copy(engine_fixture("syntax-error.js"), dir.join("bad.js")).unwrap();
  let path = dir.join("runtime.toml");
  std::fs::write(&path, toml).unwrap();
  path
}

/// `runtime serve --config <path> --port 0 --host 127.0.0.1 --threads 1`.
fn scratch_config_cmd(path: &Path) -> Command {
  let mut cmd = serve_config_cmd(path);
  cmd.args(["--threads", "1"]);
  cmd
}

const CPU_LIMIT_50: &str = "exceeded its CPU time limit of 50 ms";

// ---------------------------------------------------------------------------------------------
// CPU time limit
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_limit_stops_a_synchronous_loop_and_recycles_the_isolate() {
  within(60, async {
    // One thread: "other" lives in the same pool (and on the same thread) as the looper.
    let mut srv = serve(config_cmd("limits.toml", 1));
    let c = client();
    assert_eq!(count(&c, &srv, "other.test", "/").await, 1);
    assert_eq!(count(&c, &srv, "looper.test", "/count").await, 1);
    assert_eq!(count(&c, &srv, "looper.test", "/count").await, 2);

    let (status, body) = deadline(20, "GET /spin (for(;;){} in the handler)", async {
      get_host(&c, &srv, "looper.test", "/spin").await
    })
    .await;
    assert_eq!(status, 503, "a handler stuck in for(;;){{}}: {body:?}");
    srv
      .wait_for_log_lines(&["looper", CPU_LIMIT_50], 1, 10)
      .await;

    // A new isolate: module state starts anew, and it serves normally.
    assert_eq!(count(&c, &srv, "looper.test", "/count").await, 1);
    assert_eq!(count(&c, &srv, "looper.test", "/count").await, 2);
    // The other worker's isolate on the same thread was untouched.
    assert_eq!(count(&c, &srv, "other.test", "/").await, 2);
    assert!(
      srv.log_lines_with(&["other", "exceeded"]).is_empty(),
      "only the looping worker may be stopped"
    );
    srv.stop_cleanly().await;
  })
  .await;
}

/// The CPU watchdog parks once no JavaScript has run for a while (an idle server does not wake it
/// every tick); the first slice after that wakes it, and a loop is still stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_limit_stops_a_loop_that_starts_after_the_server_was_idle() {
  within(60, async {
    let mut srv = serve(config_cmd("limits.toml", 1));
    let c = client();
    for round in 1..=2 {
      // Well past the watchdog's ~50 ms of quiet before it parks.
      tokio::time::sleep(std::time::Duration::from_millis(400)).await;
      let (status, body) = deadline(20, "GET /spin after idling", async {
        get_host(&c, &srv, "looper.test", "/spin").await
      })
      .await;
      assert_eq!(status, 503, "round {round}: {body:?}");
      srv
        .wait_for_log_lines(&["looper", CPU_LIMIT_50], round, 10)
        .await;
    }
    assert_eq!(count(&c, &srv, "looper.test", "/count").await, 1);
    srv.stop_cleanly().await;
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_limit_stops_a_loop_after_an_await() {
  within(60, async {
    let mut srv = serve(config_cmd("limits.toml", 1));
    let c = client();
    let mut stopped = 0;
    for path in ["/spin-after-await", "/spin-after-microtask"] {
      assert_eq!(count(&c, &srv, "looper.test", "/count").await, 1);
      assert_eq!(count(&c, &srv, "looper.test", "/count").await, 2);
      let (status, body) = deadline(20, path, get_host(&c, &srv, "looper.test", path)).await;
      assert_eq!(status, 503, "GET {path}: {body:?}");
      stopped += 1;
      srv
        .wait_for_log_lines(&["looper", CPU_LIMIT_50], stopped, 10)
        .await;
      // Recycled: the counter starts again.
      assert_eq!(
        count(&c, &srv, "looper.test", "/count").await,
        1,
        "after {path}"
      );
      // Make the next round start from a fresh isolate too.
      let (status, _) = get_host(&c, &srv, "looper.test", "/spin").await;
      assert_eq!(status, 503);
      stopped += 1;
      srv
        .wait_for_log_lines(&["looper", CPU_LIMIT_50], stopped, 10)
        .await;
    }
    srv.stop_cleanly().await;
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_worker_is_served_while_one_loops() {
  within(60, async {
    // Two threads: the looping request blocks one of them for ~3 s of CPU time. Connections are
    // spread over the threads by the kernel (SO_REUSEPORT), so the test opens many connections to
    // the other worker: those that land on the free thread must be answered while the loop runs.
    let mut srv = serve(config_cmd("limits.toml", 2));
    let events: Arc<Mutex<Vec<String>>> = Arc::default();

    let looper = {
      let url = srv.url("/spin");
      let events = events.clone();
      tokio::spawn(async move {
        let (status, _) = get_url(&client(), &url, "long.test").await;
        events.lock().unwrap().push(format!("looper {status}"));
        status
      })
    };
    srv.wait_for_log_lines(&["spin-started"], 1, 20).await;

    let (first_tx, mut first_rx) = tokio::sync::mpsc::unbounded_channel::<(u16, bool)>();
    let mut others = Vec::new();
    for _ in 0..16 {
      let url = srv.url("/");
      let log = srv.stderr_handle();
      let events = events.clone();
      let first_tx = first_tx.clone();
      others.push(tokio::spawn(async move {
        // A fresh client: a connection of its own.
        let (status, body) = get_url(&client(), &url, "other.test").await;
        // Whether the looper had been stopped when this answer arrived.
        let looper_stopped = log.text().contains("\"long-looper\" exceeded");
        events.lock().unwrap().push(format!("other {status}"));
        let _ = first_tx.send((status, looper_stopped));
        (status, body)
      }));
    }
    drop(first_tx);

    let (status, looper_stopped) = deadline(30, "first answer from the other worker", async {
      first_rx
        .recv()
        .await
        .expect("no answer from the other worker")
    })
    .await;
    assert_eq!(status, 200);
    assert!(
      !looper_stopped,
      "the other worker's first answer came only after the looper was stopped; events: {:?}",
      events.lock().unwrap()
    );
    {
      let events = events.lock().unwrap();
      assert!(
        events.first().is_some_and(|e| e.starts_with("other")),
        "the other worker must answer before the looping request ends; events: {events:?}"
      );
    }

    let looper_status = deadline(30, "the looping request", looper).await.unwrap();
    assert_eq!(looper_status, 503);
    srv
      .wait_for_log_lines(
        &["long-looper", "exceeded its CPU time limit of 3000 ms"],
        1,
        10,
      )
      .await;
    // Requests that landed on the blocked thread were served once it was free again.
    for other in others {
      let (status, body) = deadline(30, "other worker request", other).await.unwrap();
      assert_eq!(status, 200, "{body}");
    }
    let (status, body) = get_host(&client(), &srv, "long.test", "/hello").await;
    assert_eq!((status, body.as_str()), (200, "hello from ?"));
    srv.stop_cleanly().await;
  })
  .await;
}

// ---------------------------------------------------------------------------------------------
// Memory limit
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_stops_a_runaway_allocation_and_recycles_the_isolate() {
  within(60, async {
    let mut srv = serve(config_cmd("limits.toml", 1));
    let c = client();
    let limit = ["hog", "exceeded its memory limit of 64 MiB"];
    let (status, body) = get_host(&c, &srv, "hog.test", "/small").await;
    assert_eq!(
      (status, body.as_str()),
      (200, "held 4 arrays"),
      "a few MiB are fine"
    );
    let mut stopped = 0;
    for path in ["/arrays", "/strings"] {
      assert_eq!(count(&c, &srv, "hog.test", "/count").await, 1);
      assert_eq!(count(&c, &srv, "hog.test", "/count").await, 2);
      let (status, body) = deadline(30, path, get_host(&c, &srv, "hog.test", path)).await;
      assert_eq!(status, 503, "GET {path} with a 64 MiB heap: {body:?}");
      stopped += 1;
      srv.wait_for_log_lines(&limit, stopped, 10).await;
      srv.assert_alive();
      assert_eq!(
        count(&c, &srv, "hog.test", "/count").await,
        1,
        "after {path}"
      );
      let (status, body) = get_host(&c, &srv, "hog.test", "/small").await;
      assert_eq!(
        (status, body.as_str()),
        (200, "held 4 arrays"),
        "after {path}"
      );
      // Start the next round from a fresh isolate.
      let (status, _) = get_host(&c, &srv, "hog.test", "/arrays").await;
      assert_eq!(status, 503);
      stopped += 1;
      srv.wait_for_log_lines(&limit, stopped, 10).await;
    }
    // Other workers are unaffected.
    assert_eq!(count(&c, &srv, "other.test", "/").await, 1);
    srv.stop_cleanly().await;
  })
  .await;
}

/// Pointer compression puts every isolate's heap in one 4 GiB cage, and V8 aborts the whole
/// process when it is full. 36 workers, each allowed 256 MiB and each growing by 8 MiB per request
/// to 160 MiB (5.6 GiB in sum), and 4 offenders allowed 48 MiB that ask for 64 MiB at once (so each
/// is stopped on its first request, whether or not eviction reset it): the engine evicts idle
/// isolates before the cage fills, so the offenders get 503s, everyone else 200s, a quiet worker answers
/// throughout, and the process never aborts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_heaps_past_the_pointer_cage_in_sum_never_abort_the_process() {
  use futures::StreamExt;
  const GROWERS: usize = 36;
  const OFFENDERS: usize = 4;
  const ROUNDS: usize = 20;
  within(300, async {
    let mut toml = String::from("[engine]\nmax_isolates = 200\n");
    let grower = engine_fixture("grower.js").display().to_string();
    for i in 0..GROWERS + OFFENDERS {
      let mb = if i < GROWERS { 256 } else { 48 };
      toml += &format!(
        "[[workers]]\nname = \"g{i}\"\nmain = {grower:?}\nroutes = [\"g{i}.test/*\"]\nlimits = {{ memory_mb = {mb}, cpu_ms = 1000 }}\n"
      );
    }
    toml += &format!(
      "[[workers]]\nname = \"quiet\"\nmain = {grower:?}\nroutes = [\"quiet.test/*\"]\n"
    );
    let config = scratch_config("cage", &toml);
    let mut cmd = serve_config_cmd(&config);
    cmd.args(["--threads", "2"]);
    let mut srv = serve(cmd);
    let c = client();
    let mut offender_503s = 0;
    for round in 0..ROUNDS {
      let statuses: Vec<(usize, u16, String)> = futures::stream::iter(0..GROWERS + OFFENDERS)
        .map(|i| {
          let c = c.clone();
          let url = srv.url(if i < GROWERS { "/grow" } else { "/grow?mib=64" });
          async move {
            let (status, body) = get_url(&c, &url, &format!("g{i}.test")).await;
            (i, status, body)
          }
        })
        .buffer_unordered(8)
        .collect()
        .await;
      for (i, status, body) in statuses {
        if i < GROWERS {
          assert_eq!(status, 200, "round {round}, g{i} (within its limit): {body:?}");
        } else if status == 503 {
          offender_503s += 1;
        } else {
          assert_eq!(status, 200, "round {round}, offender g{i}: {body:?}");
        }
      }
      srv.assert_alive();
      // Answers every round (from whichever thread; evicted and back, or warm).
      count(&c, &srv, "quiet.test", "/count").await;
    }
    assert!(offender_503s >= OFFENDERS, "{offender_503s} 503s for the offenders");
    srv
      .wait_for_log_lines(&["exceeded its memory limit of 48 MiB"], OFFENDERS, 10)
      .await;
    assert!(
      !srv.log_lines_with(&["share of the heap cage"]).is_empty(),
      "the cage's budget evicted isolates"
    );
    // A stopped offender serves again.
    for i in GROWERS..GROWERS + OFFENDERS {
      let (status, body) = get_host(&c, &srv, &format!("g{i}.test"), "/count").await;
      assert_eq!(status, 200, "g{i}: {body:?}");
    }
    srv.stop_cleanly().await;
  })
  .await;
}

/// A config that promises more heap than the cage holds is an error naming the numbers.
#[test]
fn config_memory_past_the_pointer_cage_is_an_error() {
  config_fails(
    "cage-worker",
    &format!("{OK_WORKER}limits = {{ memory_mb = 5000 }}\n"),
    &["limits.memory_mb = 5000 MiB", "4096 MiB", "3072 MiB"],
  );
  config_fails(
    "cage-engine",
    &format!("[engine]\nmax_memory_mb = 8192\n{OK_WORKER}"),
    &["max_memory_mb = 8192 MiB", "4096 MiB"],
  );
}

/// Issue 6: "Heap per isolate (128 MiB), ArrayBuffer memory counted too". The fixture holds 512
/// ArrayBuffers of 1 MiB (untouched, so the process's RSS barely grows if nothing stops it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_counts_array_buffers() {
  within(60, async {
    let mut srv = serve(config_cmd("limits.toml", 1));
    let c = client();
    let (status, body) = deadline(
      30,
      "GET /buffers",
      get_host(&c, &srv, "hog.test", "/buffers"),
    )
    .await;
    assert_eq!(
      status, 503,
      "512 MiB of ArrayBuffers under a 64 MiB memory limit must be stopped; got {body:?}"
    );
    srv
      .wait_for_log_lines(&["hog", "exceeded its memory limit of 64 MiB"], 1, 10)
      .await;
    assert_eq!(count(&c, &srv, "hog.test", "/count").await, 1);
    srv.stop_cleanly().await;
  })
  .await;
}

// ---------------------------------------------------------------------------------------------
// Responses that can never come
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promise_that_never_settles_is_a_500_not_a_hang() {
  within(60, async {
    let mut srv = serve(config_cmd("limits.toml", 1));
    let c = client();
    let mut seen = 0;
    for path in ["/never", "/never-after-timer"] {
      // Far below the 30 s wall-clock limit: the engine knows nothing can settle it.
      let (status, body) = deadline(10, path, get_host(&c, &srv, "never.test", path)).await;
      assert_eq!(status, 500, "GET {path}: {body:?}");
      seen += 1;
      srv
        .wait_for_log_lines(&["never", "will never generate a response"], seen, 10)
        .await;
      let (status, body) = get_host(&c, &srv, "never.test", "/ok").await;
      assert_eq!((status, body.as_str()), (200, "ok"), "after {path}");
    }
    srv.stop_cleanly().await;
  })
  .await;
}

// ---------------------------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_and_path_and_the_most_specific_pattern_wins() {
  within(60, async {
    let mut srv = serve(config_cmd("routing.toml", 2));
    let c = client();
    let cases: &[(&str, &str, Option<&str>)] = &[
      // Host patterns; the port and the case of the Host header do not matter.
      ("api.example.com", "/", Some("api")),
      ("api.example.com", "/users/7", Some("api")),
      ("API.Example.COM:8443", "/x", Some("api")),
      ("api.example.com:80", "/x", Some("api")),
      // Path pattern on any host.
      ("other.org", "/v1/users", Some("api")),
      ("127.0.0.1", "/v1/", Some("api")),
      // The most specific pattern wins over both of api's.
      ("api.example.com", "/v1/admin/users", Some("admin")),
      ("api.example.com:1234", "/v1/admin/", Some("admin")),
      ("other.org", "/v1/admin/users", Some("api")),
      // Wildcard subdomains (but not the bare domain).
      ("a.example.org", "/", Some("sub")),
      ("a.b.example.org", "/deep/path", Some("sub")),
      ("example.org", "/", None),
      // An exact path.
      ("example.net", "/hello", Some("exact")),
      ("example.net", "/hello/x", None),
      ("example.net", "/", None),
      // "*/static/*" on any host, but api.example.com/* has more literal characters.
      ("anything.test", "/static/app.js", Some("static")),
      ("api.example.com", "/static/app.js", Some("api")),
      // Nothing matches.
      ("unknown.test", "/", None),
      ("example.com", "/", None),
    ];
    for &(host, path, expected) in cases {
      let (status, body) = get_host(&c, &srv, host, path).await;
      match expected {
        Some(worker) => assert_eq!(
          (status, body.as_str()),
          (200, format!("{worker} {path}").as_str()),
          "Host: {host}, path {path}"
        ),
        None => {
          assert_eq!(status, 404, "Host: {host}, path {path}: {body:?}");
          assert!(
            !body.is_empty() && body.len() < 200,
            "a 404 has a short body, got {body:?}"
          );
        }
      }
    }

    // HTTP/2: the :authority is the host (127.0.0.1:PORT here).
    let h2 = reqwest::Client::builder()
      .no_proxy()
      .http2_prior_knowledge()
      .timeout(Duration::from_secs(30))
      .build()
      .unwrap();
    for (path, expected) in [
      ("/v1/x", Some("api")),
      ("/static/x", Some("static")),
      ("/", None),
    ] {
      let r = h2.get(srv.url(path)).send().await.unwrap();
      assert_eq!(r.version(), reqwest::Version::HTTP_2);
      let status = r.status().as_u16();
      let body = r.text().await.unwrap();
      match expected {
        Some(worker) => assert_eq!((status, body), (200, format!("{worker} {path}"))),
        None => assert_eq!(status, 404, "h2 {path}: {body:?}"),
      }
    }
    srv.stop_cleanly().await;
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_worker_without_routes_gets_every_request() {
  within(60, async {
    // A relative config path from the repository root; the script is relative to the config.
    let mut cmd = serve_cmd([
      "--config",
      "tests/fixtures/engine/lone.toml",
      "--port",
      "0",
      "--host",
      "127.0.0.1",
      "--threads",
      "1",
    ]);
    cmd.current_dir(repo_root());
    let mut srv = serve(cmd);
    let c = client();
    for (host, path) in [
      ("example.com", "/"),
      ("127.0.0.1", "/a/b?c=d"),
      ("x.y.z:99", "/v1/"),
    ] {
      let (status, body) = get_host(&c, &srv, host, path).await;
      let expected_path = path.split('?').next().unwrap();
      assert_eq!(
        (status, body),
        (200, format!("lone {expected_path}")),
        "Host: {host}"
      );
    }
    srv.stop_cleanly().await;
  })
  .await;
}

// ---------------------------------------------------------------------------------------------
// vars and secrets
// ---------------------------------------------------------------------------------------------

fn unique_secret() -> String {
  let nanos = std::time::SystemTime::now()
    .duration_since(std::time::UNIX_EPOCH)
    .unwrap()
    .as_nanos();
  format!("s3cr3t-{}-{nanos}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vars_and_secrets_reach_both_syntaxes_and_secrets_are_never_logged() {
  within(60, async {
    let secret = unique_secret();
    let mut cmd = config_cmd("env.toml", 2);
    cmd.env("ENGINE_TEST_TOKEN", &secret);
    // Everything the runtime logs, at every level.
    cmd.env("RUST_LOG", "trace");
    let mut srv = serve(cmd);
    let c = client();

    // Module syntax: `env`, not globals.
    let (status, v) = get_json_host(&c, &srv, "module.test", "/").await;
    assert_eq!(status, 200);
    assert_eq!(
      v["env"],
      json!({ "GREETING": "hello", "ENGINE_TEST_TOKEN": secret })
    );
    assert_eq!(
      v["globals"],
      json!({ "GREETING": "undefined", "ENGINE_TEST_TOKEN": "undefined" }),
      "module syntax must not see vars or secrets as globals in its handler"
    );

    // Service-worker syntax: globals, from the top-level code on.
    let (status, v) = get_json_host(&c, &srv, "sw.test", "/").await;
    assert_eq!(status, 200);
    assert_eq!(
      v,
      json!({ "GREETING": "hello", "ENGINE_TEST_TOKEN": secret, "topLevel": "hello" })
    );

    srv.stop_cleanly().await;
    let log = srv.stderr();
    assert!(log.contains("env-module loaded"), "the log was captured");
    assert!(
      !log.contains(&secret),
      "the secret's value appears in the server log"
    );
  })
  .await;
}

/// In Workers, a module-syntax script has no binding globals at all, so its top-level code cannot
/// read them either (env.toml's module worker records `typeof GREETING` at evaluation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_syntax_top_level_code_does_not_see_bindings_as_globals() {
  within(60, async {
    let mut cmd = config_cmd("env.toml", 1);
    cmd.env("ENGINE_TEST_TOKEN", unique_secret());
    let mut srv = serve(cmd);
    let (status, v) = get_json_host(&client(), &srv, "module.test", "/").await;
    assert_eq!(status, 200);
    assert_eq!(
      v["topLevel"],
      json!({ "GREETING": "undefined", "ENGINE_TEST_TOKEN": "undefined" }),
      "module-syntax top-level code saw vars/secrets as globals"
    );
    srv.stop_cleanly().await;
  })
  .await;
}

// ---------------------------------------------------------------------------------------------
// Eviction past max_isolates
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_past_max_isolates_recreates_workers_in_any_order() {
  within(60, async {
    // max_isolates = 2 and one thread: one pool holds at most two of A, B, C (C is written in
    // service-worker syntax). Each answers with its isolate's request count.
    let mut srv = serve(config_cmd("eviction.toml", 1));
    let c = client();
    let mut step = 0;
    let mut expect = |worker: &'static str, n: u64| {
      step += 1;
      (step, worker, n)
    };
    let plan = [
      expect("a", 1), // live: A
      expect("b", 1), // live: A B
      expect("a", 2), // A is now the most recently used
      // C evicts B, the least recently used: the most recently *created* isolate goes first.
      expect("c", 1), // live: A C
      expect("a", 3), // A kept its isolate
      // B comes back as a new isolate; C (LRU) is evicted.
      expect("b", 1), // live: A B
      // C evicts A: the *oldest* isolate goes while a newer one (B) stays.
      expect("c", 1), // live: B C
      expect("b", 2),
      expect("a", 1), // re-created; evicts C
      expect("b", 3),
      expect("a", 2),
    ];
    for (step, worker, n) in plan {
      let host = format!("{worker}.test");
      let (status, v) = get_json_host(&c, &srv, &host, "/").await;
      assert_eq!(status, 200, "step {step} ({worker}): {v}");
      assert_eq!(
        v["name"],
        json!(worker.to_uppercase()),
        "step {step}: routed to the wrong worker: {v}"
      );
      assert_eq!(v["count"], json!(n), "step {step} ({worker}): {v}");
    }

    // Churn, oldest first: cycling through three workers with room for two evicts the least
    // recently used, which is also the oldest isolate, on every request; from the third request
    // on, each one gets a brand new isolate.
    let c_a_b = ["c", "a", "b"];
    for (i, worker) in c_a_b.iter().cycle().take(12).enumerate() {
      let (status, v) = get_json_host(&c, &srv, &format!("{worker}.test"), "/").await;
      assert_eq!(status, 200, "cycle #{i} ({worker}): {v}");
      assert_eq!(v["name"], json!(worker.to_uppercase()), "cycle #{i}: {v}");
      if i >= 2 {
        assert_eq!(v["count"], json!(1), "cycle #{i} ({worker}): {v}");
      }
    }
    // Churn, newest first: live are A (older) and B (newer). A stays warm while C and B evict
    // each other, each time the most recently created isolate.
    let mut a_count = 1;
    for round in 0..4 {
      for worker in ["a", "c", "a", "b"] {
        let (status, v) = get_json_host(&c, &srv, &format!("{worker}.test"), "/").await;
        assert_eq!(status, 200, "round {round} ({worker}): {v}");
        assert_eq!(
          v["name"],
          json!(worker.to_uppercase()),
          "round {round}: {v}"
        );
        let expected = if worker == "a" {
          a_count += 1;
          a_count
        } else {
          1
        };
        assert_eq!(v["count"], json!(expected), "round {round} ({worker}): {v}");
      }
    }
    srv.assert_alive();
    srv.stop_cleanly().await;
    assert!(
      !srv.stderr().contains("panicked"),
      "the server panicked:\n{}",
      srv.stderr()
    );
  })
  .await;
}

// ---------------------------------------------------------------------------------------------
// isolation = "request"
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_request_carries_nothing_over() {
  within(60, async {
    let mut srv = serve(config_cmd("isolation.toml", 1));
    let c = client();
    for host in ["fresh.test", "fresh-sw.test"] {
      for i in 0..3 {
        let (status, v) = get_json_host(&c, &srv, host, "/set").await;
        assert_eq!(status, 200);
        assert_eq!(
          v["count"],
          json!(1),
          "{host} /set #{i}: module state must start anew: {v}"
        );
        assert_eq!(v["marker"], Value::Null, "{host} /set #{i}: {v}");
        let (status, v) = get_json_host(&c, &srv, host, "/").await;
        assert_eq!(status, 200);
        assert_eq!(v["count"], json!(1), "{host} #{i}: {v}");
        assert_eq!(
          v["marker"],
          Value::Null,
          "{host} #{i}: a global set by the previous request is visible: {v}"
        );
      }
    }
    // The bindings still reach a fresh isolate.
    let (_, v) = get_json_host(&c, &srv, "fresh-sw.test", "/").await;
    assert_eq!(v["name"], json!("fresh-sw"));
    let (_, v) = get_json_host(&c, &srv, "fresh.test", "/").await;
    assert_eq!(v["name"], json!("fresh"));

    // Contrast: the default isolation keeps the isolate warm.
    let (_, v) = get_json_host(&c, &srv, "warm.test", "/set").await;
    assert_eq!(
      (v["count"].clone(), v["marker"].clone()),
      (json!(1), Value::Null)
    );
    let (_, v) = get_json_host(&c, &srv, "warm.test", "/").await;
    assert_eq!(
      (v["count"].clone(), v["marker"].clone()),
      (json!(2), json!("set"))
    );
    srv.stop_cleanly().await;
  })
  .await;
}

/// What one isolated request leaves behind (a global, changed `Array.prototype` and
/// `Object.prototype`, a timer and a `waitUntil` still running, an unrevoked blob: URL) is not
/// there for the next, whether the next reuses the isolate with a fresh realm (after the work is
/// done) or gets another (while it runs); nor after a CPU or a memory limit stopped a request.
/// /metrics shows the realms were reused, not isolates made for every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_request_leaves_nothing_for_the_next_request_in_a_fresh_realm() {
  within(90, async {
    let mut cmd = config_cmd("sandbox.toml", 1);
    cmd.args(["--admin", "127.0.0.1:0"]);
    let mut srv = serve(cmd);
    let admin = srv.admin_url().await;
    let c = client();
    let host = "sandbox.test";
    let clean = json!({
      "count": 1, "global": null, "arrayProto": null, "objectProto": null, "timer": null,
      "waitUntil": null, "blobUrl": null,
    });
    let (status, v) = get_json_host(&c, &srv, host, "/").await;
    assert_eq!((status, &v), (200, &clean));
    for round in 0..3 {
      let (status, dirty) = get_json_host(&c, &srv, host, "/dirty").await;
      assert_eq!(status, 200, "round {round}: {dirty}");
      let made = dirty["made"].as_str().expect("a blob: URL").to_string();
      assert!(made.starts_with("blob:"), "{made}");
      // While its timer and waitUntil still run, and after.
      let (status, v) = get_json_host(&c, &srv, host, "/").await;
      assert_eq!((status, &v), (200, &clean), "round {round}, at once");
      tokio::time::sleep(Duration::from_millis(400)).await;
      let (status, v) = get_json_host(&c, &srv, host, "/").await;
      assert_eq!((status, &v), (200, &clean), "round {round}, after its work");
      let (status, v) = get_json_host(&c, &srv, host, &format!("/blob?url={made}")).await;
      assert_eq!(status, 200);
      assert!(
        v["error"].as_str().is_some_and(|e| e.contains("no Blob")),
        "round {round}: the previous request's blob: URL must not resolve: {v}"
      );
    }
    for (path, limit) in [("/loop", "CPU time limit"), ("/grow", "memory limit")] {
      let (status, body) = get_host(&c, &srv, host, path).await;
      assert_eq!(status, 503, "{path}: {body}");
      srv.wait_for_log_lines(&["sandbox", limit], 1, 10).await;
      let (status, v) = get_json_host(&c, &srv, host, "/").await;
      assert_eq!((status, &v), (200, &clean), "after {path}");
    }
    let metrics = c
      .get(format!("{admin}/metrics"))
      .send()
      .await
      .unwrap()
      .text()
      .await
      .unwrap();
    let counter = |name: &str| -> u64 {
      metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    // 17 requests; realms are reset after those that end cleanly (not the two stopped).
    let reset = counter("runtime_realms_reset_total ");
    let created = counter("runtime_isolates_created_total ");
    assert!(reset >= 8, "realms reset: {reset}\n{metrics}");
    assert!(created < 17, "isolates created: {created}\n{metrics}");
    srv.stop_cleanly().await;
  })
  .await;
}

// ---------------------------------------------------------------------------------------------
// Config errors: nothing half-starts
// ---------------------------------------------------------------------------------------------

/// Starts a config that must fail; its error must mention every one of `needles`.
fn config_fails(name: &str, toml: &str, needles: &[&str]) {
  let path = scratch_config(name, toml);
  let stderr = serve_fails(scratch_config_cmd(&path));
  for needle in needles {
    assert!(
      stderr.contains(needle),
      "config {name}: the error must mention {needle:?}; stderr:\n{stderr}\nconfig:\n{toml}"
    );
  }
  let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

const OK_WORKER: &str = "[[workers]]\nname = \"a\"\nmain = \"ok.js\"\n";

#[test]
fn config_unknown_keys_are_errors_that_name_the_key() {
  config_fails(
    "unknown-worker-key",
    &format!("{OK_WORKER}cpu_limit = 3\n"),
    &["cpu_limit"],
  );
  config_fails(
    "unknown-engine-key",
    &format!("[engine]\nmax_isolate = 3\n{OK_WORKER}"),
    &["max_isolate"],
  );
  config_fails(
    "unknown-section",
    &format!("[serverr]\nlisten = \"127.0.0.1:1\"\n{OK_WORKER}"),
    &["serverr"],
  );
  config_fails(
    "unknown-limit",
    &format!("{OK_WORKER}limits = {{ cpu_msec = 3 }}\n"),
    &["cpu_msec"],
  );
}

#[test]
fn config_wrong_types_are_errors_that_name_the_key() {
  config_fails(
    "wrong-type-engine",
    &format!("[engine]\nmax_isolates = \"many\"\n{OK_WORKER}"),
    &["max_isolates", "many"],
  );
  config_fails(
    "wrong-type-limit",
    &format!("{OK_WORKER}limits = {{ cpu_ms = \"fast\" }}\n"),
    &["cpu_ms", "fast"],
  );
  config_fails(
    "wrong-type-routes",
    &format!("{OK_WORKER}routes = \"*/*\"\n"),
    &["routes"],
  );
  config_fails(
    "wrong-isolation",
    &format!("{OK_WORKER}isolation = \"process\"\n"),
    &["isolation", "process"],
  );
  config_fails("missing-main", "[[workers]]\nname = \"a\"\n", &["main"]);
}

#[test]
fn config_missing_files_are_named() {
  config_fails(
    "missing-script",
    "[[workers]]\nname = \"a\"\nmain = \"workers/nope.js\"\n",
    &["workers/nope.js"],
  );
  let stderr = serve_fails(serve_cmd([
    "--config",
    "/nonexistent/runtime-engine-test.toml",
    "--port",
    "0",
  ]));
  assert!(
    stderr.contains("/nonexistent/runtime-engine-test.toml"),
    "{stderr}"
  );
}

#[test]
fn config_unset_secret_is_named() {
  let path = scratch_config(
    "unset-secret",
    &format!("{OK_WORKER}secrets = [\"ENGINE_TEST_UNSET_SECRET\"]\n"),
  );
  let mut cmd = scratch_config_cmd(&path);
  cmd.env_remove("ENGINE_TEST_UNSET_SECRET");
  let stderr = serve_fails(cmd);
  assert!(stderr.contains("ENGINE_TEST_UNSET_SECRET"), "{stderr}");
  let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn config_duplicate_worker_names_are_errors() {
  config_fails(
    "duplicate-name",
    &format!("{OK_WORKER}routes = [\"x.test/*\"]\n{OK_WORKER}routes = [\"y.test/*\"]\n"),
    &["duplicate", "(a)"],
  );
}

#[test]
fn config_syntax_error_in_a_worker_names_file_line_and_column() {
  // Only the second worker is broken: nothing may start.
  config_fails(
    "syntax-error",
    &format!("{OK_WORKER}routes = [\"x.test/*\"]\n[[workers]]\nname = \"b\"\nmain = \"bad.js\"\n"),
    &["bad.js:4:9", "SyntaxError"],
  );
  // The shorthand too.
  let stderr = serve_fails(shorthand_cmd("syntax-error.js", &[]));
  assert!(stderr.contains("engine/syntax-error.js:4:9"), "{stderr}");
}

/// Top-level code is held to the start-up budget (`limits.startup_ms`, 1 s by default): a script
/// whose evaluation never ends must fail start-up (naming the script and the limit), not hang it. Three scripts, started at
/// once: a synchronous loop, a loop after `await null`, and a loop after awaiting a timer.
#[test]
fn a_worker_whose_top_level_code_never_finishes_fails_start_up() {
  let scripts = [
    "top-level-loop.js",
    "top-level-loop-after-microtask.js",
    "top-level-loop-after-timer.js",
  ];
  let runs: Vec<_> = scripts
    .iter()
    .map(|&script| {
      std::thread::spawn(move || {
        let stderr = serve_fails_within(shorthand_cmd(script, &[]), 15);
        assert!(
          stderr.contains(script) && stderr.contains("exceeded its start-up CPU time limit"),
          "{script}: {stderr}"
        );
      })
    })
    .collect();
  let failures: Vec<String> = scripts
    .iter()
    .zip(runs)
    .filter_map(|(script, run)| {
      run.join().err().map(|panic| {
        let message = panic
          .downcast_ref::<String>()
          .cloned()
          .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
          .unwrap_or_default();
        format!("{script}: {message}")
      })
    })
    .collect();
  assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// The start-up budget (limits.startup_ms): apart from the per-request CPU limit
// ---------------------------------------------------------------------------------------------

/// A loopback HTTP server that answers each request with the next of `answers` (then with
/// `"ok"`), and counts the requests: what `startup-control.js` asks at the top of its start-up.
async fn control_server(answers: &[&str]) -> (String, Arc<Mutex<usize>>) {
  use tokio::io::{AsyncReadExt, AsyncWriteExt};
  let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
  let url = format!("http://{}/", listener.local_addr().unwrap());
  let answers = Arc::new(Mutex::new(
    answers
      .iter()
      .map(|a| a.to_string())
      .collect::<std::collections::VecDeque<_>>(),
  ));
  let hits = Arc::new(Mutex::new(0));
  let counted = hits.clone();
  tokio::spawn(async move {
    loop {
      let Ok((mut socket, _)) = listener.accept().await else {
        return;
      };
      let answer = answers
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| "ok".into());
      *counted.lock().unwrap() += 1;
      tokio::spawn(async move {
        // The request head is small; one read takes it.
        let mut head = [0u8; 4096];
        let _ = socket.read(&mut head).await;
        let response = format!(
          "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
          answer.len()
        );
        let _ = socket.write_all(response.as_bytes()).await;
      });
    }
  });
  (url, hits)
}

/// A config serving `startup-control.js` with the given control URL, start-up work and limits.
fn startup_config(name: &str, control: &str, startup_ms: u64, limits: &str) -> PathBuf {
  scratch_config(
    name,
    &format!(
      // The control server is on loopback, which a config's default outbound policy denies; the
      // fixture busy-waits on Date.now(), which a config worker's coarse clock would freeze.
      "[[workers]]\nname = \"slow-start\"\nmain = {:?}\nvars = {{ CONTROL = {control:?}, STARTUP_MS = \"{startup_ms}\" }}\nlimits = {limits}\noutbound = [\"local\"]\ncoarse_time = false\n",
      engine_fixture("startup-control.js").display().to_string()
    ),
  )
}

/// Start-up runs under `startup_ms`, not `cpu_ms`: 60 ms of top-level work starts under a 5 ms
/// request limit (every time: isolation = "request" starts an isolate per request). The first
/// event of an isolate may use what start-up left on top of `cpu_ms`, and no more: a handler
/// busy for 3 s in it is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_has_a_budget_of_its_own_apart_from_the_request_limit() {
  within(90, async {
    let (control, hits) = control_server(&[]).await;
    let config = startup_config(
      "startup-budget",
      &control,
      60,
      "{ cpu_ms = 5 }\nisolation = \"request\"",
    );
    let mut srv = serve(scratch_config_cmd(&config));
    let c = client();
    for i in 0..8 {
      let (status, body) = get_host(&c, &srv, "localhost", "/").await;
      assert_eq!(
        (status, body.as_str()),
        (200, "started 1 (ok)"),
        "request #{i}"
      );
    }
    // The check at start-up, then one start per request.
    assert_eq!(*hits.lock().unwrap(), 9);
    let (status, body) = get_host(&c, &srv, "localhost", "/busy?ms=3000").await;
    assert_eq!(status, 503, "the first event's credit is bounded: {body:?}");
    srv
      .wait_for_log_lines(
        &["slow-start", "exceeded its CPU time limit of 5 ms"],
        1,
        10,
      )
      .await;
    assert!(srv.log_lines_with(&["start-up CPU time limit"]).is_empty());
    srv.stop_cleanly().await;
  })
  .await;
}

/// A start-up that never ends is stopped by `startup_ms` with a log line of its own, the request
/// that started it gets a 503, and the next request starts the worker again and is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_loops_is_stopped_and_the_next_request_starts_again() {
  within(90, async {
    // The check at start-up passes; the next two starts loop forever: the
    // prewarmed isolate's, and (if that one failed before the first request
    // came, as on a loaded machine) the one the first request starts.
    let (control, hits) = control_server(&["ok", "spin", "spin"]).await;
    let config = startup_config(
      "startup-loop",
      &control,
      1,
      "{ cpu_ms = 5, startup_ms = 200 }",
    );
    let mut srv = serve(scratch_config_cmd(&config));
    let c = client();
    let (status, body) = deadline(20, "GET / (a start that loops)", async {
      get_host(&c, &srv, "localhost", "/").await
    })
    .await;
    assert_eq!(status, 503, "{body:?}");
    srv
      .wait_for_log_lines(
        &[
          "slow-start",
          "failed to start",
          "exceeded its start-up CPU time limit of 200 ms",
        ],
        1,
        10,
      )
      .await;
    // Tried again (once more if the first request rode on the prewarmed
    // start), and then it starts and stays warm.
    let mut tries = 0;
    loop {
      let (status, body) = get_host(&c, &srv, "localhost", "/").await;
      if status == 200 {
        assert_eq!(body, "started 1 (ok)");
        break;
      }
      tries += 1;
      assert!(
        tries < 2,
        "still {status} after {tries} more tries: {body:?}"
      );
    }
    let started = *hits.lock().unwrap();
    assert!(started == 4 || started == 5, "{started} starts");
    for _ in 0..3 {
      let (status, body) = get_host(&c, &srv, "localhost", "/").await;
      assert_eq!((status, body.as_str()), (200, "started 1 (ok)"));
    }
    assert_eq!(*hits.lock().unwrap(), started, "the worker stays warm");
    srv.stop_cleanly().await;
  })
  .await;
}

/// `--startup-limit` on the shorthand: a top level that needs more than it fails start-up,
/// naming the limit and the script; the default start-up budget takes it even under `--cpu-limit 5`,
/// and requests after the first are held to the 5 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shorthand_startup_limit_flag() {
  within(60, async {
    let stderr = serve_fails_within(
      shorthand_cmd("startup-heavy.js", &["--startup-limit", "50"]),
      30,
    );
    assert!(
      stderr.contains("startup-heavy.js")
        && stderr.contains("exceeded its start-up CPU time limit of 50 ms"),
      "{stderr}"
    );
    let mut srv = serve(shorthand_cmd("startup-heavy.js", &["--cpu-limit", "5"]));
    let c = client();
    let (status, body) = get_host(&c, &srv, "localhost", "/").await;
    assert_eq!((status, body.as_str()), (200, "ready"));
    let (status, body) = get_host(&c, &srv, "localhost", "/busy?ms=40").await;
    assert_eq!(
      status, 503,
      "a later request is held to --cpu-limit: {body:?}"
    );
    srv
      .wait_for_log_lines(
        &["startup-heavy.js", "exceeded its CPU time limit of 5 ms"],
        1,
        10,
      )
      .await;
    srv.stop_cleanly().await;
  })
  .await;
}

// ---------------------------------------------------------------------------------------------
// The shorthand's flags
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shorthand_cpu_limit_flag() {
  within(60, async {
    // A 25 ms busy loop (wall clock, so at most 25 ms of CPU) fits the default 50 ms...
    let mut srv = serve(shorthand_cmd("looper.js", &[]));
    let c = client();
    for _ in 0..3 {
      let (status, body) = get_host(&c, &srv, "localhost", "/busy?ms=25").await;
      assert_eq!((status, body.as_str()), (200, "busy 25"));
    }
    srv.stop_cleanly().await;

    // ...but not 5 ms (after the isolate's first event, which may also use what start-up
    // left of its own budget).
    let mut srv = serve(shorthand_cmd("looper.js", &["--cpu-limit", "5"]));
    let (status, body) = get_host(&c, &srv, "localhost", "/hello").await;
    assert_eq!((status, body.as_str()), (200, "hello from ?"));
    let (status, body) = get_host(&c, &srv, "localhost", "/busy?ms=25").await;
    assert_eq!(status, 503, "{body:?}");
    // The shorthand's worker is named after its file.
    srv
      .wait_for_log_lines(&["looper.js", "exceeded its CPU time limit of 5 ms"], 1, 10)
      .await;
    let (status, body) = get_host(&c, &srv, "localhost", "/hello").await;
    assert_eq!((status, body.as_str()), (200, "hello from ?"));
    srv.stop_cleanly().await;
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shorthand_memory_limit_flag() {
  within(60, async {
    let mut srv = serve(shorthand_cmd("hog.js", &["--memory-limit", "32"]));
    let c = client();
    let (status, body) = get_host(&c, &srv, "localhost", "/arrays").await;
    assert_eq!(status, 503, "{body:?}");
    srv
      .wait_for_log_lines(&["hog.js", "exceeded its memory limit of 32 MiB"], 1, 10)
      .await;
    assert_eq!(count(&c, &srv, "localhost", "/count").await, 1);
    srv.stop_cleanly().await;
  })
  .await;
}

/// Isolates after the first compile a script from the code cache the first one made, and only
/// for the very source it was made from: a script rewritten in place to one of the same length
/// (which V8's own check of a cache does not tell apart) runs its new code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolates_share_code_caches_only_for_the_same_source() {
  within(60, async {
    let dir = scratch_dir("code-cache");
    let script = dir.join("answer.js");
    let source = |word: &str| {
      format!("const word = \"{word}\";\nexport default {{ fetch() {{ return new Response(word); }} }};\n")
    };
    std::fs::write(&script, source("AAAA")).unwrap();
    let mut cmd = serve_script_cmd(&script);
    cmd
      .args(["--threads", "1", "--isolation", "request"])
      .env("RUST_LOG", "runtime_engine::loader=debug");
    let mut srv = serve(cmd);
    let c = client();
    for _ in 0..3 {
      assert_eq!(get_text(&c, &srv.url("/")).await, (200, "AAAA".to_string()));
    }
    srv
      .wait_for_log_lines(&["answer.js", "compiled from the code cache"], 1, 10)
      .await;

    std::fs::write(&script, source("BBBB")).unwrap();
    for _ in 0..3 {
      assert_eq!(get_text(&c, &srv.url("/")).await, (200, "BBBB".to_string()));
    }
    srv.stop_cleanly().await;
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shorthand_isolation_flag() {
  within(60, async {
    let c = client();
    // Default: one warm isolate (one thread).
    let mut srv = serve(shorthand_cmd("counter.js", &[]));
    let (_, v) = get_json_host(&c, &srv, "localhost", "/set").await;
    assert_eq!(
      (v["count"].clone(), v["marker"].clone()),
      (json!(1), Value::Null)
    );
    let (_, v) = get_json_host(&c, &srv, "localhost", "/").await;
    assert_eq!(
      (v["count"].clone(), v["marker"].clone()),
      (json!(2), json!("set"))
    );
    srv.stop_cleanly().await;

    let mut srv = serve(shorthand_cmd("counter.js", &["--isolation", "request"]));
    for i in 0..3 {
      let (_, v) = get_json_host(&c, &srv, "localhost", "/set").await;
      assert_eq!(
        (v["count"].clone(), v["marker"].clone()),
        (json!(1), Value::Null),
        "#{i}"
      );
      let (_, v) = get_json_host(&c, &srv, "localhost", "/").await;
      assert_eq!(
        (v["count"].clone(), v["marker"].clone()),
        (json!(1), Value::Null),
        "#{i}"
      );
    }
    srv.stop_cleanly().await;
  })
  .await;
}

// ---------------------------------------------------------------------------------------------
// Graceful shutdown
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_several_workers_finishes_requests_in_flight_then_exits_0() {
  within(60, async {
    let mut srv = serve(config_cmd("routing.toml", 2));
    let c = client();
    // Several warm workers.
    for (host, path) in [("a.example.org", "/"), ("example.net", "/hello")] {
      let (status, _) = get_host(&c, &srv, host, path).await;
      assert_eq!(status, 200);
    }
    let slow = |url: String, host: &'static str| {
      tokio::spawn(async move {
        let r = client().get(url).header("host", host).send().await?;
        let status = r.status().as_u16();
        r.text().await.map(|t| (status, t))
      })
    };
    let api = slow(srv.url("/slow?ms=1500"), "api.example.com");
    let stat = slow(srv.url("/static/slow?ms=1000"), "cdn.test");
    srv.wait_for_log_lines(&["slow-started api"], 1, 20).await;
    srv
      .wait_for_log_lines(&["slow-started static"], 1, 20)
      .await;
    srv.signal("TERM");
    let (status, body) = deadline(20, "in-flight request to api", api)
      .await
      .unwrap()
      .expect("the in-flight request must complete, not be cut off");
    assert_eq!((status, body.as_str()), (200, "slow done api"));
    let (status, body) = deadline(20, "in-flight request to static", stat)
      .await
      .unwrap()
      .expect("the in-flight request must complete, not be cut off");
    assert_eq!((status, body.as_str()), (200, "slow done static"));
    srv.assert_clean_exit(20, "SIGTERM").await;
  })
  .await;
}

// ---------------------------------------------------------------------------------------------
// Many workers
// ---------------------------------------------------------------------------------------------

/// More workers than tokio's cooperative budget allows channel reads in one task (128): all are
/// validated at start-up and each answers on its own route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_workers_start_and_route() {
  let dir = scratch_dir("many-workers");
  let mut toml = String::from("[engine]\nmax_isolates = 50\n");
  for i in 0..300 {
    std::fs::write(
      dir.join(format!("w{i}.js")),
      format!("export default {{ fetch() {{ return new Response(\"worker {i}\"); }} }};\n"),
    )
    .unwrap();
    toml.push_str(&format!(
      "[[workers]]\nname = \"w{i}\"\nmain = \"w{i}.js\"\nroutes = [\"*/w/{i}\"]\n"
    ));
  }
  let path = dir.join("runtime.toml");
  std::fs::write(&path, toml).unwrap();
  let srv = serve(scratch_config_cmd(&path));
  let c = client();
  within(60, async {
    for i in [0, 127, 128, 129, 200, 299, 5, 128] {
      let (status, body) = get_host(&c, &srv, "example.com", &format!("/w/{i}")).await;
      assert_eq!(
        (status, body.as_str()),
        (200, format!("worker {i}").as_str())
      );
    }
  })
  .await;
}

// ---------------------------------------------------------------------------------------------
// [engine] max_memory_mb
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_memory_mb_evicts_the_least_recently_used_workers() {
  within(60, async {
    // A 90 MiB budget, one thread, workers that hold 32 MiB each once grown: two fit.
    let mut srv = serve(config_cmd("memory.toml", 1));
    let c = client();
    let expect = |v: &Value, name: &str, count: u64, held: u64| {
      assert_eq!(v["name"], json!(name), "{v}");
      assert_eq!(v["count"], json!(count), "{name}: {v}");
      assert_eq!(v["held_mib"], json!(held), "{name}: {v}");
    };
    expect(
      &get_json_host(&c, &srv, "a.test", "/grow").await.1,
      "A",
      1,
      32,
    );
    expect(
      &get_json_host(&c, &srv, "b.test", "/grow").await.1,
      "B",
      1,
      32,
    );
    // A is now the most recently used; A and B fit the budget.
    expect(&get_json_host(&c, &srv, "a.test", "/").await.1, "A", 2, 32);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
      srv.log_lines_with(&["evicted", "max_memory_mb"]).is_empty(),
      "nothing should be evicted while under the budget:\n{}",
      srv.stderr()
    );

    // C grows past the budget: B, the least recently used, goes.
    expect(
      &get_json_host(&c, &srv, "c.test", "/grow").await.1,
      "C",
      1,
      32,
    );
    srv
      .wait_for_log_lines(&["evicted", "max_memory_mb", "worker=B"], 1, 10)
      .await;
    expect(&get_json_host(&c, &srv, "a.test", "/").await.1, "A", 3, 32);
    expect(&get_json_host(&c, &srv, "c.test", "/").await.1, "C", 2, 32);
    // B comes back with a fresh isolate.
    expect(&get_json_host(&c, &srv, "b.test", "/").await.1, "B", 1, 0);
    assert!(
      srv.log_lines_with(&["evicted", "worker=A"]).is_empty(),
      "{}",
      srv.stderr()
    );
    assert!(
      srv.log_lines_with(&["evicted", "worker=C"]).is_empty(),
      "{}",
      srv.stderr()
    );
    srv.assert_alive();
    srv.stop_cleanly().await;
  })
  .await;
}
