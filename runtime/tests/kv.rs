//! Workers KV namespaces, end to end: `runtime serve --config` with a worker bound to a namespace
//! (tests/fixtures/kv/), against the embedded SQLite store and a real `redis-server` started here
//! (common/redis.rs). Every call and limit (the fixture's /suite), crash safety under SIGKILL,
//! two processes sharing Redis, a Redis outage and its recovery, isolation between workers, and
//! the one-script shorthand `--kv`.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::redis::Redis;
use common::*;
use serde_json::Value;

/// A config serving tests/fixtures/kv/api.js with `env.KV` bound to a namespace on `store`
/// (least TTL 1 s), written into `dir`.
fn api_config(dir: &Path, store: &str) -> PathBuf {
  let config = dir.join("runtime.toml");
  std::fs::write(
    &config,
    format!(
      r#"
[kv.main]
store = "{store}"
min_ttl_seconds = 1

[[workers]]
name = "api"
main = "{main}"
routes = ["*/*"]
kv = {{ KV = "main" }}
limits = {{ cpu_ms = 5000, memory_mb = 512 }}
"#,
      main = fixture("kv/api.js").display()
    ),
  )
  .unwrap();
  config
}

fn serve_config(config: &Path, threads: &str) -> Server {
  let mut cmd = serve_config_cmd(config);
  cmd.args(["--threads", threads]);
  serve(cmd)
}

async fn run_suite(srv: &Server, run: &str) {
  let c = client();
  let (status, body) = get_json(&c, &srv.url(&format!("/suite?run={run}"))).await;
  assert_eq!(status, 200, "{body}");
  let failures = body["failures"].as_array().unwrap();
  assert!(failures.is_empty(), "KV suite failures: {failures:#?}");
  assert!(body["passed"].as_u64().unwrap() >= 66, "{body}");
}

async fn put(c: &reqwest::Client, srv: &Server, key: &str, value: &str) {
  let r = c
    .put(srv.url(&format!("/kv/{key}")))
    .body(value.to_string())
    .send()
    .await
    .unwrap();
  let status = r.status();
  assert_eq!(status, 200, "PUT {key}: {}", r.text().await.unwrap());
}

/// (status, body) of GET /kv/KEY.
async fn read(c: &reqwest::Client, srv: &Server, key: &str) -> (u16, String) {
  get_text(c, &srv.url(&format!("/kv/{key}"))).await
}

#[tokio::test]
async fn kv_api_sqlite() {
  let dir = scratch_dir("kv-sqlite");
  let srv = serve_config(&api_config(&dir, "sqlite:data/main.db"), "2");
  within(120, async {
    run_suite(&srv, "sqlite").await;
    // The store is the file the config names, relative to the config.
    let db = dir.join("data/main.db");
    assert!(db.is_file());
    // Expired rows are swept from the file in the background, not only hidden.
    let start = Instant::now();
    loop {
      let expired: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
          "SELECT count(*) FROM kv WHERE expires IS NOT NULL AND expires <= ?1",
          [std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64],
          |row| row.get(0),
        )
        .unwrap();
      if expired == 0 {
        break;
      }
      assert!(
        start.elapsed() < Duration::from_secs(5),
        "{expired} expired rows not swept"
      );
      tokio::time::sleep(Duration::from_millis(200)).await;
    }
  })
  .await;
}

#[tokio::test]
async fn kv_api_redis() {
  let redis = Redis::start_new();
  let dir = scratch_dir("kv-redis");
  let srv = serve_config(&api_config(&dir, &redis.url(0)), "2");
  within(120, run_suite(&srv, "redis")).await;
}

#[tokio::test]
async fn kv_request_body_streamed_into_a_put() {
  let dir = scratch_dir("kv-stream");
  let srv = serve_config(&api_config(&dir, "sqlite:main.db"), "1");
  let c = client();
  within(60, async {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
      (0..48u8).map(|i| Ok(vec![i; 64 * 1024])).collect();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let r = c
      .post(srv.url("/stream/big"))
      .body(body)
      .send()
      .await
      .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let (status, body) = read(&c, &srv, "big").await;
    assert_eq!(status, 200);
    assert_eq!(body.len(), 48 * 64 * 1024);
  })
  .await;
}

#[tokio::test]
async fn kv_sqlite_acknowledged_writes_survive_sigkill() {
  let dir = scratch_dir("kv-crash");
  let config = api_config(&dir, "sqlite:state/crash.db");
  let c = client();
  let count = 300;
  within(120, async {
    let mut srv = serve_config(&config, "2");
    for i in 0..count {
      put(
        &c,
        &srv,
        &format!("key{i}"),
        &format!("value {i} {}", "x".repeat(i)),
      )
      .await;
    }
    srv.signal("KILL");
    assert!(
      srv.wait_exit(10).await.is_some(),
      "SIGKILL did not end the server"
    );
    let srv = serve_config(&config, "2");
    for i in 0..count {
      let (status, body) = read(&c, &srv, &format!("key{i}")).await;
      assert_eq!(status, 200, "key{i} lost after SIGKILL");
      assert_eq!(body, format!("value {i} {}", "x".repeat(i)));
    }
    let (_, list) = get_json(&c, &srv.url("/list?prefix=key")).await;
    assert_eq!(list["keys"].as_array().unwrap().len(), count);
  })
  .await;
}

#[tokio::test]
async fn kv_redis_two_processes_see_each_others_writes() {
  let redis = Redis::start_new();
  let dir = scratch_dir("kv-two");
  let config = api_config(&dir, &redis.url(3));
  let a = serve_config(&config, "1");
  let b = serve_config(&config, "1");
  let c = client();
  within(60, async {
    for i in 0..20 {
      let key = format!("shared{i}");
      put(&c, &a, &key, &format!("from a {i}")).await;
      // At once: no delay between the write in one process and the read in the other.
      assert_eq!(read(&c, &b, &key).await, (200, format!("from a {i}")));
      put(&c, &b, &key, &format!("from b {i}")).await;
      assert_eq!(read(&c, &a, &key).await, (200, format!("from b {i}")));
    }
    let r = c.delete(b.url("/kv/shared0")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(read(&c, &a, "shared0").await.0, 404);
    let (_, list) = get_json(&c, &a.url("/list?prefix=shared")).await;
    assert_eq!(list["keys"].as_array().unwrap().len(), 19, "{list}");
  })
  .await;
}

#[tokio::test]
async fn kv_redis_outage_fails_fast_and_recovers() {
  let mut redis = Redis::start_new();
  let dir = scratch_dir("kv-outage");
  let srv = serve_config(&api_config(&dir, &redis.url(0)), "1");
  let c = client();
  within(120, async {
    put(&c, &srv, "before", "up").await;

    // Redis down: a clear error in bounded time, and the server keeps serving.
    redis.stop();
    for op in ["get", "put"] {
      let started = Instant::now();
      let r = if op == "get" {
        c.get(srv.url("/kv/before")).send().await.unwrap()
      } else {
        c.put(srv.url("/kv/during")).body("x").send().await.unwrap()
      };
      assert_eq!(r.status(), 503, "{op} while Redis is down");
      let body: Value = r.json().await.unwrap();
      let error = body["error"].as_str().unwrap();
      assert!(
        error.contains("Redis at redis://127.0.0.1:"),
        "{op}: {error}"
      );
      assert!(
        started.elapsed() < Duration::from_secs(8),
        "{op} took {:?}",
        started.elapsed()
      );
    }
    assert_eq!(get_text(&c, &srv.url("/ping")).await, (200, "pong".into()));

    // Back up (empty: it keeps nothing on disk): the next operations work.
    redis.start();
    let start = Instant::now();
    loop {
      let r = c
        .put(srv.url("/kv/after"))
        .body("back")
        .send()
        .await
        .unwrap();
      if r.status() == 200 {
        break;
      }
      assert!(
        start.elapsed() < Duration::from_secs(20),
        "not recovered 20s after Redis came back: {}",
        r.text().await.unwrap()
      );
      tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(read(&c, &srv, "after").await, (200, "back".into()));

    // A Redis that accepts but never answers (stopped with SIGSTOP): a timeout, not a hang.
    redis.pause();
    let started = Instant::now();
    let r = c.get(srv.url("/kv/after")).send().await.unwrap();
    let waited = started.elapsed();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    let error = body["error"].as_str().unwrap();
    assert!(
      error.contains("Redis at redis://127.0.0.1:")
        && (error.contains("timed out") || error.contains("no answer within")),
      "{body}"
    );
    assert!(waited < Duration::from_secs(8), "took {waited:?}");
    // Other requests are served meanwhile.
    let pending = tokio::spawn({
      let c = c.clone();
      let url = srv.url("/kv/after");
      async move { c.get(url).send().await.unwrap().status() }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pinged = Instant::now();
    assert_eq!(get_text(&c, &srv.url("/ping")).await.0, 200);
    assert!(pinged.elapsed() < Duration::from_secs(1));
    assert_eq!(pending.await.unwrap(), 503);
    redis.resume();
    let start = Instant::now();
    while read(&c, &srv, "after").await != (200, "back".into()) {
      assert!(
        start.elapsed() < Duration::from_secs(20),
        "not recovered after SIGCONT"
      );
      tokio::time::sleep(Duration::from_millis(250)).await;
    }
  })
  .await;
}

#[tokio::test]
async fn kv_worker_reaches_only_its_own_namespaces() {
  let dir = scratch_dir("kv-isolation");
  let config = dir.join("runtime.toml");
  let f = |name: &str| fixture(&format!("kv/{name}")).display().to_string();
  std::fs::write(
    &config,
    format!(
      r#"
[kv.a]
store = "sqlite:a.db"
[kv.b]
store = "sqlite:b.db"

[[workers]]
name = "owner"
main = "{owner}"
routes = ["*/a/*"]
kv = {{ MINE = "a" }}

[[workers]]
name = "intruder"
main = "{intruder}"
routes = ["*/b/*"]
kv = {{ MINE = "b" }}

[[workers]]
name = "sw"
main = "{sw}"
routes = ["*/sw/*"]
kv = {{ SHARED = "a" }}
vars = {{ OTHER = "var" }}
"#,
      owner = f("owner.js"),
      intruder = f("intruder.js"),
      sw = f("sw.js"),
    ),
  )
  .unwrap();
  let srv = serve_config(&config, "1");
  let c = client();
  within(60, async {
    let r = c
      .put(srv.url("/a/secret"))
      .body("s3cret")
      .send()
      .await
      .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
      get_text(&c, &srv.url("/a/secret")).await,
      (200, "s3cret".into())
    );
    let (status, found) = get_json(&c, &srv.url("/b/probe")).await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["env"], serde_json::json!(["MINE"]));
    assert_eq!(found["globals"], serde_json::json!([]));
    assert_eq!(found["secret"], Value::Null);
    assert_eq!(found["listed"], serde_json::json!([]));
    assert_eq!(found["constructed"], "TypeError: Illegal constructor");
    assert_eq!(found["ownKeys"], serde_json::json!([]));
    // Service-worker syntax: the binding is a global, bound to the same namespace as `owner`.
    assert_eq!(
      get_text(&c, &srv.url("/sw/secret")).await,
      (200, "object:s3cret".into())
    );
  })
  .await;
}

#[tokio::test]
async fn kv_config_errors_name_the_namespace() {
  let dir = scratch_dir("kv-config");
  let config = dir.join("runtime.toml");
  let main = fixture("kv/api.js").display().to_string();
  std::fs::write(
    &config,
    format!(
      "[kv.main]\nstore = \"sqlite:x.db\"\n[[workers]]\nname = \"api\"\nmain = \"{main}\"\nkv = {{ KV = \"nope\" }}\n"
    ),
  )
  .unwrap();
  let stderr = serve_fails(serve_config_cmd(&config));
  assert!(stderr.contains("no KV namespace \"nope\""), "{stderr}");
  std::fs::write(
    &config,
    format!(
      "[kv.main]\nstore = \"memcached://x\"\n[[workers]]\nname = \"api\"\nmain = \"{main}\"\nkv = {{ KV = \"main\" }}\n"
    ),
  )
  .unwrap();
  let stderr = serve_fails(serve_config_cmd(&config));
  assert!(stderr.contains("kv.main.store"), "{stderr}");
}

#[tokio::test]
async fn kv_shorthand_keeps_state_in_a_local_folder() {
  let dir = scratch_dir("kv-shorthand");
  let script = fixture("kv/counter.js");
  let start = |extra: &[&str]| {
    let mut cmd = serve_script_cmd(&script);
    cmd.args(["--kv", "COUNTS", "--threads", "1"]).args(extra);
    cmd.current_dir(&dir);
    serve(cmd)
  };
  let c = client();
  within(60, async {
    let srv = start(&[]);
    assert_eq!(get_text(&c, &srv.url("/")).await.1, "1");
    assert_eq!(get_text(&c, &srv.url("/")).await.1, "2");
    drop(srv);
    assert!(dir.join(".runtime-state/kv/COUNTS.sqlite").is_file());
    // Restarted: the state is still there.
    let srv = start(&[]);
    assert_eq!(get_text(&c, &srv.url("/")).await.1, "3");
    drop(srv);
    // --state-dir moves it.
    let srv = start(&["--state-dir", "elsewhere"]);
    assert_eq!(get_text(&c, &srv.url("/")).await.1, "1");
    assert!(dir.join("elsewhere/kv/COUNTS.sqlite").is_file());
  })
  .await;
}

/// A real npm app, unchanged: Hono (tests/fixtures/hono-kv.js) with a KV counter and cookie
/// sessions, on the SQLite store and then on Redis.
#[tokio::test]
async fn kv_hono_app_counter_and_sessions() {
  let redis = Redis::start_new();
  for store in ["sqlite:hono.db".to_string(), redis.url(5)] {
    let dir = scratch_dir("kv-hono");
    let config = dir.join("runtime.toml");
    std::fs::write(
      &config,
      format!(
        "[kv.app]\nstore = \"{store}\"\n[[workers]]\nname = \"hono\"\nmain = \"{}\"\nkv = {{ KV = \"app\" }}\n",
        fixture("hono-kv.js").display()
      ),
    )
    .unwrap();
    let srv = serve_config(&config, "2");
    within(60, async {
      let c = client();
      for n in 1..=3 {
        let (status, body) = get_json(&c, &srv.url("/count/visits")).await;
        assert_eq!(
          (status, body),
          (200, serde_json::json!({"name": "visits", "count": n})),
          "{store}"
        );
      }
      let login = c
        .post(srv.url("/login"))
        .json(&serde_json::json!({"user": "ann"}))
        .send()
        .await
        .unwrap();
      assert_eq!(login.status(), 200);
      let cookie = login.headers()["set-cookie"].to_str().unwrap().to_string();
      let sid = cookie.split(';').next().unwrap().to_string();
      let me = c
        .get(srv.url("/me"))
        .header("cookie", &sid)
        .send()
        .await
        .unwrap();
      assert_eq!(me.status(), 200);
      assert_eq!(
        me.json::<Value>().await.unwrap(),
        serde_json::json!({"user": "ann"})
      );
      let (_, sessions) = get_json(&c, &srv.url("/sessions")).await;
      assert_eq!(sessions, serde_json::json!({"users": ["ann"]}), "{store}");
      let out = c
        .post(srv.url("/logout"))
        .header("cookie", &sid)
        .send()
        .await
        .unwrap();
      assert_eq!(out.status(), 200);
      let me = c
        .get(srv.url("/me"))
        .header("cookie", &sid)
        .send()
        .await
        .unwrap();
      assert_eq!(me.status(), 401);
    })
    .await;
  }
}
