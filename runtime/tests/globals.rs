//! The global scope a script sees, checked through the real server: every
//! ECMA-429 interface and global is present and basically works, and nothing
//! of the engine (Deno, ops, Node's globals, file or node: imports) leaks in.

mod common;

use common::*;

#[tokio::test]
async fn ecma_429_globals_present_working_and_nothing_leaks() {
  let server = serve_one_isolate(&fixture("globals.js"));
  let body: serde_json::Value = within(30, async {
    reqwest::get(server.url("/"))
      .await
      .unwrap()
      .json()
      .await
      .unwrap()
  })
  .await;
  assert_eq!(body["missing"], serde_json::json!([]), "{body}");
  assert_eq!(body["leaked"], serde_json::json!([]), "{body}");
  assert_eq!(body["failures"], serde_json::json!([]), "{body}");
}
