//! End-to-end tests of `runtime serve`: each test starts the real binary on a fixture script
//! (`tests/fixtures/*.js` or `examples/*.js`, port 0) and talks to it over HTTP on 127.0.0.1.
//!
//! Run with `cargo test -p runtime --test serve`. Every test has its own time limit, so a
//! broken engine makes tests fail rather than hang. When a test fails, the server's stderr is
//! printed.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Helpers for these tests (the shared harness is in common/mod.rs)
// ---------------------------------------------------------------------------------------------

fn h2_client() -> reqwest::Client {
  reqwest::Client::builder()
    .no_proxy()
    .http2_prior_knowledge()
    .redirect(reqwest::redirect::Policy::none())
    .timeout(Duration::from_secs(60))
    .build()
    .unwrap()
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
  r.headers()
    .get(name)
    .map(|v| v.to_str().unwrap().to_string())
}

/// A request body fed through a channel, so the test decides when each chunk is sent.
fn channel_body() -> (
  futures::channel::mpsc::Sender<Result<Bytes, std::io::Error>>,
  reqwest::Body,
) {
  let (tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
  (tx, reqwest::Body::wrap_stream(rx))
}

// ----- raw HTTP/1.1 over TCP ------------------------------------------------------------------

struct RawResponse {
  status: u16,
  headers: Vec<(String, String)>,
  body: Vec<u8>,
}

impl RawResponse {
  fn header(&self, name: &str) -> Option<&str> {
    self
      .headers
      .iter()
      .find(|(k, _)| k.eq_ignore_ascii_case(name))
      .map(|(_, v)| v.as_str())
  }
}

struct RawConn {
  s: TcpStream,
  buf: Vec<u8>,
}

impl RawConn {
  async fn connect(port: u16) -> RawConn {
    let s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    RawConn { s, buf: Vec::new() }
  }

  async fn send(&mut self, data: &[u8]) {
    self.s.write_all(data).await.unwrap();
  }

  /// Reads more bytes into the buffer; 0 at EOF.
  async fn fill(&mut self) -> usize {
    let mut chunk = [0u8; 16384];
    let n = self.s.read(&mut chunk).await.unwrap_or(0);
    self.buf.extend_from_slice(&chunk[..n]);
    n
  }

  /// Everything until the peer closes (or an error).
  async fn read_to_end(&mut self) -> Vec<u8> {
    while self.fill().await > 0 {}
    std::mem::take(&mut self.buf)
  }

  async fn read_until(&mut self, pat: &[u8]) -> Vec<u8> {
    loop {
      if let Some(i) = find(&self.buf, pat) {
        let out: Vec<u8> = self.buf.drain(..i + pat.len()).collect();
        return out;
      }
      if self.fill().await == 0 {
        panic!(
          "connection closed while waiting for {:?}; have {:?}",
          String::from_utf8_lossy(pat),
          String::from_utf8_lossy(&self.buf)
        );
      }
    }
  }

  async fn read_exact_n(&mut self, n: usize) -> Vec<u8> {
    while self.buf.len() < n {
      if self.fill().await == 0 {
        panic!(
          "connection closed with {} of {n} body bytes",
          self.buf.len()
        );
      }
    }
    self.buf.drain(..n).collect()
  }

  /// Reads one response; `head_request` means it has no body whatever its headers say.
  async fn read_response(&mut self, head_request: bool) -> RawResponse {
    let head = self.read_until(b"\r\n\r\n").await;
    let head = String::from_utf8(head).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    assert!(
      status_line.starts_with("HTTP/1.1 "),
      "bad status line {status_line:?}"
    );
    let status: u16 = status_line[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
      .filter(|l| !l.is_empty())
      .map(|l| {
        let (k, v) = l.split_once(':').unwrap();
        (k.trim().to_ascii_lowercase(), v.trim().to_string())
      })
      .collect();
    let mut resp = RawResponse {
      status,
      headers,
      body: Vec::new(),
    };
    if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
      return resp;
    }
    if resp
      .header("transfer-encoding")
      .map(|v| v.eq_ignore_ascii_case("chunked"))
      .unwrap_or(false)
    {
      loop {
        let size_line = self.read_until(b"\r\n").await;
        let size_str = String::from_utf8(size_line).unwrap();
        let size = usize::from_str_radix(size_str.trim().split(';').next().unwrap(), 16).unwrap();
        if size == 0 {
          // No trailers expected.
          let end = self.read_until(b"\r\n").await;
          assert_eq!(end, b"\r\n", "unexpected trailers");
          break;
        }
        let data = self.read_exact_n(size).await;
        resp.body.extend_from_slice(&data);
        assert_eq!(self.read_exact_n(2).await, b"\r\n");
      }
    } else if let Some(len) = resp.header("content-length") {
      let len: usize = len.parse().unwrap();
      resp.body = self.read_exact_n(len).await;
    } else {
      resp.body = self.read_to_end().await;
    }
    resp
  }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
  hay.windows(needle.len()).position(|w| w == needle)
}

/// Sends raw bytes on a fresh connection and returns the status of the first response, reading
/// at most `secs` seconds. `None` if the server closed without answering.
async fn raw_status(port: u16, request: &[u8], secs: u64) -> Option<u16> {
  let mut c = RawConn::connect(port).await;
  // The server may answer and close before it has read everything: ignore write errors.
  let _ = c.s.write_all(request).await;
  let got = tokio::time::timeout(Duration::from_secs(secs), async {
    while find(&c.buf, b"\r\n").is_none() {
      if c.fill().await == 0 {
        break;
      }
    }
  })
  .await;
  assert!(
    got.is_ok(),
    "no response within {secs}s (have {:?})",
    String::from_utf8_lossy(&c.buf)
  );
  let line = String::from_utf8_lossy(&c.buf).into_owned();
  if line.is_empty() {
    return None;
  }
  assert!(
    line.starts_with("HTTP/1."),
    "not an HTTP response: {line:?}"
  );
  Some(line[9..12].parse().unwrap())
}

async fn assert_still_serving(srv: &Server, path: &str, expected_body: &str) {
  let (status, body) = deadline(10, "follow-up request", get_text(&client(), &srv.url(path))).await;
  assert_eq!(
    (status, body.as_str()),
    (200, expected_body),
    "the server must keep serving after the previous request"
  );
}

// ---------------------------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------------------------

#[test]
fn cli_help_lists_serve() {
  let out = Command::new(BIN).arg("--help").output().unwrap();
  assert!(out.status.success(), "--help exited with {}", out.status);
  let stdout = String::from_utf8_lossy(&out.stdout);
  assert!(
    stdout.contains("serve"),
    "--help should list the serve command: {stdout}"
  );
}

#[test]
fn cli_version_prints_crate_version() {
  let out = Command::new(BIN).arg("--version").output().unwrap();
  assert!(out.status.success(), "--version exited with {}", out.status);
  let stdout = String::from_utf8_lossy(&out.stdout);
  assert!(
    stdout.contains(env!("CARGO_PKG_VERSION")),
    "--version output: {stdout:?}"
  );
}

#[test]
fn cli_serve_help_mentions_port_and_host() {
  let out = Command::new(BIN)
    .args(["serve", "--help"])
    .output()
    .unwrap();
  assert!(
    out.status.success(),
    "serve --help exited with {}",
    out.status
  );
  let stdout = String::from_utf8_lossy(&out.stdout);
  assert!(
    stdout.contains("--port") && stdout.contains("--host"),
    "serve --help: {stdout}"
  );
}

#[test]
fn cli_serve_without_script_fails() {
  let out = Command::new(BIN).arg("serve").output().unwrap();
  assert!(!out.status.success(), "`serve` with no script should fail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_port_is_8080() {
  // Only meaningful when 8080 is free; a busy port is reported rather than silently passed.
  let probe = std::net::TcpListener::bind("127.0.0.1:8080");
  assert!(
    probe.is_ok(),
    "port 8080 is busy on this machine; cannot test the default port"
  );
  drop(probe);
  within(60, async {
    let srv = serve(serve_cmd([example("hello.js")]));
    assert_eq!(srv.port, 8080);
    let (status, body) = get_text(&client(), "http://127.0.0.1:8080/").await;
    assert_eq!((status, body.as_str()), (200, "Hello, world!"));
  })
  .await;
}

// ---------------------------------------------------------------------------------------------
// Examples and both handler syntaxes
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_hello_service_worker_syntax_relative_path() {
  within(60, async {
    // Relative script path, resolved against the working directory.
    let mut cmd = serve_cmd(["examples/hello.js", "--port", "0"]);
    cmd.current_dir(repo_root());
    let srv = serve(cmd);
    let c = client();
    for path in ["/", "/some/other/path?x=1"] {
      let r = get(&c, &srv.url(path)).await;
      assert_eq!(r.status(), 200);
      assert_eq!(
        header(&r, "content-type").as_deref(),
        Some("text/plain; charset=utf-8")
      );
      assert_eq!(r.text().await.unwrap(), "Hello, world!");
    }
    let r = c.post(srv.url("/")).body("ignored").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "Hello, world!");
    assert_eq!(
      srv.stdout_after_listening(),
      "",
      "nothing but the Listening line may go to stdout"
    );
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_module_syntax_env_and_wait_until() {
  within(60, async {
    let srv = serve_one_isolate(&example("module.js"));
    let c = client();
    let (status, v) = get_json(&c, &srv.url("/first")).await;
    assert_eq!(status, 200);
    assert_eq!(v["message"], "Hello from a module worker!");
    assert_eq!(v["path"], "/first");
    assert_eq!(v["requestCount"], 1);
    assert!(v["envKeys"].is_array(), "env must be an object: {v}");
    assert_eq!(v["id"].as_str().unwrap().len(), 36);
    // The waitUntil work records the path after the response; a later request sees it.
    srv.wait_for_stderr("recorded GET /first", 10).await;
    let (_, v) = get_json(&c, &srv.url("/second")).await;
    assert_eq!(v["requestCount"], 2);
    assert!(
      v["recentPaths"]
        .as_array()
        .unwrap()
        .contains(&json!("/first")),
      "{v}"
    );
    // The log line is tagged with the script name.
    let log = srv.stderr();
    let line = log
      .lines()
      .find(|l| l.contains("recorded GET /first"))
      .unwrap();
    assert!(
      line.contains("module.js"),
      "log line should name the script: {line:?}"
    );
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_streaming_sends_chunks_over_time() {
  within(60, async {
    let srv = serve_script(&example("streaming.js"));
    let r = get(&client(), &srv.url("/?count=3&interval=400")).await;
    assert_eq!(r.status(), 200);
    assert!(
      r.headers().get("content-length").is_none(),
      "a streamed body has no Content-Length"
    );
    let mut stream = r.bytes_stream();
    let first = deadline(10, "first chunk", stream.next())
      .await
      .unwrap()
      .unwrap();
    let first = String::from_utf8_lossy(&first).into_owned();
    assert!(first.starts_with("chunk 1 of 3"), "{first:?}");
    assert!(
      !first.contains("chunk 3"),
      "the first read already had the whole body, so it was not streamed: {first:?}"
    );
    let mut all = first;
    while let Some(chunk) = stream.next().await {
      all.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    let lines: Vec<&str> = all.lines().collect();
    assert_eq!(lines.len(), 3, "{all:?}");
    for (i, line) in lines.iter().enumerate() {
      assert!(
        line.starts_with(&format!("chunk {} of 3 at ", i + 1)),
        "{line:?}"
      );
    }
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_json_api_routes() {
  within(60, async {
    let srv = serve_one_isolate(&example("json-api.js"));
    let c = client();

    let r = get(&c, &srv.url("/")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
      header(&r, "content-type").as_deref(),
      Some("application/json; charset=utf-8")
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["name"], "json-api example");

    let (status, v) = get_json(&c, &srv.url("/items")).await;
    assert_eq!(status, 200);
    let items = v["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 2);
    let first_id = items[0]["id"].as_str().unwrap().to_string();
    let (status, v) = get_json(&c, &srv.url(&format!("/items/{first_id}"))).await;
    assert_eq!(status, 200);
    assert_eq!(v["name"], "apple");

    let r = c
      .post(srv.url("/items"))
      .json(&json!({"name": "pear"}))
      .send()
      .await
      .unwrap();
    assert_eq!(r.status(), 201);
    let location = header(&r, "location").unwrap();
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["name"], "pear");
    assert_eq!(
      location,
      format!("/items/{}", created["id"].as_str().unwrap())
    );
    let (status, v) = get_json(&c, &srv.url(&location)).await;
    assert_eq!((status, v["name"].clone()), (200, json!("pear")));
    let (_, v) = get_json(&c, &srv.url("/items")).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 3);

    let r = c
      .post(srv.url("/items"))
      .body("{not json")
      .send()
      .await
      .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
      .post(srv.url("/items"))
      .json(&json!({}))
      .send()
      .await
      .unwrap();
    assert_eq!(r.status(), 422);
    let (status, v) = get_json(&c, &srv.url("/items/does-not-exist")).await;
    assert_eq!((status, v["error"].clone()), (404, json!("item not found")));
    let (status, v) = get_json(&c, &srv.url("/nope")).await;
    assert_eq!((status, v["path"].clone()), (404, json!("/nope")));
    let r = c.delete(srv.url("/items")).send().await.unwrap();
    assert_eq!(r.status(), 405);
  })
  .await;
}

// ---------------------------------------------------------------------------------------------
// Real-world bundles
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hono_app() {
  within(60, async {
    let srv = serve_script(&fixture("hono-app.js"));
    let c = client();

    let r = get(&c, &srv.url("/")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
      header(&r, "x-powered-by").as_deref(),
      Some("hono-fixture"),
      "middleware header"
    );
    assert!(header(&r, "content-type")
      .unwrap()
      .starts_with("text/plain"));
    assert_eq!(r.text().await.unwrap(), "Hello from Hono!");

    let r = c
      .get(srv.url("/users/42?q=search"))
      .header("user-agent", "serve-test")
      .send()
      .await
      .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-powered-by").as_deref(), Some("hono-fixture"));
    assert!(header(&r, "content-type")
      .unwrap()
      .starts_with("application/json"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, json!({"id": "42", "q": "search", "ua": "serve-test"}));

    let (status, v) = get_json(&c, &srv.url("/posts/3/comments/4")).await;
    assert_eq!((status, v), (200, json!({"postId": 3, "commentId": 4})));

    let r = c
      .post(srv.url("/echo"))
      .json(&json!({"hello": ["world", 1]}))
      .send()
      .await
      .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
      v,
      json!({"received": {"hello": ["world", 1]}, "method": "POST"})
    );

    let (status, body) = get_text(&c, &srv.url("/status/418")).await;
    assert_eq!((status, body.as_str()), (418, "custom status"));

    let (status, v) = get_json(&c, &srv.url("/throw")).await;
    assert_eq!((status, v), (500, json!({"error": "hono route exploded"})));

    let r = get(&c, &srv.url("/no/such/route")).await;
    assert_eq!(r.status(), 404);
    assert_eq!(header(&r, "x-powered-by").as_deref(), Some("hono-fixture"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, json!({"error": "not found", "path": "/no/such/route"}));
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn itty_router_app() {
  within(60, async {
    let srv = serve_script(&fixture("itty-app.js"));
    let c = client();

    let r = get(&c, &srv.url("/")).await;
    let router_header = header(&r, "x-router");
    let (status, body) = (r.status().as_u16(), r.text().await.unwrap());
    assert_eq!(
      (status, body.as_str()),
      (200, "\"Hello from itty-router!\"")
    );
    assert_eq!(router_header.as_deref(), Some("itty"));

    let (status, v) = get_json(&c, &srv.url("/items")).await;
    assert_eq!(
      (status, v),
      (
        200,
        json!([{"id": "1", "name": "apple"}, {"id": "2", "name": "banana"}])
      )
    );
    let (status, v) = get_json(&c, &srv.url("/items/2")).await;
    assert_eq!((status, v), (200, json!({"id": "2", "name": "banana"})));
    let (status, v) = get_json(&c, &srv.url("/items/9")).await;
    assert_eq!(
      (status, v),
      (404, json!({"status": 404, "error": "item 9 not found"}))
    );
    let (status, v) = get_json(&c, &srv.url("/greet/bob?loud=1")).await;
    assert_eq!(
      (status, v),
      (200, json!({"greeting": "Hello, bob!", "loud": true}))
    );

    let r = c
      .post(srv.url("/items"))
      .json(&json!({"name": "cherry"}))
      .send()
      .await
      .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
      r.json::<Value>().await.unwrap(),
      json!({"id": "3", "name": "cherry"})
    );
    let r = c
      .post(srv.url("/items"))
      .json(&json!({}))
      .send()
      .await
      .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
      r.json::<Value>().await.unwrap(),
      json!({"status": 400, "error": "name required"})
    );

    let r = get(&c, &srv.url("/nope")).await;
    assert_eq!(r.status(), 404);
    assert_eq!(header(&r, "x-router").as_deref(), Some("itty"));
  })
  .await;
}

// ---------------------------------------------------------------------------------------------
// Script load failures
// ---------------------------------------------------------------------------------------------

#[test]
fn syntax_error_exits_with_location() {
  let script = fixture("syntax-error.js");
  let stderr = serve_fails(serve_script_cmd(&script));
  let loc = format!("{}:3:9", file_url(&script));
  assert!(
    stderr.contains(&loc),
    "stderr must contain {loc:?}; stderr:\n{stderr}"
  );
  assert!(
    stderr.contains("SyntaxError"),
    "stderr should name the error; stderr:\n{stderr}"
  );
}

#[test]
fn top_level_throw_exits_with_location() {
  let script = fixture("throw-top-level.js");
  let stderr = serve_fails(serve_script_cmd(&script));
  assert!(
    stderr.contains("top-level boom"),
    "stderr must contain the message; stderr:\n{stderr}"
  );
  let loc = format!("{}:3:24", file_url(&script));
  assert!(
    stderr.contains(&loc),
    "stderr must contain {loc:?}; stderr:\n{stderr}"
  );
}

#[test]
fn missing_import_exits_naming_the_module() {
  let stderr = serve_fails(serve_script_cmd(&fixture("import-missing.js")));
  assert!(stderr.contains("does-not-exist.js"), "stderr:\n{stderr}");
}

#[test]
fn missing_script_exits_naming_the_file() {
  let stderr = serve_fails(serve_script_cmd(Path::new(
    "/nonexistent-dir/no-such-script.js",
  )));
  assert!(stderr.contains("no-such-script.js"), "stderr:\n{stderr}");
}

// ---------------------------------------------------------------------------------------------
// Handler failures
// ---------------------------------------------------------------------------------------------

/// GET `path` must give a 500 and log `message` with a stack naming `script:line:col`.
async fn assert_500_with_stack(
  srv: &Server,
  script: &Path,
  path: &str,
  message: &str,
  line: u32,
  col: u32,
) {
  let before = srv.stderr_len();
  let (status, _) = deadline(10, path, get_text(&client(), &srv.url(path))).await;
  assert_eq!(status, 500, "GET {path}");
  srv.wait_for_stderr(message, 10).await;
  let loc = format!("{}:{line}:{col}", file_url(script));
  let start = Instant::now();
  while !srv.stderr()[before..].contains(&loc) {
    assert!(
      start.elapsed() < Duration::from_secs(5),
      "the logged error for {path} must carry a stack with {loc:?}"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
  }
}

/// GET `path` must give a 500 and log something.
async fn assert_500_logged(srv: &Server, path: &str) {
  let before = srv.stderr_len();
  let (status, _) = deadline(10, path, get_text(&client(), &srv.url(path))).await;
  assert_eq!(status, 500, "GET {path}");
  srv
    .wait_for_stderr_growth(before, 10, &format!("GET {path}"))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_throw_gives_500_with_stack_then_recovers() {
  within(60, async {
    let script = fixture("handler-errors.js");
    let srv = serve_script(&script);
    assert_still_serving(&srv, "/ok", "ok").await;
    assert_500_with_stack(&srv, &script, "/throw", "sync-handler-boom", 4, 9).await;
    assert_still_serving(&srv, "/ok", "ok").await;
    assert_500_with_stack(&srv, &script, "/throw", "sync-handler-boom", 4, 9).await;
    assert_still_serving(&srv, "/ok", "ok").await;
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_reject_gives_500_with_stack_then_recovers() {
  within(60, async {
    let script = fixture("handler-errors.js");
    let srv = serve_script(&script);
    assert_500_with_stack(&srv, &script, "/reject", "async-handler-boom", 9, 9).await;
    assert_still_serving(&srv, "/ok", "ok").await;
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_non_response_gives_500_then_recovers() {
  within(60, async {
    let srv = serve_script(&fixture("handler-errors.js"));
    for path in [
      "/non-response",
      "/non-response-async",
      "/undefined",
      "/throw-string",
    ] {
      assert_500_logged(&srv, path).await;
      assert_still_serving(&srv, "/ok", "ok").await;
    }
    assert!(
      srv.stderr().contains("a thrown string"),
      "a thrown non-Error value should be logged"
    );
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_never_responding_gives_500_without_blocking_others() {
  within(120, async {
    let srv = serve_script(&fixture("handler-errors.js"));
    let c = client();
    let before = srv.stderr_len();
    let url = srv.url("/never");
    let never = tokio::spawn(async move { c.get(url).send().await.map(|r| r.status().as_u16()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A hung request must not stop others from being served.
    assert_still_serving(&srv, "/ok", "ok").await;
    let status = deadline(
      90,
      "a handler whose promise never settles should get a 500",
      never,
    )
    .await
    .unwrap();
    assert_eq!(
      status.expect("request failed instead of getting a 500"),
      500
    );
    srv
      .wait_for_stderr_growth(before, 10, "the never-responding request")
      .await;
    assert_still_serving(&srv, "/ok", "ok").await;
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_worker_errors_give_500_then_recover() {
  within(60, async {
    let script = fixture("sw-errors.js");
    let srv = serve_script(&script);
    assert_still_serving(&srv, "/ok", "sw ok").await;
    assert_500_with_stack(&srv, &script, "/throw", "sw-listener-boom", 6, 36).await;
    assert_still_serving(&srv, "/ok", "sw ok").await;
    assert_500_with_stack(&srv, &script, "/reject", "sw-respondwith-rejected", 7, 71).await;
    assert_still_serving(&srv, "/ok", "sw ok").await;
    assert_500_logged(&srv, "/non-response").await;
    assert_still_serving(&srv, "/ok", "sw ok").await;
    assert_500_logged(&srv, "/no-respond").await;
    assert_still_serving(&srv, "/ok", "sw ok").await;
    // respondWith(promise) resolving later.
    assert_still_serving(&srv, "/async", "sw async ok").await;
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_worker_event_wait_until() {
  within(60, async {
    let srv = serve_one_isolate(&fixture("sw-errors.js"));
    let c = client();
    let (status, body) = get_text(&c, &srv.url("/wait-until")).await;
    assert_eq!(
      (status, body.as_str()),
      (200, "done=0"),
      "the response must not wait for waitUntil work"
    );
    srv.wait_for_stderr("sw-wait-until-done", 10).await;
    let (_, body) = get_text(&c, &srv.url("/wait-until")).await;
    assert_eq!(body, "done=1");
  })
  .await;
}

// ---------------------------------------------------------------------------------------------
// Logging, waitUntil, modules
// ---------------------------------------------------------------------------------------------

fn log_line_with(log: &str, needle: &str) -> String {
  log
    .lines()
    .find(|l| l.contains(needle))
    .unwrap_or_else(|| panic!("no stderr line contains {needle:?}"))
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_levels_go_to_stderr_tagged_with_script() {
  within(60, async {
    let srv = serve_script(&fixture("console.js"));
    // Output of module evaluation (before listening) is kept too.
    srv.wait_for_stderr("top-level-log-marker", 10).await;
    let (status, body) = get_text(&client(), &srv.url("/?id=q1")).await;
    assert_eq!((status, body.as_str()), (200, "logged"));
    for level in ["log", "info", "warn", "error"] {
      srv
        .wait_for_stderr(&format!("console-{level}-marker-q1"), 10)
        .await;
    }
    let log = srv.stderr();
    for level in ["log", "info", "warn", "error"] {
      let line = log_line_with(&log, &format!("console-{level}-marker-q1"));
      assert!(
        line.contains("console.js"),
        "console.{level} output must be tagged with the script name: {line:?}"
      );
    }
    let warn = log_line_with(&log, "console-warn-marker-q1");
    assert!(
      warn.contains("WARN"),
      "console.warn should log at WARN level: {warn:?}"
    );
    let error = log_line_with(&log, "console-error-marker-q1");
    assert!(
      error.contains("ERROR"),
      "console.error should log at ERROR level: {error:?}"
    );
    assert_eq!(
      srv.stdout_after_listening(),
      "",
      "console output must not go to stdout"
    );
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_debug_is_visible_by_default() {
  within(60, async {
    let srv = serve_script(&fixture("console.js"));
    let (status, _) = get_text(&client(), &srv.url("/?id=d1")).await;
    assert_eq!(status, 200);
    srv.wait_for_stderr("console-error-marker-d1", 10).await;
    srv.wait_for_stderr("console-debug-marker-d1", 2).await;
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_formats_values() {
  within(60, async {
    let srv = serve_script(&fixture("console.js"));
    let (status, _) = get_text(&client(), &srv.url("/?id=f1")).await;
    assert_eq!(status, 200);
    srv.wait_for_stderr("format-check", 10).await;
    let line = log_line_with(&srv.stderr(), "format-check");
    let double = r#"format-check 42 true null { a: 1, b: "two" } [ 1, 2 ]"#;
    let single = r#"format-check 42 true null { a: 1, b: 'two' } [ 1, 2 ]"#;
    assert!(
      line.contains(double) || line.contains(single),
      "console.log should format values like Deno/Node: {line:?}"
    );
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_until_runs_after_the_response() {
  within(60, async {
    let srv = serve_one_isolate(&fixture("wait-until.js"));
    let c = client();
    let (status, v) = get_json(&c, &srv.url("/start")).await;
    assert_eq!(status, 200);
    assert_eq!(
      v,
      json!({"started": 1, "finished": 0}),
      "the response must not wait for waitUntil work"
    );
    let (_, v) = get_json(&c, &srv.url("/state")).await;
    assert_eq!(
      v["finished"], 0,
      "the waitUntil work sleeps 500 ms; it cannot have finished yet"
    );
    srv.wait_for_stderr("wait-until-finished-1", 10).await;
    let (_, v) = get_json(&c, &srv.url("/state")).await;
    assert_eq!(v, json!({"started": 1, "finished": 1}));
    let line = log_line_with(&srv.stderr(), "wait-until-finished-1");
    assert!(line.contains("wait-until.js"), "{line:?}");
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_imports_and_top_level_await() {
  within(60, async {
    let srv = serve_script(&fixture("relative-import.js"));
    let (status, v) = get_json(&client(), &srv.url("/?name=bob")).await;
    assert_eq!(status, 200);
    assert_eq!(
      v,
      json!({"message": "HELLO, bob!", "version": "V1.2.3", "loadedWithTla": true})
    );
  })
  .await;
}

// ---------------------------------------------------------------------------------------------
// Streaming
// ---------------------------------------------------------------------------------------------

/// The first chunk must reach the client before the client tells the server (with another
/// request) to produce the second: ordering, not timing, proves the response is streamed.
async fn check_streaming_order(c: &reqwest::Client, srv: &Server, id: &str) {
  let r = deadline(
    10,
    "response headers of a streamed response (before its body is complete)",
    c.get(srv.url(&format!("/stream?id={id}"))).send(),
  )
  .await
  .unwrap();
  assert_eq!(r.status(), 200);
  let mut stream = r.bytes_stream();
  let first = format!("first-chunk-{id}\n");
  let mut got = Vec::new();
  while got.len() < first.len() {
    let chunk = deadline(
      10,
      "first chunk (the server must send it before being released)",
      stream.next(),
    )
    .await;
    got.extend_from_slice(&chunk.expect("body ended early").unwrap());
  }
  assert_eq!(String::from_utf8_lossy(&got), first);
  let (status, body) = get_text(c, &srv.url(&format!("/release?id={id}"))).await;
  assert_eq!((status, body), (200, format!("released {id}")));
  while let Some(chunk) = deadline(10, "rest of the stream", stream.next()).await {
    got.extend_from_slice(&chunk.unwrap());
  }
  assert_eq!(
    String::from_utf8_lossy(&got),
    format!("first-chunk-{id}\nsecond-chunk-{id}\nreleased=true\n")
  );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_response_http1_ordering() {
  within(60, async {
    let srv = serve_one_isolate(&fixture("stream-gate.js"));
    check_streaming_order(&client(), &srv, "h1").await;
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_response_http2_ordering() {
  within(60, async {
    let srv = serve_one_isolate(&fixture("stream-gate.js"));
    let c = h2_client();
    check_streaming_order(&c, &srv, "h2").await;
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_body_is_streamed_to_the_handler() {
  within(60, async {
    let srv = serve_one_isolate(&fixture("echo-stream.js"));
    let c = client();
    let (mut tx, body) = channel_body();
    let upload = tokio::spawn(c.post(srv.url("/upload")).body(body).send());
    tx.send(Ok(Bytes::from_static(b"part-one|"))).await.unwrap();
    // The handler must see the first part while the client still holds back the second.
    let r = deadline(
      20,
      "handler seeing the first part of the body",
      c.get(srv.url("/peek?min=9")).send(),
    )
    .await
    .unwrap();
    assert_eq!(header(&r, "x-upload-done").as_deref(), Some("false"));
    assert_eq!(
      r.text().await.unwrap(),
      "part-one|",
      "the handler must get the first chunk before the body is complete"
    );
    tx.send(Ok(Bytes::from_static(b"part-two"))).await.unwrap();
    drop(tx);
    let r = deadline(20, "upload response", upload)
      .await
      .unwrap()
      .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["total"], 17);
    assert_eq!(v["text"], "part-one|part-two");
    assert!(v["chunks"].as_u64().unwrap() >= 2, "{v}");
  })
  .await;
}

/// POST /echo returns `new Response(request.body)`: the first chunk must come back before the
/// client sends the second.
async fn check_full_duplex_echo(c: &reqwest::Client, srv: &Server) {
  let (mut tx, body) = channel_body();
  tx.send(Ok(Bytes::from_static(b"ping-1\n"))).await.unwrap();
  let r = deadline(
    10,
    "echo response headers",
    c.post(srv.url("/echo"))
      .header("content-type", "text/x-echo")
      .body(body)
      .send(),
  )
  .await
  .unwrap();
  assert_eq!(r.status(), 200);
  assert_eq!(header(&r, "content-type").as_deref(), Some("text/x-echo"));
  let mut stream = r.bytes_stream();
  let mut got = Vec::new();
  while got.len() < 7 {
    let chunk = deadline(10, "echo of the first chunk", stream.next()).await;
    got.extend_from_slice(&chunk.expect("echo ended early").unwrap());
  }
  assert_eq!(got, b"ping-1\n");
  tx.send(Ok(Bytes::from_static(b"ping-2\n"))).await.unwrap();
  while got.len() < 14 {
    let chunk = deadline(10, "echo of the second chunk", stream.next()).await;
    got.extend_from_slice(&chunk.expect("echo ended early").unwrap());
  }
  assert_eq!(got, b"ping-1\nping-2\n");
  drop(tx);
  while let Some(chunk) = deadline(10, "end of echo", stream.next()).await {
    got.extend_from_slice(&chunk.unwrap());
  }
  assert_eq!(got, b"ping-1\nping-2\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_duplex_echo_http2() {
  within(60, async {
    let srv = serve_script(&fixture("echo-stream.js"));
    check_full_duplex_echo(&h2_client(), &srv).await;
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_duplex_echo_http1() {
  within(60, async {
    let srv = serve_script(&fixture("echo-stream.js"));
    check_full_duplex_echo(&client(), &srv).await;
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_of_10_mib_is_accepted() {
  within(120, async {
    let srv = serve_script(&fixture("echo-stream.js"));
    let body = vec![b'x'; 10 * MIB as usize];
    let r = client()
      .post(srv.url("/count"))
      .body(body)
      .send()
      .await
      .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
      r.json::<Value>().await.unwrap(),
      json!({"length": 10 * MIB})
    );
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gib_streamed_response_with_bounded_memory() {
  within(600, async {
    let srv = serve_script(&fixture("big.js"));
    let c = client();
    assert_still_serving(&srv, "/", "big fixture").await;
    let rss_before = srv.proc_status_kib("VmRSS");
    let r = c.get(srv.url("/big?mib=1024")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let mut total: u64 = 0;
    let start = Instant::now();
    let first = deadline(30, "first chunk of 1 GiB", stream.next())
      .await
      .unwrap()
      .unwrap();
    assert!(first.iter().all(|b| *b == b'a'));
    total += first.len() as u64;
    // Stop reading for a while: an engine without backpressure would buffer the body now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_paused = srv.proc_status_kib("VmRSS");
    while let Some(chunk) = deadline(60, "next chunk of 1 GiB", stream.next()).await {
      total += chunk.unwrap().len() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(total, 1024 * MIB, "byte count of the 1 GiB body");
    let peak = srv.proc_status_kib("VmHWM");
    eprintln!(
      "1 GiB in {secs:.1}s ({:.0} MiB/s); RSS before {} MiB, \
             while paused {} MiB, peak {} MiB",
      1024.0 / secs,
      rss_before / 1024,
      rss_paused / 1024,
      peak / 1024
    );
    let growth_mib = peak.saturating_sub(rss_before) / 1024;
    assert!(
      growth_mib < 200,
      "server RSS grew by {growth_mib} MiB (peak {peak} KiB, before {rss_before} KiB) \
             while streaming 1 GiB"
    );
    assert_still_serving(&srv, "/", "big fixture").await;
  })
  .await;
}

// ---------------------------------------------------------------------------------------------
// HTTP protocol behaviour
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge() {
  within(60, async {
    let srv = serve_script(&example("hello.js"));
    let c = h2_client();
    let r = get(&c, &srv.url("/")).await;
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "Hello, world!");
    let r = c.post(srv.url("/")).body("x").send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.text().await.unwrap(), "Hello, world!");
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_multiplexed_requests_are_concurrent() {
  within(60, async {
    let srv = serve_one_isolate(&fixture("timers.js"));
    let c = h2_client();
    // 10 requests on one HTTP/2 connection that can only complete together.
    let futs = (0..10).map(|_| {
      let c = c.clone();
      let url = srv.url("/barrier?n=10");
      async move {
        let r = c.get(url).send().await.unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        r.json::<Value>().await.unwrap()
      }
    });
    let results = deadline(
      40,
      "10 multiplexed barrier requests",
      futures::future::join_all(futs),
    )
    .await;
    for v in results {
      assert_eq!(v["passed"], true, "{v}");
    }
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_response_has_no_body() {
  within(60, async {
    let srv = serve_script(&fixture("web-apis.js"));
    let r = client().head(srv.url("/head")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let method = header(&r, "x-method");
    assert_eq!(
      method.as_deref(),
      Some("HEAD"),
      "the handler must see method HEAD"
    );
    assert_eq!(r.bytes().await.unwrap().len(), 0);

    // On the wire: a HEAD response followed by a GET response on the same connection. Any
    // body bytes sent for HEAD would corrupt the second response.
    let mut conn = RawConn::connect(srv.port).await;
    conn.send(b"HEAD /head HTTP/1.1\r\nHost: t\r\n\r\n").await;
    conn
      .send(b"GET /head HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
      .await;
    let head = deadline(10, "HEAD response", conn.read_response(true)).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("x-method"), Some("HEAD"));
    let get = deadline(10, "GET response after HEAD", conn.read_response(false)).await;
    assert_eq!(get.status, 200);
    assert_eq!(get.header("x-method"), Some("GET"));
    assert_eq!(get.body, b"hello head body");
    let rest = deadline(10, "connection close", conn.read_to_end()).await;
    let rest = String::from_utf8_lossy(&rest);
    assert!(
      rest.is_empty(),
      "unexpected bytes after the responses: {rest:?}"
    );
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_and_pipelining_on_one_connection() {
  within(60, async {
    let srv = serve_script(&example("hello.js"));
    let mut conn = RawConn::connect(srv.port).await;
    for i in 0..5 {
      conn
        .send(format!("GET /seq{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .await;
      let r = deadline(10, "keep-alive response", conn.read_response(false)).await;
      assert_eq!(r.status, 200);
      assert_eq!(r.body, b"Hello, world!");
      assert_ne!(r.header("connection"), Some("close"));
    }
    // Pipelined: three requests in one write.
    let mut pipelined = Vec::new();
    for p in ["/p1", "/p2", "/p3"] {
      pipelined.extend_from_slice(format!("GET {p} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    }
    conn.send(&pipelined).await;
    for _ in 0..3 {
      let r = deadline(10, "pipelined response", conn.read_response(false)).await;
      assert_eq!(
        (r.status, r.body.as_slice()),
        (200, b"Hello, world!".as_slice())
      );
    }
    // A reqwest client reuses its connection too.
    let c = client();
    for _ in 0..10 {
      let (status, body) = get_text(&c, &srv.url("/")).await;
      assert_eq!((status, body.as_str()), (200, "Hello, world!"));
    }
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_requests_awaiting_timers() {
  within(60, async {
    let srv = serve_one_isolate(&fixture("timers.js"));
    let c = client();
    // Warm up (connection setup, JIT) so the measurement is of the handler.
    let _ = get_text(&c, &srv.url("/sleep?ms=1")).await;
    let start = Instant::now();
    let url = srv.url("/sleep?ms=100");
    let futs = (0..50).map(|_| get_json(&c, &url));
    let results = futures::future::join_all(futs).await;
    let elapsed = start.elapsed();
    for (status, v) in &results {
      assert_eq!(*status, 200);
      assert!(v["slept"].as_u64().unwrap() >= 99, "{v}");
    }
    // Serially this would take >= 5 s.
    assert!(
      elapsed < Duration::from_secs(3),
      "50 concurrent 100 ms requests took {elapsed:?}"
    );
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_requests_meet_at_a_barrier() {
  within(60, async {
    let srv = serve_one_isolate(&fixture("timers.js"));
    let c = client();
    // Each request completes only once all 50 are inside the isolate at the same time.
    let url = srv.url("/barrier?n=50");
    let futs = (0..50).map(|_| get_json(&c, &url));
    let results = deadline(40, "50 barrier requests", futures::future::join_all(futs)).await;
    let mut seen: Vec<u64> = results
      .iter()
      .map(|(status, v)| {
        assert_eq!(*status, 200);
        assert_eq!(v["passed"], true, "{v}");
        v["me"].as_u64().unwrap()
      })
      .collect();
    seen.sort();
    assert_eq!(seen, (1..=50).collect::<Vec<u64>>());
  })
  .await;
}

const OVER_LIMIT: u64 = 101 * MIB;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_100_mib_content_length_gets_413_early() {
  within(60, async {
    let srv = serve_script(&fixture("echo-stream.js"));
    let (mut tx, body) = channel_body();
    tx.send(Ok(Bytes::from(vec![b'x'; 64 * 1024])))
      .await
      .unwrap();
    // The sender stays open: the server must answer from the Content-Length alone.
    let r = deadline(
      15,
      "413 for a declared 101 MiB body before the body is sent",
      client()
        .post(srv.url("/count"))
        .header("content-length", OVER_LIMIT.to_string())
        .body(body)
        .send(),
    )
    .await
    .expect("request failed instead of getting a 413");
    assert_eq!(r.status(), 413);
    drop(tx);
    assert_still_serving(&srv, "/peek?min=0", "").await;
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_100_mib_content_length_gets_413_raw() {
  within(60, async {
    let srv = serve_script(&fixture("echo-stream.js"));
    let mut req =
      format!("POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: {OVER_LIMIT}\r\n\r\n")
        .into_bytes();
    req.extend_from_slice(&[b'x'; 1024]);
    assert_eq!(raw_status(srv.port, &req, 15).await, Some(413));
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_over_100_mib_is_refused() {
  within(180, async {
    let srv = serve_script(&fixture("echo-stream.js"));
    let (mut tx, body) = channel_body();
    let c = client();
    let url = srv.url("/count");
    let req = tokio::spawn(async move { c.post(url).body(body).send().await });
    let chunk = Bytes::from(vec![b'x'; MIB as usize]);
    for _ in 0..101 {
      if tx.send(Ok(chunk.clone())).await.is_err() {
        break; // the server stopped reading: fine
      }
    }
    drop(tx);
    // A transport error (the server cut the connection) counts as refused too.
    if let Ok(r) = deadline(60, "response to a 101 MiB chunked body", req)
      .await
      .unwrap()
    {
      let status = r.status().as_u16();
      let body = r.text().await.unwrap_or_default();
      assert!(
        status == 413 || status == 500,
        "a 101 MiB chunked body must be refused (413, or 500 from the handler's \
                 failed read), got {status}: {body}"
      );
    }
    assert_still_serving(&srv, "/peek?min=0", "").await;
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_over_64_kib_get_431() {
  within(60, async {
    let srv = serve_script(&example("hello.js"));
    let big = "a".repeat(70 * 1024);
    let req = format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n");
    assert_eq!(raw_status(srv.port, req.as_bytes(), 15).await, Some(431));
    // Many medium headers adding up to more than 64 KiB.
    let mut req = String::from("GET / HTTP/1.1\r\nHost: t\r\n");
    for i in 0..40 {
      req.push_str(&format!("X-H{i}: {}\r\n", "b".repeat(2000)));
    }
    req.push_str("\r\n");
    assert_eq!(raw_status(srv.port, req.as_bytes(), 15).await, Some(431));
    // Just under the limit is fine.
    let r = client()
      .get(srv.url("/"))
      .header("x-big", "c".repeat(60 * 1024))
      .send()
      .await
      .unwrap();
    assert_eq!(r.status(), 200);
    assert_still_serving(&srv, "/", "Hello, world!").await;
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_400() {
  within(60, async {
    let srv = serve_script(&example("hello.js"));
    assert_eq!(
      raw_status(
        srv.port,
        b"GET / HTTP/1.1\r\nHost: t\r\nthis is not a header\r\n\r\n",
        10
      )
      .await,
      Some(400)
    );
    assert_eq!(
      raw_status(srv.port, b"G(T / HTTP/1.1\r\nHost: t\r\n\r\n", 10).await,
      Some(400)
    );
    assert_eq!(
      raw_status(
        srv.port,
        b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: nope\r\n\r\n",
        10
      )
      .await,
      Some(400)
    );
    assert_still_serving(&srv, "/", "Hello, world!").await;
  })
  .await;
}

/// Waits until the server closes `conn` (EOF or reset), trickling one header byte every 500 ms
/// if `trickle`. Returns how long it took.
async fn wait_closed_by_server(mut conn: TcpStream, trickle: bool) -> Duration {
  let start = Instant::now();
  let mut buf = [0u8; 1024];
  loop {
    if trickle && conn.write_all(b"a").await.is_err() {
      return start.elapsed();
    }
    match tokio::time::timeout(Duration::from_millis(500), conn.read(&mut buf)).await {
      Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
      Ok(Ok(_)) => {} // e.g. a 408 response; wait for the close
      Err(_) => {}
    }
  }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_clients_are_dropped_while_others_are_served() {
  within(120, async {
    let srv = serve_script(&example("hello.js"));
    let mut idle = TcpStream::connect(("127.0.0.1", srv.port)).await.unwrap();
    idle
      .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n")
      .await
      .unwrap();
    let mut trickler = TcpStream::connect(("127.0.0.1", srv.port)).await.unwrap();
    trickler
      .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")
      .await
      .unwrap();
    let idle_task = tokio::spawn(wait_closed_by_server(idle, false));
    let trickle_task = tokio::spawn(wait_closed_by_server(trickler, true));
    // Others are served meanwhile.
    let c = client();
    for _ in 0..5 {
      let (status, body) = deadline(
        5,
        "request while slow clients are connected",
        get_text(&c, &srv.url("/")),
      )
      .await;
      assert_eq!((status, body.as_str()), (200, "Hello, world!"));
      tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let idle_after = deadline(
      60,
      "server dropping a client that never finishes its headers",
      idle_task,
    )
    .await
    .unwrap();
    let trickle_after = deadline(
      60,
      "server dropping a client that trickles its headers",
      trickle_task,
    )
    .await
    .unwrap();
    eprintln!("idle client dropped after {idle_after:?}, trickling client after {trickle_after:?}");
    assert_still_serving(&srv, "/", "Hello, world!").await;
  })
  .await;
}

// ---------------------------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_request_then_exits_0() {
  within(60, async {
    let mut srv = serve_script(&fixture("timers.js"));
    let c = client();
    let url = srv.url("/slow?ms=2000");
    let slow = tokio::spawn(async move {
      let r = c.get(url).send().await?;
      let status = r.status().as_u16();
      r.text().await.map(|t| (status, t))
    });
    srv.wait_for_stderr("slow-request-started", 10).await;
    srv.signal("TERM");
    let (status, body) = deadline(15, "in-flight request during graceful shutdown", slow)
      .await
      .unwrap()
      .expect("the in-flight request must complete, not be cut off");
    assert_eq!((status, body.as_str()), (200, "slow done"));
    srv.assert_clean_exit(15, "SIGTERM").await;
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_accepting_new_connections() {
  within(60, async {
    let mut srv = serve_script(&fixture("timers.js"));
    let c = client();
    let url = srv.url("/slow?ms=3000");
    let slow = tokio::spawn(async move { c.get(url).send().await.map(|r| r.status().as_u16()) });
    srv.wait_for_stderr("slow-request-started", 10).await;
    srv.signal("TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    // While draining, new requests are not served.
    let fresh = reqwest::Client::builder()
      .no_proxy()
      .timeout(Duration::from_secs(2))
      .build()
      .unwrap();
    let res = fresh.get(srv.url("/sleep?ms=1")).send().await;
    assert!(
      res.is_err(),
      "a new connection after SIGTERM should be refused, got {:?}",
      res.map(|r| r.status())
    );
    assert_eq!(
      deadline(15, "in-flight request", slow)
        .await
        .unwrap()
        .unwrap(),
      200
    );
    srv.assert_clean_exit(15, "SIGTERM").await;
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drops_connections_that_have_sent_nothing_at_once() {
  within(60, async {
    // A client that connected and sent nothing (a browser's preconnect, a
    // pool's spare) is no request in flight: shutdown must not wait out the
    // 30 s header timeout for it.
    let mut cmd = serve_script_cmd(&example("hello.js"));
    cmd.args(["--header-timeout", "30"]);
    let mut srv = serve(cmd);
    let mut silent = RawConn::connect(srv.port).await;
    // Served meanwhile, on another connection: the silent one is accepted.
    let c = client();
    assert_eq!(get_text(&c, &srv.url("/")).await.0, 200);
    drop(c);
    srv.signal("TERM");
    let rest = deadline(
      10,
      "the server dropping the silent connection",
      silent.read_to_end(),
    )
    .await;
    assert!(rest.is_empty(), "{rest:?}");
    srv.assert_clean_exit(10, "SIGTERM").await;
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_idle_keep_alive_connections_at_once() {
  within(60, async {
    let mut srv = serve_script(&example("hello.js"));
    // Two kept-alive connections that have been served and now sit idle: the
    // drain must close them rather than wait out its 30 s grace period.
    let mut idle = Vec::new();
    for _ in 0..2 {
      let mut conn = RawConn::connect(srv.port).await;
      conn
        .send(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await;
      conn.read_until(b"Hello, world!").await;
      idle.push(conn);
    }
    let start = Instant::now();
    srv.signal("TERM");
    for conn in &mut idle {
      let rest = deadline(
        10,
        "the server closing an idle connection",
        conn.read_to_end(),
      )
      .await;
      assert!(rest.is_empty(), "nothing more was asked: {rest:?}");
    }
    srv.assert_clean_exit(10, "SIGTERM").await;
    assert!(
      start.elapsed() < Duration::from_secs(10),
      "shutdown waited {:?} for idle connections",
      start.elapsed()
    );
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_when_idle_exits_0() {
  within(60, async {
    let mut srv = serve_script(&example("hello.js"));
    assert_still_serving(&srv, "/", "Hello, world!").await;
    srv.signal("INT");
    srv.assert_clean_exit(10, "SIGINT").await;
  })
  .await;
}

// ---------------------------------------------------------------------------------------------
// Web API behaviour over HTTP
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_api_checks_inside_the_isolate() {
  within(60, async {
    let srv = serve_script(&fixture("web-apis.js"));
    let (status, v) = get_json(&client(), &srv.url("/checks")).await;
    assert_eq!(status, 200);
    let failures: Vec<String> = v
      .as_object()
      .unwrap()
      .iter()
      .filter(|(_, r)| **r != Value::Bool(true))
      .map(|(name, r)| format!("{name}: {}", r.as_str().unwrap_or("?")))
      .collect();
    assert!(
      failures.is_empty(),
      "failing in-isolate checks:\n{}",
      failures.join("\n\n")
    );
    assert_eq!(v.as_object().unwrap().len(), 13, "all checks must report");
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_body_types_over_http() {
  within(60, async {
    let srv = serve_script(&fixture("web-apis.js"));
    let c = client();
    let bytes = |path: &'static str| {
      let c = c.clone();
      let url = srv.url(path);
      async move {
        let r = c.get(url).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        r.bytes().await.unwrap().to_vec()
      }
    };
    assert_eq!(bytes("/body/arraybuffer").await, vec![1, 2, 3, 255]);
    assert_eq!(
      bytes("/body/typed").await,
      vec![1, 2, 3],
      "a typed-array view must send only its own range"
    );
    assert_eq!(bytes("/body/dataview").await, vec![8, 7]);

    let r = get(&c, &srv.url("/body/blob")).await;
    assert_eq!(header(&r, "content-type").as_deref(), Some("text/x-blob"));
    assert_eq!(r.text().await.unwrap(), "blob content");

    let r = get(&c, &srv.url("/body/params")).await;
    assert_eq!(
      header(&r, "content-type").as_deref(),
      Some("application/x-www-form-urlencoded;charset=UTF-8")
    );
    assert_eq!(r.text().await.unwrap(), "a=1&b=x+y");

    let r = get(&c, &srv.url("/body/null")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-null").as_deref(), Some("yes"));
    assert_eq!(r.bytes().await.unwrap().len(), 0);

    let r = get(&c, &srv.url("/body/string")).await;
    assert_eq!(
      header(&r, "content-type").as_deref(),
      Some("text/plain;charset=UTF-8")
    );
    assert_eq!(r.text().await.unwrap(), "héllo");

    let r = get(&c, &srv.url("/body/json")).await;
    assert_eq!(r.status(), 201);
    assert_eq!(
      header(&r, "content-type").as_deref(),
      Some("application/json")
    );
    assert_eq!(header(&r, "x-json").as_deref(), Some("1"));
    assert_eq!(
      r.json::<Value>().await.unwrap(),
      json!({"ok": true, "n": 1})
    );

    let r = get(&c, &srv.url("/body/redirect")).await;
    assert_eq!(r.status(), 307);
    assert_eq!(
      header(&r, "location").as_deref(),
      Some("https://example.com/target")
    );
    let r = get(&c, &srv.url("/body/redirect-default")).await;
    assert_eq!(r.status(), 302);
    assert_eq!(
      header(&r, "location").as_deref(),
      Some("https://example.com/default")
    );

    let r = get(&c, &srv.url("/body/clone")).await;
    assert_eq!(header(&r, "x-cloned").as_deref(), Some("1"));
    assert_eq!(r.text().await.unwrap(), "cloned body");

    for code in [201u16, 204, 304, 404, 418, 503] {
      let r = get(&c, &srv.url(&format!("/status?code={code}"))).await;
      assert_eq!(r.status().as_u16(), code);
      let body = r.text().await.unwrap();
      if code == 204 || code == 304 {
        assert_eq!(body, "");
      } else {
        assert_eq!(body, format!("status {code}"));
      }
    }
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_cookie_and_multi_value_headers() {
  within(60, async {
    let srv = serve_script(&fixture("web-apis.js"));
    let r = get(&client(), &srv.url("/set-cookie")).await;
    let cookies: Vec<&str> = r
      .headers()
      .get_all("set-cookie")
      .iter()
      .map(|v| v.to_str().unwrap())
      .collect();
    assert_eq!(
      cookies,
      vec!["a=1; Path=/", "b=2; HttpOnly"],
      "each cookie must be its own Set-Cookie header"
    );
    let multi: Vec<&str> = r
      .headers()
      .get_all("x-multi")
      .iter()
      .map(|v| v.to_str().unwrap())
      .collect();
    assert_eq!(multi.join(", "), "one, two");
    assert_eq!(header(&r, "content-type").as_deref(), Some("text/plain"));
  })
  .await;
}

/// The engine hands a request's headers to JavaScript packed in one string (split on first
/// read): values with ':' in them, empty values, tabs and non-ASCII bytes, and repeated names
/// all come through as sent.
/// A response's Content-Type is its own, whatever the isolate's earlier responses had: the
/// same types again and again, types made anew per request, and none at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_response_has_its_own_content_type() {
  within(60, async {
    // One isolate: its responses follow one another.
    let srv = serve_one_isolate(&fixture("web-apis.js"));
    let c = client();
    let cases = [
      ("text", Some("text/plain;charset=UTF-8")),
      ("json", Some("application/json")),
      ("text", Some("text/plain;charset=UTF-8")),
      ("text", Some("text/plain;charset=UTF-8")),
      ("literal", Some("text/html")),
      ("bytes", None),
      ("literal", Some("text/html")),
      ("x/one", Some("x/one")),
      ("x/two", Some("x/two")),
      ("x/two", Some("x/two")),
      ("json", Some("application/json")),
      ("bytes", None),
    ];
    for _ in 0..2 {
      for (kind, expected) in cases {
        let r = c
          .get(srv.url(&format!("/content-type?kind={kind}")))
          .send()
          .await
          .unwrap();
        assert_eq!(r.status(), 200, "{kind}");
        let got = r
          .headers()
          .get("content-type")
          .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(got.as_deref(), expected, "kind {kind}");
      }
    }
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_header_list_reaches_the_handler_exactly() {
  within(60, async {
    let srv = serve_script(&fixture("web-apis.js"));
    let r = client()
      .get(srv.url("/header-list"))
      .header("x-colon", "a:b: c")
      .header("x-empty", "")
      .header("x-tab", "a\tb")
      .header(
        "x-latin1",
        reqwest::header::HeaderValue::from_bytes(b"caf\xe9").unwrap(),
      )
      .header("x-multi", "one")
      .header("x-multi", "two")
      .send()
      .await
      .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let entries: Vec<(String, String)> = v["entries"]
      .as_array()
      .unwrap()
      .iter()
      .map(|e| (e[0].as_str().unwrap().into(), e[1].as_str().unwrap().into()))
      .collect();
    let get = |name: &str| {
      entries
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("x-colon"), Some("a:b: c"), "{entries:?}");
    assert_eq!(get("x-empty"), Some(""), "{entries:?}");
    assert_eq!(get("x-tab"), Some("a\tb"), "{entries:?}");
    assert_eq!(get("x-latin1"), Some("caf\u{e9}"), "{entries:?}");
    assert_eq!(get("x-multi"), Some("one, two"), "{entries:?}");
    assert_eq!(
      get("host"),
      Some(format!("127.0.0.1:{}", srv.port).as_str())
    );
    let mut names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    let sorted = {
      let mut s = names.clone();
      s.sort_unstable();
      s
    };
    assert_eq!(names, sorted, "Headers iterate in sorted order");
    names.dedup();
    assert_eq!(names.len(), entries.len());
    assert_eq!(v["same"], true);
    assert_eq!(v["cloned"].as_u64(), Some(entries.len() as u64));
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_properties_seen_by_the_handler() {
  within(60, async {
    let srv = serve_script(&fixture("web-apis.js"));
    let c = client();
    let r = c
      .get(srv.url("/request-info?x=1&y=%20z"))
      .header("x-custom", "hello")
      .header("x-multi", "a")
      .header("x-multi", "b")
      .send()
      .await
      .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["method"], "GET");
    assert_eq!(
      v["url"],
      format!("http://127.0.0.1:{}/request-info?x=1&y=%20z", srv.port)
    );
    assert_eq!(v["host"], format!("127.0.0.1:{}", srv.port));
    assert_eq!(v["custom"], "hello");
    assert_eq!(v["multi"], "a, b");
    assert_eq!(v["bodyIsNull"], true, "a GET request has a null body");
    assert_eq!(
      v["signalIsAbortSignal"], true,
      "request.signal is an AbortSignal"
    );

    for method in ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
      let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
      let r = c
        .request(m, srv.url("/request-info"))
        .body("b")
        .send()
        .await
        .unwrap();
      let v: Value = r.json().await.unwrap();
      assert_eq!(v["method"], method);
      assert_eq!(v["bodyIsNull"], false, "{method} with a body");
    }

    let r = c
      .post(srv.url("/request-clone"))
      .body("clone me")
      .send()
      .await
      .unwrap();
    assert_eq!(
      r.json::<Value>().await.unwrap(),
      json!({"a": "clone me", "b": "clone me", "usedAfterRead": true, "copyUsed": true})
    );

    let r = c
      .post(srv.url("/body-used"))
      .json(&json!({"k": 1}))
      .send()
      .await
      .unwrap();
    assert_eq!(
      r.json::<Value>().await.unwrap(),
      json!({"before": false, "after": true, "secondRead": "TypeError", "data": {"k": 1}})
    );
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_signal_aborts_when_the_client_disconnects() {
  within(60, async {
    let srv = serve_one_isolate(&fixture("client-disconnect.js"));
    let c = client();
    // Answered requests never abort their signal.
    for _ in 0..3 {
      assert_eq!(
        get_text(&c, &srv.url("/quick")).await,
        (200, "false".into())
      );
    }
    assert_eq!(get_text(&c, &srv.url("/count")).await, (200, "[]".into()));

    // A client that gives up on /wait: its request's signal aborts.
    let mut conn = RawConn::connect(srv.port).await;
    conn.send(b"GET /wait HTTP/1.1\r\nHost: t\r\n\r\n").await;
    // The handler must be waiting on the signal before the client leaves.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(conn);
    let mut seen = String::new();
    for _ in 0..100 {
      seen = get_text(&c, &srv.url("/count")).await.1;
      if seen != "[]" {
        break;
      }
      tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
      seen,
      r#"["AbortError: The client disconnected"]"#,
      "stderr:\n{}",
      srv.stderr()
    );
    assert_still_serving(&srv, "/quick", "false").await;
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stacks_through_a_bundle_point_at_its_original_sources() {
  within(60, async {
    // The same esbuild bundle with its source map in a file and inline.
    for bundle in ["external.js", "inline.js"] {
      let srv = serve_script(&fixture(&format!("sourcemap/{bundle}")));
      let c = client();
      assert_eq!(get_text(&c, &srv.url("/throw")).await.0, 500);
      srv.wait_for_stderr("boom: from a handler", 10).await;
      srv.wait_for_stderr("sourcemap.src.js", 10).await;
      let log = srv.stderr();
      for frame in [
        "tests/fixtures/src/sourcemap-helpers.src.js:3:9",
        "tests/fixtures/src/sourcemap.src.js:9:7",
      ] {
        assert!(log.contains(frame), "{bundle}: no frame {frame}:\n{log}");
      }
      assert!(
        !log.contains(&format!("sourcemap/{bundle}:")),
        "{bundle}: a frame still points into the bundle:\n{log}"
      );
      assert_still_serving(&srv, "/", "ok").await;
    }
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_headers_go_out_as_byte_strings() {
  within(60, async {
    let srv = serve_script(&fixture("response-headers.js"));
    let r = client().get(srv.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
      r.headers().get("x-latin1").map(|v| v.as_bytes().to_vec()),
      Some(b"caf\xe9".to_vec())
    );
    assert_eq!(header(&r, "x-plain").as_deref(), Some("ok"));
    let cookies: Vec<&str> = r
      .headers()
      .get_all("set-cookie")
      .iter()
      .map(|v| v.to_str().unwrap())
      .collect();
    assert_eq!(cookies, ["a=1; Path=/", "b=2"]);
    assert_eq!(r.text().await.unwrap(), "headers");

    let none = client().get(srv.url("/none")).send().await.unwrap();
    assert_eq!(none.status(), 202);
    let mut names: Vec<&str> = none.headers().keys().map(|k| k.as_str()).collect();
    names.sort_unstable();
    // Only what hyper adds.
    assert_eq!(names, ["content-length", "date"], "{:?}", none.headers());
    assert_eq!(none.text().await.unwrap(), "");

    let two = client().get(srv.url("/two")).send().await.unwrap();
    assert_eq!(header(&two, "x-a").as_deref(), Some("1"));
    assert_eq!(
      header(&two, "content-type").as_deref(),
      Some("text/plain;charset=UTF-8")
    );
    assert_eq!(two.text().await.unwrap(), "two");
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhandled_rejection_of_a_handler_that_answered_at_once_is_reported() {
  within(60, async {
    let srv = serve_one_isolate(&fixture("unhandled-in-handler.js"));
    let c = client();
    assert_eq!(
      get_text(&c, &srv.url("/reject")).await,
      (200, "answered".to_string())
    );
    // Nothing else runs in the isolate: the report must come anyway.
    srv.wait_for_stderr("left unhandled in a handler", 10).await;
    assert_still_serving(&srv, "/", "answered").await;
  })
  .await;
}

// ---------------------------------------------------------------------------------------------
// Operator options
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v8_flags_reach_the_isolates() {
  within(60, async {
    let dir = scratch_dir("v8-flags");
    let script = dir.join("depth.js");
    std::fs::write(
      &script,
      "function depth(n) { try { return depth(n + 1); } catch { return n; } }\n\
       export default { fetch() { return new Response(String(depth(0))); } };\n",
    )
    .unwrap();
    let plain = serve_script(&script);
    let mut cmd = serve_script_cmd(&script);
    cmd.arg("--v8-flags=--stack-size=300");
    let flagged = serve(cmd);
    let c = client();
    let (_, usual) = get_text(&c, &plain.url("/")).await;
    let (_, small) = get_text(&c, &flagged.url("/")).await;
    let (usual, small): (u64, u64) = (usual.parse().unwrap(), small.parse().unwrap());
    assert!(
      small * 2 < usual,
      "a 300 KiB stack should allow far less recursion: {small} vs {usual}"
    );
  })
  .await;
}

#[test]
fn unknown_v8_flags_are_an_error() {
  let mut cmd = serve_script_cmd(&example("hello.js"));
  cmd.arg("--v8-flags=--no-such-flag-at-all");
  let stderr = serve_fails(cmd);
  assert!(
    stderr.contains("--v8-flags") && stderr.contains("--no-such-flag-at-all"),
    "{stderr}"
  );
}
