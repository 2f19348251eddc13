//! HTMLRewriter through the real server: Cloudflare's documented examples
//! (rewrite links, inject a script, an async handler that fetches, document
//! handlers, text chunks, removeAndKeepContent, setInnerContent, onEndTag),
//! the errors (a throwing handler, a bad selector, a token used after its
//! handler), memory on a 100 MiB document, and that rewriter threads end.
//! Fixtures: tests/fixtures/htmlrewriter/.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn rewriter_server() -> Server {
  let mut cmd = serve_script_cmd(&fixture("htmlrewriter/worker.js"));
  // The 100 MiB document keeps JavaScript busy far longer than the default
  // 50 ms on a debug build.
  cmd.args(["--threads", "1", "--cpu-limit", "600000"]);
  serve(cmd)
}

fn proc_status(pid: u32, field: &str) -> u64 {
  let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
  let line = status
    .lines()
    .find(|l| l.starts_with(field))
    .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
  line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn threads(pid: u32) -> usize {
  std::fs::read_dir(format!("/proc/{pid}/task"))
    .unwrap()
    .count()
}

const REWRITTEN_PAGE: &str = r#"<!DOCTYPE html>
<html>
<head><title>Page</title></head>
<body>
<!-- nav -->
<a href="https://example.com/one">One</a>
<a href="https://example.com/two">Two</a>
<img src="https://example.com/i.png">
<p>Hello <b>world</b></p>
</body>
</html>"#;

#[tokio::test]
async fn documented_examples() {
  let server = rewriter_server();
  let c = client();
  within(60, async {
    // Rewrite links, with a class instance as the handler; status and
    // headers kept, Content-Length dropped.
    let r = get(&c, &server.url("/links")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-kept"], "yes");
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    assert!(r.headers().get("content-length").is_none(), "{:?}", r.headers());
    assert_eq!(r.text().await.unwrap(), REWRITTEN_PAGE);

    let (_, body) = get_text(&c, &server.url("/inject")).await;
    assert!(
      body.contains("<head><title>Page</title><script src=\"/analytics.js\"></script></head>"),
      "{body}"
    );
    assert!(body.contains("<a href=\"http://example.com/one\">"), "{body}");

    let (_, body) = get_text(&c, &server.url("/document")).await;
    assert_eq!(
      body,
      concat!(
        r#"<!DOCTYPE html PUBLIC "-//W3C//DTD HTML 4.01//EN" "http://www.w3.org/TR/html4/strict.dtd">"#,
        "<p>a<!-- changed -->b</p>",
        r#"<!-- seen: [["doctype","html","-//W3C//DTD HTML 4.01//EN","http://www.w3.org/TR/html4/strict.dtd"],"#,
        r#"["text","a",false],["comment"," hi "],["text","b",false]] -->"#,
      )
    );

    let (_, body) = get_text(&c, &server.url("/text")).await;
    assert_eq!(
      body,
      concat!(
        "<p>first half, second half|</p><p>x|</p>",
        r#"[["first half, ",false],["second half",false],["",true],["x",false],["",true]]"#,
      )
    );

    let (_, body) = get_text(&c, &server.url("/unwrap")).await;
    assert_eq!(body, "<div>kept <u>inner</u><span>other</span></div>");

    let (_, body) = get_text(&c, &server.url("/inner")).await;
    assert_eq!(
      body,
      concat!(
        r#"<div id="html"><em>new</em></div>"#,
        r#"<div id="text">&lt;em&gt;escaped&lt;/em&gt; &amp; more</div>"#,
        r#"[<div id="chain" data-same="true">(x)</div>]"#,
      )
    );

    let (_, body) = get_text(&c, &server.url("/endtag")).await;
    assert_eq!(
      body,
      "<article><h1>t</h1><footer>end</footer></article><!-- after --><em>a"
    );
  })
  .await;
}

#[tokio::test]
async fn element_attributes_and_namespace() {
  let server = rewriter_server();
  let c = client();
  let (_, body) = within(30, get_text(&c, &server.url("/attributes"))).await;
  let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
  assert_eq!(
    v,
    json!([
      {
        "tag": "input",
        "ns": "http://www.w3.org/1999/xhtml",
        "attrs": [["type", "text"], ["name", "q"], ["disabled", ""]],
        "has": true,
        "missing": null,
        "removedBefore": false
      },
      { "removedAfter": true }
    ])
  );
}

#[tokio::test]
async fn async_handler_awaits_a_fetch() {
  let upstream = serve_script(&fixture("htmlrewriter/upstream.js"));
  let server = rewriter_server();
  let c = client();
  let upstream_url = format!("http://127.0.0.1:{}", upstream.port);
  let (status, body) = within(
    30,
    get_text(&c, &server.url(&format!("/async?upstream={upstream_url}"))),
  )
  .await;
  assert_eq!(status, 200);
  assert!(
    body.contains(
      "<p>Hello <b>world</b></p><aside class=\"upstream\">from upstream</aside>\n</body>"
    ),
    "{body}"
  );
}

#[tokio::test]
async fn a_throwing_handler_fails_the_stream_and_is_logged() {
  let server = rewriter_server();
  let c = client();
  within(30, async {
    let r = get(&c, &server.url("/throw")).await;
    let outcome = r.text().await;
    match outcome {
      Err(_) => {}
      Ok(body) => assert!(!body.contains("</html>"), "the body ran to its end: {body}"),
    }
    server
      .wait_for_stderr(
        "HTMLRewriter: the transform failed: Error: boom from the handler",
        10,
      )
      .await;
    // The isolate carries on.
    let (status, body) = get_text(&client(), &server.url("/links")).await;
    assert_eq!(status, 200);
    assert_eq!(body, REWRITTEN_PAGE);
  })
  .await;
}

#[tokio::test]
async fn bad_selectors_and_stale_tokens_are_type_errors() {
  let server = rewriter_server();
  let c = client();
  within(30, async {
    let (_, v) = get_json(&c, &server.url("/bad-selector")).await;
    let results = v.as_array().unwrap();
    assert_eq!(results.len(), 4, "{v}");
    for r in results {
      assert_eq!(r["threw"], true, "{r}");
      assert_eq!(r["typeError"], true, "{r}");
    }
    assert_eq!(
      results[0]["message"],
      "The selector \"a[\" is invalid: Unexpected end of selector."
    );

    let (_, v) = get_json(&c, &server.url("/stale")).await;
    assert_eq!(v["text"], "<a href=\"/x\">x</a>");
    assert_eq!(v["threw"], true, "{v}");
    assert_eq!(v["typeError"], true, "{v}");
    assert_eq!(v["setThrew"], true, "{v}");
    assert!(
      v["message"]
        .as_str()
        .unwrap()
        .starts_with("This content token is no longer valid."),
      "{v}"
    );
  })
  .await;
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
  haystack
    .windows(needle.len())
    .filter(|w| *w == needle)
    .count()
}

/// Streams `url`'s body, returning its length, its last bytes and how many
/// rewritten links it has (within a chunk; one across two chunks is missed);
/// records the server's peak RSS (KiB) while it does.
async fn stream_body(
  c: &reqwest::Client,
  url: &str,
  pid: u32,
  peak: &mut u64,
) -> (usize, String, usize) {
  let mut r = get(c, url).await;
  assert_eq!(r.status(), 200);
  let mut len = 0;
  let mut tail = Vec::new();
  let mut n = 0u64;
  let mut links = 0;
  while let Some(chunk) = r.chunk().await.unwrap() {
    len += chunk.len();
    links += count(&chunk, b"<a href=\"https://example.com/\">");
    assert_eq!(count(&chunk, b"http://example.com/"), 0);
    tail.extend_from_slice(&chunk);
    if tail.len() > 4096 {
      tail.drain(..tail.len() - 4096);
    }
    n += 1;
    if n.is_multiple_of(64) {
      *peak = (*peak).max(proc_status(pid, "VmRSS:"));
    }
  }
  (len, String::from_utf8_lossy(&tail).into_owned(), links)
}

#[tokio::test]
async fn a_100_mib_document_streams_in_flat_memory() {
  let server = rewriter_server();
  let pid = server.pid();
  let c = client();
  within(300, async {
    // Warm up: the isolate, its pools, a first transform.
    let mut peak = 0;
    let (len, _, _) = stream_body(&c, &server.url("/big?mb=4&sparse"), pid, &mut peak).await;
    assert!(len > 4 << 20);
    let before = proc_status(pid, "VmRSS:");
    peak = before;
    let (len, tail, links) =
      stream_body(&c, &server.url("/big?mb=100&sparse"), pid, &mut peak).await;
    assert!(len > 100 << 20, "{len}");
    // One link per input chunk of 64 KiB, every one rewritten, and counted by
    // the handler (the document end's comment).
    let counted: usize = tail
      .rsplit_once("<!-- links: ")
      .and_then(|(_, n)| n.strip_suffix(" -->"))
      .unwrap_or_else(|| panic!("no count at the end: {tail}"))
      .parse()
      .unwrap();
    assert!(counted > 1500, "{counted}");
    assert!(links > 1500 && links <= counted, "{links} links seen, {counted} counted");
    let growth_mib = peak.saturating_sub(before) / 1024;
    assert!(
      growth_mib < 50,
      "RSS grew by {growth_mib} MiB (from {before} KiB to a peak of {peak} KiB) on a 100 MiB document"
    );
  })
  .await;
}

#[tokio::test]
async fn rewriter_threads_end_with_their_streams() {
  let server = rewriter_server();
  let pid = server.pid();
  within(120, async {
    let c = client();
    let (_, body) = get_text(&c, &server.url("/links")).await;
    assert_eq!(body, REWRITTEN_PAGE);
    let before = threads(pid);
    for _ in 0..30 {
      let (_, body) = get_text(&c, &server.url("/links")).await;
      assert_eq!(body, REWRITTEN_PAGE);
    }
    // Streams the client walks away from: cancelled mid-document.
    for _ in 0..10 {
      let c = client();
      let mut r = get(&c, &server.url("/big?mb=50")).await;
      assert!(r.chunk().await.unwrap().is_some());
      drop(r);
      drop(c);
    }
    // Streams whose handler failed.
    for _ in 0..5 {
      let _ = client()
        .get(server.url("/throw"))
        .send()
        .await
        .unwrap()
        .text()
        .await;
    }
    let start = Instant::now();
    loop {
      let now = threads(pid);
      if now <= before {
        break;
      }
      assert!(
        start.elapsed() < Duration::from_secs(30),
        "{now} threads, {before} before 45 transforms"
      );
      tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And the server still rewrites.
    let (_, body) = get_text(&c, &server.url("/links")).await;
    assert_eq!(body, REWRITTEN_PAGE);
  })
  .await;
}
