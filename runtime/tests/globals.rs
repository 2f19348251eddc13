//! The global scope a script sees, checked through the real server: every
//! ECMA-429 interface and global is present and basically works, and nothing
//! of the engine (Deno, ops, Node's globals, file or node: imports) leaks in.

mod common;

use common::*;

#[tokio::test]
async fn ecma_429_globals_present_working_and_nothing_leaks() {
  // One request checks every interface (key generation included): more CPU than the default
  // 50 ms on a loaded CI machine running a debug build.
  let mut cmd = serve_script_cmd(&fixture("globals.js"));
  cmd.args(["--threads", "1", "--cpu-limit", "2000"]);
  let server = serve(cmd);
  let (_, body) = within(30, get_json(&reqwest::Client::new(), &server.url("/"))).await;
  assert_eq!(body["missing"], serde_json::json!([]), "{body}");
  assert_eq!(body["leaked"], serde_json::json!([]), "{body}");
  assert_eq!(body["failures"], serde_json::json!([]), "{body}");
}

#[tokio::test]
async fn kmac_takes_its_output_length_as_length_or_the_older_output_length() {
  let server = serve(serve_script_cmd(&fixture("webcrypto-kmac.js")));
  let (_, body) = within(30, get_json(&reqwest::Client::new(), &server.url("/"))).await;
  // NIST SP 800-185 KMAC sample #1.
  let sample = "e5780b0d3ea6f7d3a429c5706aa43a00fadbd7d49628839e3187243f456ee14e";
  assert_eq!(body["length"], sample, "{body}");
  assert_eq!(body["outputLength"], sample, "{body}");
  assert_eq!(body["verified"], true, "{body}");
  let missing = body["missing"].as_str().unwrap_or_default();
  assert!(
    missing.starts_with("TypeError") && missing.contains("'length' is required"),
    "{body}"
  );
}
