//! URL parsing through the real server: cases the `url` crate (behind
//! deno_web's URL ops) got wrong and ada (ext/src/url.rs, swapped in for
//! those ops) gets right, in a fresh isolate from the snapshot, including
//! after V8 has optimized the callers (tests/fixtures/url.js).

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn url_parsing_and_setters_follow_the_url_standard() {
  // The loop takes longer than the default 50 ms CPU limit in a debug build.
  let mut cmd = serve_script_cmd(&fixture("url.js"));
  cmd.args(["--threads", "1", "--cpu-limit", "10000"]);
  let server = serve(cmd);
  let c = client();
  let (status, body) = within(30, get_json(&c, &server.url("/"))).await;
  assert_eq!(status, 200, "{body}");
  let expected = json!({
    "opaque": ["non-special:opaque %20?hi", "opaque %20", "?hi"],
    "fileHost": ["file://example.net/C:/", "example.net", "/C:/"],
    "fileEmptyHost": "file:////foo",
    "tripleSlashAgainstBase": "http://test/",
    "dotSlash": ["non-spec:/.//p", "", "//p"],
    "caret": "wss://host/%5E",
    "portWhitespace": "https://domain.com:3000/",
    "searchOnOpaque": "data:space %20#fragment",
    "hostnameDropsDot": "non-spec://h//p",
    "pathnameDot": "non-spec:/.//p",
    "searchParamsOnOpaque": ["data:space   %20#test", "space   %20"],
    "invalidAce": ["TypeError", false],
    "invalidAceSetter": "https://example.com/",
    "validAce": "https://xn--nxasmq6b.com/",
    "hotWrong": 0,
  });
  for (case, want) in expected.as_object().unwrap() {
    assert_eq!(&body[case], want, "case {case}; whole answer: {body}");
  }
}
