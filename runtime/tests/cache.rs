//! The Cache API (`caches`, `Cache`), through the real `runtime serve --config` binary: every
//! rule against both stores, the in-process one and a real `redis-server` each test starts on a
//! free loopback port (`common/redis.rs`). Workers `a` and `b` both run
//! `tests/fixtures/cache/probe.js`, which drives the Cache API from HTTP requests.

mod common;

use std::time::{Duration, Instant};

use common::redis::Redis;
use common::*;
use serde_json::{json, Value};

struct Env {
  server: Server,
  redis: Option<Redis>,
  c: reqwest::Client,
}

/// A server with workers `a` and `b` (routes `*/a/*`, `*/b/*`), the cache in memory or in a
/// fresh Redis, and `extra` lines in `[cache]`.
fn start(redis: bool, extra: &str) -> Env {
  let redis = redis.then(Redis::start_new);
  let store = redis.as_ref().map(|r| r.url(0));
  start_with(redis, store.as_deref(), extra, &[])
}

fn start_with(redis: Option<Redis>, store: Option<&str>, extra: &str, args: &[&str]) -> Env {
  let dir = scratch_dir("cache");
  let probe = fixture("cache/probe.js");
  let store = store
    .map(|url| format!("store = \"{url}\"\n"))
    .unwrap_or_default();
  // `add` fetches from this very server, on loopback: allowed here (a config's default is
  // "public").
  let config = format!(
    "[engine]\noutbound = [\"local\"]\n[cache]\n{store}{extra}\n\
     [[workers]]\nname = \"a\"\nmain = \"{p}\"\nroutes = [\"*/a/*\"]\n\
     [[workers]]\nname = \"b\"\nmain = \"{p}\"\nroutes = [\"*/b/*\"]\n",
    p = probe.display()
  );
  let path = dir.join("runtime.toml");
  std::fs::write(&path, config).unwrap();
  let mut cmd = serve_config_cmd(&path);
  cmd.args(args);
  Env {
    server: serve(cmd),
    redis,
    c: client(),
  }
}

impl Env {
  fn op(&self, worker: &str, op: &str) -> String {
    self.server.url(&format!("/{worker}/{op}"))
  }

  /// Puts `body` (streamed from this request) for `key` with response headers `res`.
  async fn put(&self, worker: &str, key: &str, res: &[(&str, &str)], body: &str) -> (u16, Value) {
    self
      .put_q(worker, &[("url", key)], res, body.to_string())
      .await
  }

  async fn put_q(
    &self,
    worker: &str,
    query: &[(&str, &str)],
    res: &[(&str, &str)],
    body: String,
  ) -> (u16, Value) {
    let mut rb = self.c.post(self.op(worker, "put")).query(query).body(body);
    for (n, v) in res {
      rb = rb.header(format!("x-res-{n}"), *v);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
  }

  /// Matches `key` with request headers `req` and extra query pairs.
  async fn matched(
    &self,
    worker: &str,
    key: &str,
    req: &[(&str, &str)],
    query: &[(&str, &str)],
  ) -> reqwest::Response {
    let mut rb = self
      .c
      .get(self.op(worker, "match"))
      .query(&[("url", key)])
      .query(query);
    for (n, v) in req {
      rb = rb.header(format!("x-req-{n}"), *v);
    }
    rb.send().await.unwrap()
  }

  /// The body of a hit, or None on a miss.
  async fn hit(&self, worker: &str, key: &str) -> Option<String> {
    let r = self.matched(worker, key, &[], &[]).await;
    if r.headers().get("x-probe").is_some() {
      return None;
    }
    assert_eq!(r.status(), 200);
    Some(r.text().await.unwrap())
  }

  async fn json(&self, worker: &str, op: &str, query: &[(&str, &str)]) -> (u16, Value) {
    let r = self
      .c
      .get(self.op(worker, op))
      .query(query)
      .send()
      .await
      .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
  }
}

const K: &str = "https://example.com/thing";

/// Each rule, once per store: `<name>_memory` and `<name>_redis`.
macro_rules! both_stores {
  ($($name:ident),* $(,)?) => {
    mod memory {
      $(
        #[tokio::test(flavor = "multi_thread")]
        async fn $name() {
          let env = super::start(false, "");
          super::within(60, super::$name(&env)).await;
        }
      )*
    }
    mod redis {
      $(
        #[tokio::test(flavor = "multi_thread")]
        async fn $name() {
          let env = super::start(true, "");
          super::within(60, super::$name(&env)).await;
        }
      )*
    }
  };
}

both_stores!(
  put_then_match_streams_the_body,
  freshness_from_cache_control_and_expires,
  put_rejects_what_workers_rejects,
  set_cookie_only_when_private,
  conditional_requests_get_304,
  range_requests_get_206,
  only_get_unless_ignore_method,
  cache_storage_and_keys,
  add_and_add_all_fetch,
  vary_is_honoured,
  workers_cannot_reach_each_others_caches,
  a_put_on_one_thread_is_a_hit_on_another,
);

async fn put_then_match_streams_the_body(env: &Env) {
  let body: String = (0..200_000)
    .map(|i| char::from(b'a' + (i % 26) as u8))
    .collect();
  let (status, v) = env
    .put(
      "a",
      K,
      &[
        ("cache-control", "max-age=600"),
        ("content-type", "text/x-test"),
      ],
      &body,
    )
    .await;
  assert_eq!((status, &v), (200, &json!({"ok": true})));
  let r = env.matched("a", K, &[], &[]).await;
  assert_eq!(r.status(), 200);
  assert_eq!(r.headers()["content-type"], "text/x-test");
  assert_eq!(r.headers()["cf-cache-status"], "HIT");
  assert_eq!(
    r.headers()["content-length"],
    body.len().to_string().as_str()
  );
  assert_eq!(r.text().await.unwrap(), body);
  // A fragment is not part of the key; another URL is another key.
  assert_eq!(
    env.hit("a", &format!("{K}#frag")).await.as_deref(),
    Some(body.as_str())
  );
  assert_eq!(env.hit("a", "https://example.com/other").await, None);
  // Overwritten by a second put.
  env
    .put("a", K, &[("cache-control", "max-age=600")], "v2")
    .await;
  assert_eq!(env.hit("a", K).await.as_deref(), Some("v2"));
  // An empty body.
  env.put("a", "https://example.com/empty", &[], "").await;
  assert_eq!(
    env.hit("a", "https://example.com/empty").await.as_deref(),
    Some("")
  );
}

async fn freshness_from_cache_control_and_expires(env: &Env) {
  let put = |key: &'static str, headers: Vec<(&'static str, String)>| async move {
    let h: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let (status, _) = env.put("a", key, &h, key).await;
    assert_eq!(status, 200, "{key}");
  };
  let later = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(600));
  let past = httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(600));
  put(
    "https://x/max-age",
    vec![("cache-control", "max-age=1".into())],
  )
  .await;
  put(
    "https://x/s-maxage",
    vec![("cache-control", "max-age=600, s-maxage=1".into())],
  )
  .await;
  put("https://x/expires", vec![("expires", later)]).await;
  put("https://x/expired", vec![("expires", past)]).await;
  put("https://x/expires-0", vec![("expires", "0".into())]).await;
  put(
    "https://x/no-store",
    vec![("cache-control", "no-store".into())],
  )
  .await;
  put(
    "https://x/private",
    vec![("cache-control", "private, max-age=600".into())],
  )
  .await;
  put(
    "https://x/no-cache",
    vec![("cache-control", "no-cache".into())],
  )
  .await;
  put(
    "https://x/max-age-0",
    vec![("cache-control", "max-age=0".into())],
  )
  .await;
  put("https://x/default", vec![]).await;
  for key in [
    "https://x/max-age",
    "https://x/s-maxage",
    "https://x/expires",
    "https://x/default",
  ] {
    assert_eq!(
      env.hit("a", key).await.as_deref(),
      Some(key),
      "{key} is fresh"
    );
  }
  for key in [
    "https://x/expired",
    "https://x/expires-0",
    "https://x/no-store",
    "https://x/private",
    "https://x/no-cache",
    "https://x/max-age-0",
  ] {
    assert_eq!(env.hit("a", key).await, None, "{key} was not stored");
  }
  // A status with no default TTL is stored only with an explicit one.
  env
    .put_q(
      "a",
      &[("url", "https://x/500"), ("status", "500")],
      &[],
      "e".into(),
    )
    .await;
  assert_eq!(env.hit("a", "https://x/500").await, None);
  env
    .put_q(
      "a",
      &[("url", "https://x/500-explicit"), ("status", "500")],
      &[("cache-control", "max-age=60")],
      "e".into(),
    )
    .await;
  assert!(env
    .matched("a", "https://x/500-explicit", &[], &[])
    .await
    .headers()
    .get("x-probe")
    .is_none());
  // A 304 is accepted and dropped.
  let (status, _) = env
    .put_q(
      "a",
      &[("url", "https://x/304"), ("status", "304")],
      &[],
      String::new(),
    )
    .await;
  assert_eq!(status, 200);
  assert_eq!(env.hit("a", "https://x/304").await, None);
  // max-age=1 and s-maxage=1 go stale.
  tokio::time::sleep(Duration::from_millis(1300)).await;
  assert_eq!(env.hit("a", "https://x/max-age").await, None);
  assert_eq!(env.hit("a", "https://x/s-maxage").await, None);
  assert!(env.hit("a", "https://x/expires").await.is_some());
  // Stale entries are not listed.
  let (_, keys) = env.json("a", "keys", &[]).await;
  assert!(
    !keys
      .as_array()
      .unwrap()
      .contains(&json!("https://x/max-age")),
    "{keys}"
  );
}

async fn put_rejects_what_workers_rejects(env: &Env) {
  let (status, v) = env
    .put_q("a", &[("url", K), ("method", "POST")], &[], "x".into())
    .await;
  assert_eq!(status, 500);
  assert_eq!(v["name"], "TypeError");
  assert!(
    v["error"]
      .as_str()
      .unwrap()
      .contains("Cannot cache response to non-GET request."),
    "{v}"
  );
  let (status, v) = env
    .put_q(
      "a",
      &[("url", K), ("status", "206")],
      &[("content-range", "bytes 0-0/10")],
      "x".into(),
    )
    .await;
  assert_eq!(status, 500);
  assert!(
    v["error"].as_str().unwrap().contains("206 Partial Content"),
    "{v}"
  );
  let (status, v) = env.put("a", K, &[("vary", "*")], "x").await;
  assert_eq!(status, 500);
  assert!(v["error"].as_str().unwrap().contains("Vary: *"), "{v}");
  let (status, v) = env
    .put_q("a", &[("url", "ftp://example.com/x")], &[], "x".into())
    .await;
  assert_eq!(status, 500, "{v}");
  assert_eq!(env.hit("a", K).await, None);
}

async fn set_cookie_only_when_private(env: &Env) {
  let (status, v) = env
    .put(
      "a",
      K,
      &[("set-cookie", "sid=1"), ("cache-control", "max-age=60")],
      "x",
    )
    .await;
  assert_eq!(status, 500);
  assert_eq!(v["name"], "TypeError");
  assert!(v["error"].as_str().unwrap().contains("Set-Cookie"), "{v}");
  assert_eq!(env.hit("a", K).await, None);
  let (status, _) = env
    .put(
      "a",
      K,
      &[
        ("set-cookie", "sid=1"),
        ("cache-control", "private=Set-Cookie, max-age=60"),
      ],
      "x",
    )
    .await;
  assert_eq!(status, 200);
  let r = env.matched("a", K, &[], &[]).await;
  assert_eq!(r.status(), 200);
  assert!(
    r.headers().get("set-cookie").is_none(),
    "the cookie is stripped"
  );
  assert_eq!(r.text().await.unwrap(), "x");
}

async fn conditional_requests_get_304(env: &Env) {
  let modified = "Wed, 21 Oct 2015 07:28:00 GMT";
  env
    .put(
      "a",
      K,
      &[
        ("cache-control", "max-age=600"),
        ("etag", "\"v1\""),
        ("last-modified", modified),
      ],
      "body",
    )
    .await;
  let r = env
    .matched("a", K, &[("if-none-match", "\"v1\"")], &[])
    .await;
  assert_eq!(r.status(), 304);
  assert_eq!(r.headers()["etag"], "\"v1\"");
  assert_eq!(r.text().await.unwrap(), "");
  let r = env
    .matched("a", K, &[("if-none-match", "W/\"v0\", W/\"v1\"")], &[])
    .await;
  assert_eq!(r.status(), 304);
  let r = env
    .matched("a", K, &[("if-none-match", "\"v2\"")], &[])
    .await;
  assert_eq!(r.status(), 200);
  assert_eq!(r.text().await.unwrap(), "body");
  let r = env
    .matched(
      "a",
      K,
      &[("if-modified-since", "Thu, 22 Oct 2015 07:28:00 GMT")],
      &[],
    )
    .await;
  assert_eq!(r.status(), 304);
  let r = env
    .matched(
      "a",
      K,
      &[("if-modified-since", "Tue, 20 Oct 2015 07:28:00 GMT")],
      &[],
    )
    .await;
  assert_eq!(r.status(), 200);
  // If-None-Match wins over If-Modified-Since.
  let r = env
    .matched(
      "a",
      K,
      &[
        ("if-none-match", "\"v2\""),
        ("if-modified-since", "Thu, 22 Oct 2015 07:28:00 GMT"),
      ],
      &[],
    )
    .await;
  assert_eq!(r.status(), 200);
}

async fn range_requests_get_206(env: &Env) {
  env
    .put("a", K, &[("cache-control", "max-age=600")], "0123456789")
    .await;
  let r = env.matched("a", K, &[("range", "bytes=2-5")], &[]).await;
  assert_eq!(r.status(), 206);
  assert_eq!(r.headers()["content-range"], "bytes 2-5/10");
  assert_eq!(r.headers()["content-length"], "4");
  assert_eq!(r.text().await.unwrap(), "2345");
  let r = env.matched("a", K, &[("range", "bytes=7-")], &[]).await;
  assert_eq!(r.status(), 206);
  assert_eq!(r.text().await.unwrap(), "789");
  let r = env.matched("a", K, &[("range", "bytes=-2")], &[]).await;
  assert_eq!(r.status(), 206);
  assert_eq!(r.headers()["content-range"], "bytes 8-9/10");
  assert_eq!(r.text().await.unwrap(), "89");
  let r = env.matched("a", K, &[("range", "bytes=20-")], &[]).await;
  assert_eq!(r.status(), 416);
  assert_eq!(r.headers()["content-range"], "bytes */10");
  // Several ranges: the whole response.
  let r = env
    .matched("a", K, &[("range", "bytes=0-1,4-5")], &[])
    .await;
  assert_eq!(r.status(), 200);
  assert_eq!(r.text().await.unwrap(), "0123456789");
}

async fn only_get_unless_ignore_method(env: &Env) {
  env
    .put("a", K, &[("cache-control", "max-age=600")], "x")
    .await;
  let r = env.matched("a", K, &[], &[("method", "HEAD")]).await;
  assert_eq!(r.headers()["x-probe"], "miss");
  let r = env.matched("a", K, &[], &[("method", "POST")]).await;
  assert_eq!(r.headers()["x-probe"], "miss");
  let r = env
    .matched("a", K, &[], &[("method", "POST"), ("ignoreMethod", "1")])
    .await;
  assert_eq!(r.status(), 200);
  assert_eq!(r.text().await.unwrap(), "x");
  let (_, v) = env
    .json("a", "delete", &[("url", K), ("method", "POST")])
    .await;
  assert_eq!(v, json!({"deleted": false}));
  let (_, v) = env
    .json(
      "a",
      "delete",
      &[("url", K), ("method", "POST"), ("ignoreMethod", "1")],
    )
    .await;
  assert_eq!(v, json!({"deleted": true}));
  assert_eq!(env.hit("a", K).await, None);
  let (_, v) = env.json("a", "delete", &[("url", K)]).await;
  assert_eq!(v, json!({"deleted": false}));
}

async fn cache_storage_and_keys(env: &Env) {
  let (_, v) = env.json("a", "globals", &[]).await;
  assert_eq!(
    v,
    json!({"caches": "[object CacheStorage]", "cache": "[object Cache]", "Cache": "function",
      "CacheStorage": "function", "newCache": "TypeError", "sameDefault": true, "ops": "undefined"})
  );
  let (_, v) = env.json("a", "names", &[]).await;
  assert_eq!(v, json!([]));
  let (_, v) = env.json("a", "has", &[("name", "one")]).await;
  assert_eq!(v, json!({"has": false}));
  env.json("a", "open", &[("cache", "one")]).await;
  env.json("a", "open", &[("cache", "two")]).await;
  let (_, v) = env.json("a", "names", &[]).await;
  assert_eq!(v, json!(["one", "two"]));
  let (_, v) = env.json("a", "has", &[("name", "one")]).await;
  assert_eq!(v, json!({"has": true}));
  // Named caches and the default one are separate.
  env
    .put_q(
      "a",
      &[("url", "https://x/1"), ("cache", "one")],
      &[],
      "one-1".into(),
    )
    .await;
  env
    .put_q(
      "a",
      &[("url", "https://x/2"), ("cache", "one")],
      &[],
      "one-2".into(),
    )
    .await;
  env.put("a", "https://x/1", &[], "default-1").await;
  let (_, v) = env.json("a", "keys", &[("cache", "one")]).await;
  assert_eq!(v, json!(["https://x/1", "https://x/2"]));
  let (_, v) = env
    .json("a", "keys", &[("cache", "one"), ("url", "https://x/2")])
    .await;
  assert_eq!(v, json!(["https://x/2"]));
  let (_, v) = env.json("a", "keys", &[]).await;
  assert_eq!(v, json!(["https://x/1"]));
  let (_, v) = env.json("a", "matchAll", &[("cache", "one")]).await;
  assert_eq!(v, json!(["one-1", "one-2"]));
  let (_, v) = env
    .json("a", "matchAll", &[("cache", "one"), ("url", "https://x/1")])
    .await;
  assert_eq!(v, json!(["one-1"]));
  let (_, v) = env.json("a", "keys", &[("cache", "two")]).await;
  assert_eq!(v, json!([]));
  // Deleting a cache deletes its entries.
  let (_, v) = env.json("a", "dropCache", &[("name", "one")]).await;
  assert_eq!(v, json!({"deleted": true}));
  let (_, v) = env.json("a", "dropCache", &[("name", "one")]).await;
  assert_eq!(v, json!({"deleted": false}));
  let (_, v) = env.json("a", "names", &[]).await;
  assert_eq!(v, json!(["two"]));
  let (_, v) = env.json("a", "keys", &[("cache", "one")]).await;
  assert_eq!(v, json!([]));
  assert_eq!(
    env.hit("a", "https://x/1").await.as_deref(),
    Some("default-1")
  );
}

async fn add_and_add_all_fetch(env: &Env) {
  let origin = |q: &str| env.server.url(&format!("/a/origin?{q}"));
  let (status, v) = env.json("a", "add", &[("url", &origin("n=1"))]).await;
  assert_eq!((status, v), (200, json!({"ok": true})));
  assert_eq!(
    env.hit("a", &origin("n=1")).await.as_deref(),
    Some("origin ?n=1")
  );
  let (status, v) = env
    .json(
      "a",
      "addAll",
      &[("url", &origin("n=2")), ("url", &origin("n=3"))],
    )
    .await;
  assert_eq!((status, v), (200, json!({"ok": true})));
  assert_eq!(
    env.hit("a", &origin("n=3")).await.as_deref(),
    Some("origin ?n=3")
  );
  // A response that is not ok fails add, and nothing is stored.
  let (status, v) = env
    .json("a", "add", &[("url", &origin("status=404"))])
    .await;
  assert_eq!(status, 500);
  assert_eq!(v["name"], "TypeError");
  assert_eq!(env.hit("a", &origin("status=404")).await, None);
}

async fn vary_is_honoured(env: &Env) {
  let mut rb = env
    .c
    .post(env.op("a", "put"))
    .query(&[("url", K)])
    .header("x-req-accept-language", "en")
    .header("x-res-vary", "Accept-Language")
    .header("x-res-cache-control", "max-age=60")
    .body("english");
  rb = rb.header("x-res-content-language", "en");
  assert_eq!(rb.send().await.unwrap().status(), 200);
  let r = env.matched("a", K, &[("accept-language", "en")], &[]).await;
  assert_eq!(r.text().await.unwrap(), "english");
  let r = env.matched("a", K, &[("accept-language", "fr")], &[]).await;
  assert_eq!(r.headers()["x-probe"], "miss");
  let r = env.matched("a", K, &[], &[]).await;
  assert_eq!(r.headers()["x-probe"], "miss");
}

async fn workers_cannot_reach_each_others_caches(env: &Env) {
  env
    .put("a", K, &[("cache-control", "max-age=600")], "a's")
    .await;
  env.json("a", "open", &[("cache", "private-a")]).await;
  env
    .put_q(
      "a",
      &[("url", K), ("cache", "private-a")],
      &[],
      "a's named".into(),
    )
    .await;
  assert_eq!(env.hit("b", K).await, None);
  let (_, v) = env.json("b", "names", &[]).await;
  assert_eq!(v, json!([]));
  let (_, v) = env.json("b", "has", &[("name", "private-a")]).await;
  assert_eq!(v, json!({"has": false}));
  // b opening a cache of the same name gets its own, empty one.
  let (_, v) = env.json("b", "keys", &[("cache", "private-a")]).await;
  assert_eq!(v, json!([]));
  let (_, v) = env.json("a", "keys", &[("cache", "private-a")]).await;
  assert_eq!(v, json!([K]));
  // b's own put of the same key does not touch a's.
  env
    .put("b", K, &[("cache-control", "max-age=600")], "b's")
    .await;
  assert_eq!(env.hit("a", K).await.as_deref(), Some("a's"));
  assert_eq!(env.hit("b", K).await.as_deref(), Some("b's"));
  let (_, v) = env.json("b", "delete", &[("url", K)]).await;
  assert_eq!(v, json!({"deleted": true}));
  assert_eq!(env.hit("a", K).await.as_deref(), Some("a's"));
}

async fn a_put_on_one_thread_is_a_hit_on_another(env: &Env) {
  env
    .put("a", K, &[("cache-control", "max-age=600")], "shared")
    .await;
  // Fresh connections land on the server's threads (SO_REUSEPORT) in turn.
  for _ in 0..16 {
    let c = client();
    let r = c
      .get(env.op("a", "match"))
      .query(&[("url", K)])
      .send()
      .await
      .unwrap();
    assert_eq!(r.text().await.unwrap(), "shared");
  }
}

#[tokio::test(flavor = "multi_thread")]
async fn shared_caches_are_shared_by_workers() {
  for redis in [false, true] {
    let env = start(redis, "shared = true\n");
    within(30, async {
      env
        .put("a", K, &[("cache-control", "max-age=600")], "for all")
        .await;
      assert_eq!(env.hit("b", K).await.as_deref(), Some("for all"));
    })
    .await;
  }
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_store_evicts_least_recently_used_by_bytes() {
  let env = start(false, "memory_mb = 1\n");
  within(60, async {
    let body = "x".repeat(300 * 1024);
    for key in ["https://x/a", "https://x/b", "https://x/c"] {
      let (status, _) = env
        .put("a", key, &[("cache-control", "max-age=600")], &body)
        .await;
      assert_eq!(status, 200);
    }
    // a is used again, so b is now the least recently used.
    assert!(env.hit("a", "https://x/a").await.is_some());
    env
      .put(
        "a",
        "https://x/d",
        &[("cache-control", "max-age=600")],
        &body,
      )
      .await;
    assert_eq!(env.hit("a", "https://x/b").await, None, "b was evicted");
    for key in ["https://x/a", "https://x/c", "https://x/d"] {
      assert_eq!(
        env.hit("a", key).await.map(|b| b.len()),
        Some(body.len()),
        "{key}"
      );
    }
    // Larger than the whole store: rejected, with a clear error.
    let (status, v) = env
      .put(
        "a",
        "https://x/huge",
        &[("cache-control", "max-age=600")],
        &"y".repeat(1100 * 1024),
      )
      .await;
    assert_eq!(status, 500);
    assert!(v["error"].as_str().unwrap().contains("too large"), "{v}");
    assert!(env.hit("a", "https://x/c").await.is_some());
  })
  .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_down_gives_a_clear_error_and_the_cache_recovers() {
  let mut env = start(true, "");
  within(90, async {
    env
      .put("a", K, &[("cache-control", "max-age=600")], "before")
      .await;
    assert_eq!(env.hit("a", K).await.as_deref(), Some("before"));
    env.redis.as_mut().unwrap().stop();
    let started = Instant::now();
    let (_, v) = env.json("a", "timed", &[("url", K)]).await;
    assert_eq!(v["ok"], false, "{v}");
    let error = v["error"].as_str().unwrap();
    assert!(error.contains("Redis"), "{error}");
    assert!(
      started.elapsed() < Duration::from_secs(5),
      "took {:?}",
      started.elapsed()
    );
    // A put fails the same way; the server keeps serving.
    let (status, v) = env.put("a", K, &[], "during").await;
    assert_eq!(status, 500);
    assert!(v["error"].as_str().unwrap().contains("Redis"), "{v}");
    let (status, _) = env.json("b", "globals", &[]).await;
    assert_eq!(status, 200);
    env.redis.as_mut().unwrap().start();
    // Back (the restarted Redis is empty): puts and matches work again.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
      let (status, _) = env
        .put("a", K, &[("cache-control", "max-age=600")], "after")
        .await;
      if status == 200 {
        break;
      }
      assert!(Instant::now() < deadline, "the cache did not recover");
      tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(env.hit("a", K).await.as_deref(), Some("after"));
  })
  .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_redis_rejects_within_bounded_time() {
  // A port nothing listens on.
  let port = std::net::TcpListener::bind("127.0.0.1:0")
    .unwrap()
    .local_addr()
    .unwrap()
    .port();
  let env = start_with(None, Some(&format!("redis://127.0.0.1:{port}/0")), "", &[]);
  within(30, async {
    let (_, v) = env.json("a", "timed", &[("url", K)]).await;
    assert_eq!(v["ok"], false, "{v}");
    assert!(v["error"].as_str().unwrap().contains("Redis"), "{v}");
    assert!(v["ms"].as_u64().unwrap() < 5000, "{v}");
  })
  .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_processes_share_one_redis() {
  let redis = Redis::start_new();
  let url = redis.url(0);
  let one = start_with(None, Some(&url), "", &[]);
  let two = start_with(None, Some(&url), "", &[]);
  within(30, async {
    one
      .put("a", K, &[("cache-control", "max-age=600")], "from one")
      .await;
    assert_eq!(two.hit("a", K).await.as_deref(), Some("from one"));
    let (_, v) = two.json("a", "delete", &[("url", K)]).await;
    assert_eq!(v, json!({"deleted": true}));
    assert_eq!(one.hit("a", K).await, None);
  })
  .await;
  drop(redis);
}

#[test]
fn a_bad_store_url_is_an_error_at_start_up() {
  let dir = scratch_dir("cache-bad");
  let path = dir.join("runtime.toml");
  std::fs::write(
    &path,
    format!(
      "[cache]\nstore = \"memcached://x\"\n[[workers]]\nname = \"a\"\nmain = \"{}\"\n",
      fixture("cache/probe.js").display()
    ),
  )
  .unwrap();
  let stderr = serve_fails(serve_config_cmd(&path));
  assert!(stderr.contains("cache.store"), "{stderr}");
}

/// Hono's `cache` middleware (`hono/cache`, bundled from npm): the second request is a hit.
async fn hono_cache_middleware(redis: bool) {
  let redis = redis.then(Redis::start_new);
  let dir = scratch_dir("cache-hono");
  let store = redis
    .as_ref()
    .map(|r| format!("store = \"{}\"\n", r.url(0)))
    .unwrap_or_default();
  let path = dir.join("runtime.toml");
  std::fs::write(
    &path,
    format!(
      "[cache]\n{store}[[workers]]\nname = \"hono\"\nmain = \"{}\"\n",
      fixture("hono-cache.js").display()
    ),
  )
  .unwrap();
  // One thread: `/calls` reads the same isolate's counter.
  let mut cmd = serve_config_cmd(&path);
  cmd.args(["--threads", "1"]);
  let server = serve(cmd);
  let c = client();
  within(30, async {
    let first = get(&c, &server.url("/cached/page")).await;
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("cf-cache-status").is_none());
    assert_eq!(
      first.text().await.unwrap(),
      "rendered /cached/page (call 1)"
    );
    // The put runs in waitUntil, after the response: wait for the hit.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
      let r = get(&c, &server.url("/cached/page")).await;
      let hit = r.headers().get("cf-cache-status").is_some();
      let cache_control = r.headers()["cache-control"].to_str().unwrap().to_string();
      let body = r.text().await.unwrap();
      if hit {
        assert_eq!(body, "rendered /cached/page (call 1)");
        assert_eq!(cache_control, "max-age=60");
        break;
      }
      assert!(Instant::now() < deadline, "never a hit: {body}");
      tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, v) = get_json(&c, &server.url("/calls")).await;
    assert_eq!(v, json!({"calls": 1}));
    let other = get(&c, &server.url("/cached/other")).await;
    assert_eq!(
      other.text().await.unwrap(),
      "rendered /cached/other (call 2)"
    );
  })
  .await;
  drop(redis);
}

#[tokio::test(flavor = "multi_thread")]
async fn hono_cache_middleware_memory() {
  hono_cache_middleware(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hono_cache_middleware_redis() {
  hono_cache_middleware(true).await;
}
