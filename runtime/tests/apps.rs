//! A real-world app from npm, unchanged: a Hono app using its cors, etag and
//! basicAuth middleware, its streaming helpers and multipart uploads parsed by
//! `request.formData()`, bundled by esbuild (tests/fixtures/hono-middleware.js).

mod common;

use common::*;
use futures::StreamExt;

#[tokio::test]
async fn hono_cors_etag_basic_auth() {
  let srv = serve_one_isolate(&fixture("hono-middleware.js"));
  let c = reqwest::Client::new();
  within(30, async {
    let preflight = c
      .request(reqwest::Method::OPTIONS, srv.url("/api/data"))
      .header("origin", "https://app.example.com")
      .header("access-control-request-method", "POST")
      .send()
      .await
      .unwrap();
    assert_eq!(preflight.status(), 204);
    let h = preflight.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-methods"], "GET,POST");
    assert_eq!(h["access-control-max-age"], "600");

    let posted = c
      .post(srv.url("/api/data"))
      .header("origin", "https://app.example.com")
      .header("content-type", "application/json")
      .body(r#"{"a":1}"#)
      .send()
      .await
      .unwrap();
    assert_eq!(
      posted.headers()["access-control-allow-origin"],
      "https://app.example.com"
    );
    assert_eq!(posted.text().await.unwrap(), r#"{"received":{"a":1}}"#);

    let first = c.get(srv.url("/etag/doc")).send().await.unwrap();
    let etag = first.headers()["etag"].to_str().unwrap().to_string();
    assert!(etag.starts_with('"'), "{etag}");
    let again = c
      .get(srv.url("/etag/doc"))
      .header("if-none-match", &etag)
      .send()
      .await
      .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.text().await.unwrap(), "");

    let denied = c.get(srv.url("/admin/panel")).send().await.unwrap();
    assert_eq!(denied.status(), 401);
    assert!(denied.headers().contains_key("www-authenticate"));
    let wrong = c
      .get(srv.url("/admin/panel"))
      .basic_auth("admin", Some("nope"))
      .send()
      .await
      .unwrap();
    assert_eq!(wrong.status(), 401);
    let allowed = c
      .get(srv.url("/admin/panel"))
      .basic_auth("admin", Some("s3cret"))
      .send()
      .await
      .unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(allowed.text().await.unwrap(), "welcome, admin");
  })
  .await;
}

#[tokio::test]
async fn hono_streaming_helpers() {
  let srv = serve_one_isolate(&fixture("hono-middleware.js"));
  let c = reqwest::Client::new();
  within(30, async {
    let response = c.get(srv.url("/stream/bytes")).send().await.unwrap();
    assert!(
      response.content_length().is_none(),
      "a stream has no length"
    );
    let mut body = response.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert_eq!(&first[..], b"chunk 1\n", "the first chunk comes on its own");
    let mut rest = Vec::new();
    while let Some(chunk) = body.next().await {
      rest.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(String::from_utf8(rest).unwrap(), "chunk 2\nchunk 3\n");

    let text = c.get(srv.url("/stream/text")).send().await.unwrap();
    assert!(text.headers()["content-type"]
      .to_str()
      .unwrap()
      .starts_with("text/plain"));
    assert_eq!(text.text().await.unwrap(), "line 1\nline 2\n");

    let sse = c.get(srv.url("/stream/sse")).send().await.unwrap();
    assert_eq!(sse.headers()["content-type"], "text/event-stream");
    assert_eq!(
      sse.text().await.unwrap(),
      "event: tick\ndata: tick 1\nid: 1\n\nevent: tick\ndata: tick 2\nid: 2\n\n"
    );
  })
  .await;
}

#[tokio::test]
async fn multipart_upload_parsed_by_form_data() {
  let srv = serve_one_isolate(&fixture("hono-middleware.js"));
  let boundary = "----runtime-test-boundary";
  let body = format!(
    "--{b}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nalice\r\n\
     --{b}\r\nContent-Disposition: form-data; name=\"tag\"\r\n\r\na\r\n\
     --{b}\r\nContent-Disposition: form-data; name=\"tag\"\r\n\r\nb\r\n\
     --{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"notes.txt\"\r\n\
     Content-Type: text/plain\r\n\r\nline one\r\nline two\r\n--{b}--\r\n",
    b = boundary
  );
  let json: serde_json::Value = within(30, async {
    reqwest::Client::new()
      .post(srv.url("/upload"))
      .header(
        "content-type",
        format!("multipart/form-data; boundary={boundary}"),
      )
      .body(body)
      .send()
      .await
      .unwrap()
      .json()
      .await
      .unwrap()
  })
  .await;
  assert_eq!(
    json,
    serde_json::json!({
      "name": "alice",
      "fileName": "notes.txt",
      "fileType": "text/plain",
      "fileText": "line one\r\nline two",
      "all": ["a", "b"],
    })
  );
}

/// A graphql-yoga API (an 830 KB esbuild bundle whose top level builds its schema: more CPU than
/// a request may use) starts under `--cpu-limit 5`, on the start-up budget, in a fresh isolate for
/// every request, and answers GraphQL queries.
#[tokio::test]
async fn graphql_yoga_starts_under_a_5_ms_request_limit() {
  let mut cmd = serve_script_cmd(&fixture("yoga-app.js"));
  cmd.args([
    "--threads",
    "1",
    "--cpu-limit",
    "5",
    "--isolation",
    "request",
  ]);
  let mut srv = serve(cmd);
  let c = reqwest::Client::new();
  within(60, async {
    for _ in 0..5 {
      let r = c
        .post(srv.url("/graphql"))
        .json(&serde_json::json!({
          "query": "query($id: ID!) { hello(name: \"yoga\") author(id: $id) { name books { title } } }",
          "variables": { "id": "1" },
        }))
        .send()
        .await
        .unwrap();
      assert_eq!(r.status(), 200);
      let v: serde_json::Value = r.json().await.unwrap();
      assert_eq!(
        v,
        serde_json::json!({ "data": {
          "hello": "Hello yoga",
          "author": { "name": "Ursula K. Le Guin",
            "books": [{ "title": "The Dispossessed" }, { "title": "The Left Hand of Darkness" }] },
        }})
      );
    }
    // A query that does not validate is the API's error, not the runtime's.
    let r = c
      .get(srv.url("/graphql?query=%7B%20nope%20%7D"))
      .send()
      .await
      .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(
      v["errors"][0]["message"]
        .as_str()
        .is_some_and(|m| m.contains("nope")),
      "{v}"
    );
    assert!(srv.log_lines_with(&["exceeded"]).is_empty(), "{}", srv.stderr());
    srv.stop_cleanly().await;
  })
  .await;
}
