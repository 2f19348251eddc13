//! The global scope a script sees, checked through the real server: every
//! ECMA-429 interface and global is present and basically works, and nothing
//! of the engine (Deno, ops, Node's globals, file or node: imports) leaks in.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Server {
  child: Child,
  port: u16,
}

impl Drop for Server {
  fn drop(&mut self) {
    let _ = self.child.kill();
    let _ = self.child.wait();
  }
}

fn serve(fixture: &str) -> Server {
  let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    .join("../tests/fixtures")
    .join(fixture);
  let mut child = Command::new(env!("CARGO_BIN_EXE_runtime"))
    .args([
      "serve",
      script.to_str().unwrap(),
      "--port",
      "0",
      "--threads",
      "1",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .expect("runtime starts");
  let mut line = String::new();
  BufReader::new(child.stdout.take().unwrap())
    .read_line(&mut line)
    .unwrap();
  let port = line
    .trim()
    .strip_prefix("Listening on http://127.0.0.1:")
    .and_then(|rest| rest.strip_suffix('/'))
    .and_then(|p| p.parse().ok())
    .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
  Server { child, port }
}

#[tokio::test]
async fn ecma_429_globals_present_working_and_nothing_leaks() {
  let server = serve("globals.js");
  let body: serde_json::Value = tokio::time::timeout(Duration::from_secs(30), async {
    reqwest::get(format!("http://127.0.0.1:{}/", server.port))
      .await
      .unwrap()
      .json()
      .await
      .unwrap()
  })
  .await
  .expect("answer within 30 s");
  assert_eq!(body["missing"], serde_json::json!([]), "{body}");
  assert_eq!(body["leaked"], serde_json::json!([]), "{body}");
  assert_eq!(body["failures"], serde_json::json!([]), "{body}");
}
