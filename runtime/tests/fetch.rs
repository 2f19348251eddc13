//! End-to-end tests of outbound `fetch()`: the real binary serves `tests/fixtures/fetch/client.js`
//! (port 0), and the test runs its own HTTP server on 127.0.0.1 for the script to fetch from. Each
//! request to the script names that server with `?upstream=http://127.0.0.1:PORT`.
//!
//! Run with `cargo test -p runtime --test fetch`. Every test has a time limit; when one fails,
//! the runtime's stderr is printed.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures::{SinkExt, StreamExt};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::Notify;

// ---------------------------------------------------------------------------------------------
// The runtime under test (the shared harness is in common/mod.rs)
// ---------------------------------------------------------------------------------------------

/// `tests/fixtures/fetch/<name>`.
fn fetch_fixture(name: &str) -> PathBuf {
  fixture("fetch").join(name)
}

/// `runtime serve client.js` (the shorthand: default limits but for CPU time, which a debug
/// build on a busy machine may need more of).
fn client_script_cmd() -> Command {
  let mut cmd = serve_script_cmd(&fetch_fixture("client.js"));
  cmd.args(["--cpu-limit", "5000"]);
  cmd
}

fn serve_client_script() -> Server {
  serve(client_script_cmd())
}

/// `runtime serve client.js` trusting the CA certificates in `pem` (RUNTIME_CA_CERTS).
fn serve_client_script_trusting(pem: &Path) -> Server {
  let mut cmd = client_script_cmd();
  cmd.env("RUNTIME_CA_CERTS", pem);
  serve(cmd)
}

/// `runtime serve --config limits.toml` (a subrequest limit of 3).
fn serve_limits_config() -> Server {
  serve(serve_config_cmd(&fetch_fixture("limits.toml")))
}

/// The script's URL for `route` (with its own query, if any), told where `upstream` is.
fn script_url(rt: &Server, route: &str, upstream: &Upstream) -> String {
  let sep = if route.contains('?') { '&' } else { '?' };
  format!("{}{sep}upstream=http://{}", rt.url(route), upstream.addr)
}

/// GET `url` on a fresh connection; the answer must be a 200 with a JSON body.
async fn get_json_ok(url: &str) -> Value {
  let r = deadline(30, url, client().get(url).send())
    .await
    .unwrap_or_else(|e| panic!("GET {url}: {e}"));
  let status = r.status();
  let body = r.text().await.unwrap();
  assert_eq!(status, 200, "GET {url}: {body}");
  serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: not JSON ({e}): {body}"))
}

/// A URL component with the few characters the tests use encoded.
fn encode(s: &str) -> String {
  s.replace('%', "%25")
    .replace('&', "%26")
    .replace('?', "%3F")
    .replace('#', "%23")
    .replace(' ', "%20")
    .replace('+', "%2B")
}

// ---------------------------------------------------------------------------------------------
// The upstream: a small hyper server the script fetches from
// ---------------------------------------------------------------------------------------------

type UpBody = BoxBody<Bytes, Infallible>;

#[derive(Default)]
struct UpState {
  /// Per id: opened by the test (or a request) to let a waiting response go on.
  gates: Mutex<HashMap<String, Arc<Notify>>>,
}

impl UpState {
  fn gate(&self, id: &str) -> Arc<Notify> {
    self
      .gates
      .lock()
      .unwrap()
      .entry(id.to_string())
      .or_default()
      .clone()
  }
}

struct Upstream {
  addr: SocketAddr,
  state: Arc<UpState>,
}

impl Upstream {
  async fn start() -> Upstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(UpState::default());
    let shared = state.clone();
    tokio::spawn(async move {
      loop {
        let Ok((stream, _)) = listener.accept().await else {
          return;
        };
        let state = shared.clone();
        tokio::spawn(async move {
          let service = service_fn(move |req| handle(req, state.clone(), addr));
          let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
        });
      }
    });
    Upstream { addr, state }
  }

  /// Lets the response or request waiting on `id` go on.
  fn open(&self, id: &str) {
    self.state.gate(id).notify_one();
  }

  /// Waits until something opened `id`.
  async fn opened(&self, id: &str) {
    self.state.gate(id).notified().await;
  }
}

fn full(body: impl Into<Bytes>) -> UpBody {
  Full::new(body.into()).boxed()
}

fn response(status: u16, body: UpBody) -> http::Response<UpBody> {
  let mut r = http::Response::new(body);
  *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
  r
}

/// A body whose chunks come from a channel.
fn channel_body() -> (futures::channel::mpsc::Sender<Bytes>, UpBody) {
  let (tx, rx) = futures::channel::mpsc::channel::<Bytes>(8);
  let body = StreamBody::new(rx.map(|b| Ok::<_, Infallible>(Frame::data(b))));
  (tx, BodyExt::boxed(body))
}

fn query(req: &http::Request<Incoming>) -> HashMap<String, String> {
  req
    .uri()
    .query()
    .unwrap_or("")
    .split('&')
    .filter_map(|kv| kv.split_once('='))
    .map(|(k, v)| (k.to_string(), v.replace("%20", " ")))
    .collect()
}

async fn handle(
  req: http::Request<Incoming>,
  state: Arc<UpState>,
  addr: SocketAddr,
) -> Result<http::Response<UpBody>, Infallible> {
  let path = req.uri().path().to_string();
  let q = query(&req);
  let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
  let r = match segments.as_slice() {
    // What arrived, as JSON; with a custom header and two cookies.
    ["echo"] => {
      let method = req.method().to_string();
      let target = req.uri().to_string();
      let mut headers = serde_json::Map::new();
      for (name, value) in req.headers() {
        headers.insert(
          name.to_string(),
          Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned()),
        );
      }
      let body = req.into_body().collect().await.unwrap().to_bytes();
      let echo = json!({
        "method": method,
        "target": target,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
      });
      let mut r = response(200, full(echo.to_string()));
      let h = r.headers_mut();
      h.insert("content-type", "application/json".parse().unwrap());
      h.insert("x-upstream", "yes".parse().unwrap());
      h.append("set-cookie", "a=1".parse().unwrap());
      h.append("set-cookie", "b=2".parse().unwrap());
      r
    }
    // `?code=NNN&reason=...`: that status and reason phrase, body "status body".
    ["status"] => {
      let code: u16 = q["code"].parse().unwrap();
      let body = if matches!(code, 204 | 304) {
        full("")
      } else {
        full("status body")
      };
      let mut r = response(code, body);
      if let Some(reason) = q.get("reason") {
        r.extensions_mut()
          .insert(hyper::ext::ReasonPhrase::try_from(reason.as_bytes().to_vec()).unwrap());
      }
      r
    }
    // `/redirect/CODE/N`: N redirects with status CODE (relative Locations), then /echo.
    ["redirect", code, n] => {
      let n: u32 = n.parse().unwrap();
      if n == 0 {
        return Box::pin(handle(rewrite(req, "/echo"), state, addr)).await;
      }
      let mut r = response(code.parse().unwrap(), full("redirecting"));
      r.headers_mut().insert(
        "location",
        format!("/redirect/{code}/{}", n - 1).parse().unwrap(),
      );
      r
    }
    // `?code=CODE&location=URL`: one redirect to anywhere (or none with no location).
    ["redirect-to"] => {
      let mut r = response(q["code"].parse().unwrap(), full(""));
      if let Some(location) = q.get("location") {
        let location = location.replace("%3A", ":").replace("%2F", "/");
        r.headers_mut()
          .insert("location", location.parse().unwrap());
      }
      r
    }
    // Sends "one\n", waits for the gate `id`, then sends "two\n".
    ["stream-gated"] => {
      let id = q["id"].clone();
      let (mut tx, body) = channel_body();
      tokio::spawn(async move {
        let _ = tx.send(Bytes::from_static(b"one\n")).await;
        state.gate(&id).notified().await;
        let _ = tx.send(Bytes::from_static(b"two\n")).await;
      });
      response(200, body)
    }
    // Sends "first" and then nothing, for as long as the client stays.
    ["stall-body"] => {
      let (mut tx, body) = channel_body();
      tokio::spawn(async move {
        let _ = tx.send(Bytes::from_static(b"first")).await;
        while !tx.is_closed() {
          tokio::time::sleep(Duration::from_millis(50)).await;
        }
      });
      response(200, body)
    }
    // Answers after a minute, unless the client goes away first; then gate "slow-gone" opens.
    ["slow"] => {
      struct Gone(Arc<UpState>);
      impl Drop for Gone {
        fn drop(&mut self) {
          self.0.gate("slow-gone").notify_one();
        }
      }
      let _gone = Gone(state.clone());
      tokio::time::sleep(Duration::from_secs(60)).await;
      response(200, full("slow"))
    }
    // Reads a streamed body; opens gate "seen-ID" once the first chunk is in, then answers
    // with the whole body (and the headers that came with it).
    ["upload"] => {
      let id = q["id"].clone();
      let method = req.method().to_string();
      let headers: serde_json::Map<String, Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
          (
            k.to_string(),
            Value::String(v.to_str().unwrap_or("").into()),
          )
        })
        .collect();
      let mut body = req.into_body();
      let mut received = Vec::new();
      let mut chunks = 0;
      while let Some(frame) = body.frame().await {
        let Ok(data) = frame.unwrap().into_data() else {
          continue;
        };
        if data.is_empty() {
          continue;
        }
        if chunks == 0 {
          state.gate(&format!("seen-{id}")).notify_one();
        }
        chunks += 1;
        received.extend_from_slice(&data);
      }
      let v = json!({
        "method": method,
        "headers": headers,
        "received": String::from_utf8_lossy(&received),
        "chunks": chunks,
      });
      response(200, full(v.to_string()))
    }
    // Waits until upload `id` got its first chunk.
    ["seen"] => {
      let gate = state.gate(&format!("seen-{}", q["id"]));
      gate.notified().await;
      // Leave the permit for the test, which may wait on it too.
      gate.notify_one();
      response(200, full("seen"))
    }
    _ => response(404, full("not found")),
  };
  Ok(r)
}

fn rewrite(req: http::Request<Incoming>, path: &str) -> http::Request<Incoming> {
  let (mut parts, body) = req.into_parts();
  parts.uri = path.parse().unwrap();
  http::Request::from_parts(parts, body)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integrity_metadata_is_checked() {
  within(60, async {
    let up = Upstream::start().await;
    let rt = serve_client_script();
    let v = get_json_ok(&script_url(&rt, "/integrity", &up)).await;
    assert_eq!(
      v["good"],
      json!({"ok": true, "value": "status body"}),
      "{v}"
    );
    for mismatch in ["wrong", "strongerWrong"] {
      assert_eq!(v[mismatch]["ok"], false, "{mismatch}: {v}");
      assert_eq!(v[mismatch]["error"]["isTypeError"], true, "{mismatch}: {v}");
    }
    assert_eq!(v["unknownOnly"]["value"], "status body", "{v}");
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_with_headers_both_ways() {
  within(60, async {
    let up = Upstream::start().await;
    let rt = serve_client_script();
    let v = get_json_ok(&script_url(&rt, "/get", &up)).await;
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["statusText"], "OK");
    assert_eq!(v["ok"], true);
    assert_eq!(v["type"], "basic");
    assert_eq!(v["redirected"], false);
    assert_eq!(v["url"], format!("http://{}/echo?x=1", up.addr));
    assert_eq!(v["upstreamHeader"], "yes");
    assert_eq!(v["cookies"], json!(["a=1", "b=2"]));
    let echo = &v["echo"];
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["target"], "/echo?x=1");
    assert_eq!(echo["headers"]["x-custom"], "abc");
    assert_eq!(echo["headers"]["authorization"], "Bearer t");
    assert_eq!(echo["headers"]["host"], up.addr.to_string());
    assert_eq!(echo["headers"]["accept"], "*/*");
    assert_eq!(echo["headers"]["user-agent"], "runtime/0.1");
    assert_eq!(echo["body"], "");
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_of_every_kind() {
  within(60, async {
    let up = Upstream::start().await;
    let rt = serve_client_script();
    let v = get_json_ok(&script_url(&rt, "/post", &up)).await;
    let check = |key: &str, method: &str, body: &str, content_type: Option<&str>| {
      let echo = &v[key];
      assert_eq!(echo["method"], method, "{key}: {echo}");
      assert_eq!(echo["body"], body, "{key}: {echo}");
      assert_eq!(
        echo["headers"]["content-type"].as_str(),
        content_type,
        "{key}: {echo}"
      );
      assert_eq!(
        echo["headers"]["content-length"],
        body.len().to_string(),
        "{key}: a body held whole is sent with its length: {echo}"
      );
    };
    check(
      "string",
      "POST",
      "hello string",
      Some("text/plain;charset=UTF-8"),
    );
    check("bytes", "PUT", "hello bytes", None);
    check("json", "POST", "{\"a\":1}", Some("application/json"));
    check(
      "params",
      "POST",
      "q=a+b",
      Some("application/x-www-form-urlencoded;charset=UTF-8"),
    );
    check("blob", "PATCH", "hello blob", Some("text/x-blob"));
    let form = &v["form"];
    let content_type = form["headers"]["content-type"].as_str().unwrap();
    assert!(
      content_type.starts_with("multipart/form-data; boundary="),
      "{form}"
    );
    let body = form["body"].as_str().unwrap();
    assert!(
      body.contains("name=\"field\"") && body.contains("value"),
      "{form}"
    );
    assert_eq!(v["empty"]["method"], "DELETE");
    assert_eq!(v["empty"]["body"], "");
    let head = &v["head"];
    assert_eq!(head["status"], 200, "{head}");
    assert_eq!(
      head["bodyIsNull"], true,
      "a HEAD response has no body: {head}"
    );
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_status_text() {
  within(60, async {
    let up = Upstream::start().await;
    let rt = serve_client_script();
    let v = get_json_ok(&script_url(
      &rt,
      "/status?code=418&reason=Short%20And%20Stout",
      &up,
    ))
    .await;
    assert_eq!(v["status"], 418, "{v}");
    assert_eq!(v["statusText"], "Short And Stout");
    assert_eq!(v["ok"], false);
    assert_eq!(v["text"], "status body");
    let v = get_json_ok(&script_url(&rt, "/status?code=404", &up)).await;
    assert_eq!(
      (v["status"].as_u64(), v["statusText"].as_str()),
      (Some(404), Some("Not Found"))
    );
    let v = get_json_ok(&script_url(&rt, "/status?code=204", &up)).await;
    assert_eq!(v["status"], 204, "{v}");
    assert_eq!(v["bodyIsNull"], true, "204 has a null body: {v}");
    let v = get_json_ok(&script_url(&rt, "/status?code=500", &up)).await;
    assert_eq!(
      (v["status"].as_u64(), v["text"].as_str()),
      (Some(500), Some("status body"))
    );
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_streams_through_chunk_by_chunk() {
  within(60, async {
    let up = Upstream::start().await;
    let rt = serve_client_script();
    // Returned as is: the client gets the first chunk while the upstream still holds the second.
    let r = deadline(
      20,
      "response headers through the proxy",
      client()
        .get(script_url(&rt, "/proxy?path=/stream-gated%3Fid=p1", &up))
        .send(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let mut got = Vec::new();
    while got.len() < 4 {
      let chunk = deadline(
        20,
        "first chunk before the upstream is released",
        stream.next(),
      )
      .await;
      got.extend_from_slice(&chunk.expect("body ended early").unwrap());
    }
    assert_eq!(got, b"one\n");
    up.open("p1");
    while let Some(chunk) = deadline(20, "rest of the body", stream.next()).await {
      got.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(got, b"one\ntwo\n");

    // Read by the script: its first chunk is there before the rest exists.
    let v = get_json_ok(&script_url(
      &rt,
      "/first-chunk?path=/stream-gated%3Fid=p2",
      &up,
    ))
    .await;
    assert_eq!(v["first"], "one\n");
    assert_eq!(v["transferEncoding"], Value::Null, "{v}");
    up.open("p2");
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_body_streams_out() {
  within(60, async {
    let up = Upstream::start().await;
    let rt = serve_client_script();
    // A ReadableStream made by the script (duplex: "half"): its second chunk is only made once
    // the upstream has the first (the script waits on /seen).
    let v = get_json_ok(&script_url(&rt, "/upload-js?id=js", &up)).await;
    assert_eq!(v["upload"]["received"], "js1-js2", "{v}");
    assert_eq!(v["upload"]["method"], "POST");
    assert_eq!(
      v["upload"]["headers"]["transfer-encoding"], "chunked",
      "{v}"
    );
    assert!(v["upload"]["chunks"].as_u64().unwrap() >= 2, "{v}");
    assert_eq!(v["noDuplex"]["ok"], false);
    assert_eq!(v["noDuplex"]["error"]["isTypeError"], true, "{v}");
    assert!(
      v["noDuplex"]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("duplex"),
      "{v}"
    );
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxying_a_post_streams_the_body_both_ways() {
  within(60, async {
    let up = Upstream::start().await;
    let rt = serve_client_script();
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let url = script_url(&rt, "/proxy-request?path=/upload%3Fid=px", &up);
    let upload = tokio::spawn(
      client()
        .post(url)
        .header("x-from-client", "1")
        .header("content-type", "text/x-parts")
        .body(reqwest::Body::wrap_stream(rx))
        .send(),
    );
    tx.send(Ok(Bytes::from_static(b"part-one|"))).await.unwrap();
    // The upstream must have the first part while the client still holds back the second.
    deadline(
      20,
      "upstream receiving the first part",
      up.opened("seen-px"),
    )
    .await;
    tx.send(Ok(Bytes::from_static(b"part-two"))).await.unwrap();
    drop(tx);
    let r = deadline(20, "proxied response", upload)
      .await
      .unwrap()
      .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["method"], "POST", "{v}");
    assert_eq!(v["received"], "part-one|part-two", "{v}");
    assert_eq!(v["headers"]["x-from-client"], "1", "{v}");
    assert_eq!(v["headers"]["content-type"], "text/x-parts", "{v}");
    assert_eq!(
      v["headers"]["host"],
      up.addr.to_string(),
      "the Host header is the upstream's, not the runtime's: {v}"
    );
  })
  .await;
}

fn redirect(rt: &Server, up: &Upstream, query: &str) -> impl Future<Output = Value> {
  let url = script_url(rt, &format!("/redirect?{query}"), up);
  async move { get_json_ok(&url).await }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_follow_manual_error() {
  within(90, async {
    let up = Upstream::start().await;
    let other = Upstream::start().await;
    let rt = serve_client_script();
    let base = format!("http://{}", up.addr);

    // follow (the default): two 302s, then the echo.
    let v = redirect(&rt, &up, "path=/redirect/302/2").await;
    assert_eq!(v["ok"], true, "{v}");
    let r = &v["value"];
    assert_eq!(r["status"], 200, "{v}");
    assert_eq!(r["redirected"], true);
    assert_eq!(r["url"], format!("{base}/redirect/302/0"));
    let echo: Value = serde_json::from_str(r["text"].as_str().unwrap()).unwrap();
    assert_eq!(echo["method"], "GET");
    assert_eq!(
      echo["headers"]["authorization"], "Bearer secret",
      "same origin keeps it"
    );

    // 303 turns a POST into a GET without body or content headers.
    let v = redirect(&rt, &up, "path=/redirect/303/1&method=POST&body=payload").await;
    let echo: Value = serde_json::from_str(v["value"]["text"].as_str().unwrap()).unwrap();
    assert_eq!(echo["method"], "GET", "{v}");
    assert_eq!(echo["body"], "");
    assert!(echo["headers"].get("content-type").is_none(), "{echo}");
    // So do 301 and 302 for a POST.
    for code in [301, 302] {
      let v = redirect(
        &rt,
        &up,
        &format!("path=/redirect/{code}/1&method=POST&body=p"),
      )
      .await;
      let echo: Value = serde_json::from_str(v["value"]["text"].as_str().unwrap()).unwrap();
      assert_eq!(echo["method"], "GET", "{code}: {v}");
      assert_eq!(echo["body"], "", "{code}: {v}");
    }
    // 307 and 308 keep the method and send the body again.
    for code in [307, 308] {
      let v = redirect(
        &rt,
        &up,
        &format!("path=/redirect/{code}/1&method=PUT&body=again"),
      )
      .await;
      let echo: Value = serde_json::from_str(v["value"]["text"].as_str().unwrap()).unwrap();
      assert_eq!(echo["method"], "PUT", "{code}: {v}");
      assert_eq!(echo["body"], "again", "{code}: {v}");
      assert_eq!(echo["headers"]["content-type"], "text/plain", "{code}: {v}");
    }
    // ... but not a body that was a stream.
    let v = redirect(&rt, &up, "path=/redirect/307/1&method=POST&body=s&stream=1").await;
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["error"]["isTypeError"], true, "{v}");

    // At most 20 redirects.
    let v = redirect(&rt, &up, "path=/redirect/302/20").await;
    assert_eq!(v["value"]["status"], 200, "20 redirects are followed: {v}");
    let v = redirect(&rt, &up, "path=/redirect/302/21").await;
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["error"]["isTypeError"], true);
    assert!(
      v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("too many redirects"),
      "{v}"
    );

    // manual: the redirect itself, as Workers returns it.
    let v = redirect(&rt, &up, "path=/redirect/301/1&mode=manual").await;
    let r = &v["value"];
    assert_eq!(r["status"], 301, "{v}");
    assert_eq!(r["location"], "/redirect/301/0");
    assert_eq!(r["redirected"], false);
    assert_eq!(r["text"], "redirecting");

    // error: a TypeError.
    let v = redirect(&rt, &up, "path=/redirect/302/1&mode=error").await;
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["error"]["isTypeError"], true);
    assert!(
      v["error"]["message"].as_str().unwrap().contains("'error'"),
      "{v}"
    );

    // To another origin: Authorization is dropped.
    let to = format!("http://{}/echo", other.addr);
    let v = redirect(
      &rt,
      &up,
      &format!(
        "path={}",
        encode(&format!("/redirect-to?code=307&location={to}"))
      ),
    )
    .await;
    let r = &v["value"];
    assert_eq!(r["url"], to, "{v}");
    let echo: Value = serde_json::from_str(r["text"].as_str().unwrap()).unwrap();
    assert_eq!(echo["headers"]["host"], other.addr.to_string());
    assert!(echo["headers"].get("authorization").is_none(), "{echo}");

    // To something that is not http(s): a network error.
    let v = redirect(
      &rt,
      &up,
      &format!("path={}", encode("/redirect-to?code=302&location=data:,x")),
    )
    .await;
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["error"]["isTypeError"], true);
    // A redirect status without Location is just a response.
    let v = redirect(
      &rt,
      &up,
      &format!("path={}", encode("/redirect-to?code=302")),
    )
    .await;
    assert_eq!(v["value"]["status"], 302, "{v}");
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_signal_cancels_requests_and_bodies() {
  within(60, async {
    let up = Upstream::start().await;
    let rt = serve_client_script();
    let v = get_json_ok(&script_url(&rt, "/abort", &up)).await;
    let in_flight = &v["inFlight"];
    assert_eq!(in_flight["ok"], false, "{v}");
    assert_eq!(in_flight["error"]["name"], "AbortError", "{v}");
    assert_eq!(in_flight["error"]["isDOMException"], true, "{v}");
    assert!(
      v["elapsed"].as_u64().unwrap() < 10_000,
      "the abort ends the request at once: {v}"
    );
    assert_eq!(v["already"]["error"]["name"], "AbortError", "{v}");
    assert_eq!(
      v["withReason"]["error"],
      json!({ "name": "RangeError", "message": "my reason", "isTypeError": false, "isDOMException": false }),
      "the signal's reason is the rejection: {v}"
    );
    assert_eq!(v["first"], "first");
    assert_eq!(v["afterAbort"]["ok"], false, "{v}");
    assert_eq!(v["afterAbort"]["error"]["name"], "AbortError", "{v}");
    // The aborted request's connection was closed: the upstream stopped working on it.
    deadline(20, "upstream seeing the aborted request go", up.opened("slow-gone")).await;
  })
  .await;
}

async fn fetch_error(rt: &Server, up: &Upstream, target: &str) -> Value {
  let route = format!("/error?target={}", encode(target));
  let v = get_json_ok(&script_url(rt, &route, up)).await;
  assert_eq!(v["ok"], false, "{target}: {v}");
  assert_eq!(v["error"]["isTypeError"], true, "{target}: {v}");
  v["error"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_clear_type_errors() {
  within(60, async {
    let up = Upstream::start().await;
    let rt = serve_client_script();
    // A port nobody listens on.
    let closed = {
      let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
      l.local_addr().unwrap().port()
    };
    let target = format!("http://127.0.0.1:{closed}/");
    let e = fetch_error(&rt, &up, &target).await;
    assert_eq!(
      e["message"],
      format!("fetch failed: connection refused to {target}"),
      "{e}"
    );
    let e = fetch_error(&rt, &up, "not a url").await;
    assert!(
      e["message"].as_str().unwrap().contains("Invalid URL"),
      "{e}"
    );
    let e = fetch_error(&rt, &up, "file:///etc/passwd").await;
    assert!(
      e["message"]
        .as_str()
        .unwrap()
        .contains("unsupported scheme file:"),
      "{e}"
    );
    let e = fetch_error(&rt, &up, "gopher://example.com/").await;
    assert!(
      e["message"]
        .as_str()
        .unwrap()
        .contains("unsupported scheme gopher:"),
      "{e}"
    );
    let e = fetch_error(&rt, &up, "about:blank").await;
    assert!(
      e["message"]
        .as_str()
        .unwrap()
        .contains("unsupported scheme about:"),
      "{e}"
    );
    // And the script goes on serving.
    let v = get_json_ok(&script_url(&rt, "/get", &up)).await;
    assert_eq!(v["status"], 200);
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_and_blob_urls() {
  within(60, async {
    let up = Upstream::start().await;
    let rt = serve_client_script();
    let v = get_json_ok(&script_url(&rt, "/data", &up)).await;
    let ok = |url: &str, content_type: &str, text: &str| {
      let r = &v[url];
      assert_eq!(r["ok"], true, "{url}: {r}");
      assert_eq!(r["value"]["status"], 200, "{url}: {r}");
      assert_eq!(r["value"]["statusText"], "OK", "{url}: {r}");
      assert_eq!(r["value"]["contentType"], content_type, "{url}: {r}");
      assert_eq!(r["value"]["text"], text, "{url}: {r}");
    };
    ok(
      "data:,Hello%2C%20World%21",
      "text/plain;charset=US-ASCII",
      "Hello, World!",
    );
    ok(
      "data:text/plain;base64,SGVsbG8sIFdvcmxkIQ==",
      "text/plain",
      "Hello, World!",
    );
    ok(
      "data:text/html;charset=utf-8,%3Ch1%3Ehi%3C%2Fh1%3E",
      "text/html;charset=utf-8",
      "<h1>hi</h1>",
    );
    ok("data:;base64,aGk=", "text/plain;charset=US-ASCII", "hi");
    ok(
      "data:application/json,{\"a\":1}#frag",
      "application/json",
      "{\"a\":1}",
    );
    assert_eq!(
      v["data:application/json,{\"a\":1}#frag"]["value"]["url"], "data:application/json,{\"a\":1}",
      "a response URL has no fragment"
    );
    for bad in ["data:text/plain;base64,%%%", "data:no-comma"] {
      assert_eq!(v[bad]["ok"], false, "{bad}: {v}");
      assert_eq!(v[bad]["error"]["isTypeError"], true, "{bad}: {v}");
    }
    assert_eq!(v["post"]["value"]["text"], "x", "{v}");

    let v = get_json_ok(&script_url(&rt, "/blob", &up)).await;
    let got = &v["got"];
    assert_eq!(got["ok"], true, "{v}");
    assert_eq!(got["value"]["status"], 200);
    assert_eq!(got["value"]["contentType"], "text/x-test");
    assert_eq!(got["value"]["length"], "9");
    assert_eq!(got["value"]["text"], "blob body");
    assert_eq!(v["post"]["error"]["isTypeError"], true, "{v}");
    assert_eq!(v["revoked"]["error"]["isTypeError"], true, "{v}");
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subrequest_limit_default_50() {
  within(90, async {
    let up = Upstream::start().await;
    let rt = serve_client_script();
    let v = get_json_ok(&script_url(&rt, "/many?n=51", &up)).await;
    assert_eq!(v["ok"], 50, "{v}");
    assert_eq!(v["error"]["isTypeError"], true, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
      message.contains("Too many subrequests") && message.contains("50"),
      "{v}"
    );
    // Counted per request, synchronously: in parallel, too.
    let v = get_json_ok(&script_url(&rt, "/many?n=52&parallel=1", &up)).await;
    assert_eq!(v["ok"], 50, "{v}");
    // The next request has a budget of its own.
    let v = get_json_ok(&script_url(&rt, "/many?n=50", &up)).await;
    assert_eq!(
      (v["ok"].as_u64(), &v["error"]),
      (Some(50), &Value::Null),
      "{v}"
    );
  })
  .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subrequest_limit_from_the_config() {
  within(60, async {
    let up = Upstream::start().await;
    let rt = serve_limits_config();
    let v = get_json_ok(&script_url(&rt, "/many?n=4", &up)).await;
    assert_eq!(v["ok"], 3, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("limit is 3"), "{v}");
    let v = get_json_ok(&script_url(&rt, "/many?n=3", &up)).await;
    assert_eq!(
      (v["ok"].as_u64(), &v["error"]),
      (Some(3), &Value::Null),
      "{v}"
    );
  })
  .await;
}

/// An https upstream on 127.0.0.1 with the self-signed certificate in tests/fixtures/tls.
async fn tls_upstream() -> SocketAddr {
  use rustls::pki_types::pem::PemObject;
  use rustls::pki_types::{CertificateDer, PrivateKeyDer};
  let tls = fixture("tls");
  let certs = CertificateDer::pem_file_iter(tls.join("cert.pem"))
    .unwrap()
    .collect::<Result<Vec<_>, _>>()
    .unwrap();
  let key = PrivateKeyDer::from_pem_file(tls.join("key.pem")).unwrap();
  let config =
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
      .with_safe_default_protocol_versions()
      .unwrap()
      .with_no_client_auth()
      .with_single_cert(certs, key)
      .unwrap();
  let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
  let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
  let addr = listener.local_addr().unwrap();
  tokio::spawn(async move {
    while let Ok((stream, _)) = listener.accept().await {
      let acceptor = acceptor.clone();
      tokio::spawn(async move {
        let Ok(tls) = acceptor.accept(stream).await else {
          return;
        };
        let service = service_fn(|_req: http::Request<Incoming>| async {
          Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
            b"hello over tls",
          ))))
        });
        let _ = hyper::server::conn::http1::Builder::new()
          .serve_connection(TokioIo::new(tls), service)
          .await;
      });
    }
  });
  addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_the_operators_ca_and_refused_without_it() {
  within(60, async {
    let up = Upstream::start().await;
    let tls = tls_upstream().await;
    let target = format!("https://127.0.0.1:{}/", tls.port());
    let route = format!("/fetch-text?target={}", encode(&target));

    let trusting = serve_client_script_trusting(&fixture("tls/ca.pem"));
    let v = get_json_ok(&script_url(&trusting, &route, &up)).await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(
      v["value"],
      json!({"status": 200, "text": "hello over tls"}),
      "{v}"
    );

    // The webpki roots alone do not trust a self-signed certificate.
    let plain = serve_client_script();
    let v = get_json_ok(&script_url(&plain, &route, &up)).await;
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["error"]["isTypeError"], true, "{v}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("certificate"), "{message}");
  })
  .await;
}
