//! TypeScript modules run directly (tests/fixtures/typescript/): `runtime serve worker.ts` strips
//! the types of the entry point and of what it imports (`./x.js` naming `x.ts`, extensionless
//! imports, type-only modules, enums and parameter properties), a throw's logged stack points at
//! the `.ts` line and column, a syntax error names file, line and column at start-up, and each
//! module is transpiled once per process however many isolates load it.

mod common;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn a_typescript_worker_and_its_imports_run_without_a_build_step() {
  within(60, async {
    let mut srv = serve(serve_script_cmd(&fixture("typescript/worker.ts")));
    let c = client();
    let (status, body) = get_json(&c, &srv.url("/")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
      body,
      json!({ "greeting": "hello, ts", "total": 43, "kind": "Module", "shape": 6 })
    );
    srv.stop_cleanly().await;
  })
  .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_throw_in_typescript_logs_a_stack_at_the_ts_line_and_column() {
  within(60, async {
    let mut srv = serve(serve_script_cmd(&fixture("typescript/worker.ts")));
    let c = client();
    let (status, _) = get_text(&c, &srv.url("/throw")).await;
    assert_eq!(status, 500);
    srv.wait_for_stderr("typescript/lib/fail.ts:7:9", 10).await;
    let log = srv.stderr();
    assert!(log.contains("Error: failed: from TypeScript"), "{log}");
    assert!(log.contains("typescript/worker.ts:21:"), "{log}");
    // The next request is served.
    assert_eq!(get_json(&c, &srv.url("/")).await.0, 200);
    srv.stop_cleanly().await;
  })
  .await;
}

#[test]
fn a_typescript_syntax_error_names_file_line_and_column() {
  let stderr = serve_fails(serve_script_cmd(&fixture("typescript/bad.ts")));
  assert!(
    stderr.contains("typescript/bad.ts:3:43: Unexpected token"),
    "{stderr}"
  );
}

/// Every request in its own isolate: each loads the three modules, and the process transpiles
/// them once.
#[tokio::test(flavor = "multi_thread")]
async fn modules_are_transpiled_once_per_process_not_per_isolate() {
  within(60, async {
    let mut cmd = serve_script_cmd(&fixture("typescript/worker.ts"));
    cmd.args(["--isolation", "request", "--threads", "2"]);
    cmd.env("RUST_LOG", "info,runtime_engine::typescript=debug");
    let mut srv = serve(cmd);
    let c = client();
    for _ in 0..6 {
      assert_eq!(get_json(&c, &srv.url("/")).await.0, 200);
    }
    // lib/types.ts is never loaded: its only import is `import type`, which is stripped.
    assert!(srv.log_lines_with(&["lib/types.ts"]).is_empty());
    for module in ["worker.ts", "lib/math.ts", "lib/fail.ts"] {
      let lines = srv.log_lines_with(&[&format!("typescript/{module}: transpiled")]);
      assert_eq!(lines.len(), 1, "{module}: {lines:?}");
    }
    srv.stop_cleanly().await;
  })
  .await;
}
