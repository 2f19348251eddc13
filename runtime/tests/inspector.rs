//! The V8 inspector (`--inspect`, `--inspect-brk`) with a Chrome DevTools Protocol client
//! over a real WebSocket (tokio-tungstenite), as DevTools and VS Code attach: the target
//! list, a breakpoint hit by a real HTTP request, an expression evaluated on the paused
//! frame, resume, console messages, a heap snapshot, and pausing on the first statement.
//! Fixture: tests/fixtures/inspector/worker.js.

mod common;

use std::collections::VecDeque;

use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The fixture's `const greeting = ...` line, 0-based as CDP counts.
const GREETING_LINE: u64 = 7;

/// A CDP session: commands with ids, and the events that arrive meanwhile, kept in order.
struct Cdp {
  socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
  next_id: u64,
  events: VecDeque<Value>,
}

impl Cdp {
  async fn connect(url: &str) -> Self {
    let (socket, response) = deadline(10, "the inspector's WebSocket handshake", async {
      tokio_tungstenite::connect_async(url)
        .await
        .expect("the inspector accepts the WebSocket")
    })
    .await;
    assert_eq!(response.status(), 101);
    Self {
      socket,
      next_id: 1,
      events: VecDeque::new(),
    }
  }

  async fn receive(&mut self) -> Value {
    loop {
      match deadline(20, "a CDP message", self.socket.next()).await {
        Some(Ok(Message::Text(text))) => {
          return serde_json::from_str(&text).expect("CDP messages are JSON")
        }
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
        other => panic!("expected a CDP message, got {other:?}"),
      }
    }
  }

  /// Sends a command and returns its `result` (panics on a CDP error).
  async fn call(&mut self, method: &str, params: Value) -> Value {
    let id = self.next_id;
    self.next_id += 1;
    let command = json!({ "id": id, "method": method, "params": params });
    self
      .socket
      .send(Message::text(command.to_string()))
      .await
      .expect("send a CDP command");
    loop {
      let message = self.receive().await;
      if message["id"] == id {
        assert!(message.get("error").is_none(), "{method} failed: {message}");
        return message["result"].clone();
      }
      self.events.push_back(message);
    }
  }

  /// The `Debugger.scriptParsed` event of the script at `url`.
  async fn script_parsed(&mut self, url: &str) -> Value {
    self
      .event("Debugger.scriptParsed", |p| p["url"] == url)
      .await
  }

  /// The first event `method` (already received or still to come) that `matches`.
  async fn event(&mut self, method: &str, matches: impl Fn(&Value) -> bool) -> Value {
    if let Some(at) = self
      .events
      .iter()
      .position(|e| e["method"] == method && matches(&e["params"]))
    {
      return self.events.remove(at).unwrap()["params"].clone();
    }
    loop {
      let message = self.receive().await;
      if message["method"] == method && matches(&message["params"]) {
        return message["params"].clone();
      }
      self.events.push_back(message);
    }
  }
}

async fn get_json(url: &str) -> Value {
  let response = client()
    .get(url)
    .send()
    .await
    .expect("the inspector answers");
  assert_eq!(response.status(), 200, "GET {url}");
  assert!(response.headers()["content-type"]
    .to_str()
    .unwrap()
    .starts_with("application/json"));
  response.json().await.expect("JSON")
}

fn inspect_fixture(flag: &str) -> Server {
  let mut cmd = serve_script_cmd(&fixture("inspector/worker.js"));
  cmd.args([&format!("{flag}=127.0.0.1:0"), "--threads", "2"]);
  serve(cmd)
}

/// The one target's `webSocketDebuggerUrl`, after checking how `/json/list` describes it.
async fn only_target(server: &Server) -> String {
  let inspector = server.inspector_url().await;
  let version = get_json(&format!("{inspector}/json/version")).await;
  assert_eq!(version["Protocol-Version"], "1.3");
  assert!(version["V8-Version"].as_str().unwrap().starts_with("15"));
  let list = get_json(&format!("{inspector}/json/list")).await;
  let targets = list.as_array().expect("a list of targets");
  assert_eq!(targets.len(), 1, "{list}");
  let target = &targets[0];
  assert_eq!(target["type"], "node");
  assert_eq!(target["title"], "worker.js");
  assert_eq!(target["url"], file_url(&fixture("inspector/worker.js")));
  let ws = target["webSocketDebuggerUrl"].as_str().unwrap().to_string();
  let id = target["id"].as_str().unwrap();
  assert!(ws.ends_with(&format!("/ws/{id}")), "{ws}");
  assert!(target["devtoolsFrontendUrl"]
    .as_str()
    .unwrap()
    .contains(&format!("ws={}", ws.trim_start_matches("ws://"))));
  ws
}

#[tokio::test]
async fn a_breakpoint_is_hit_by_a_request_evaluated_on_and_resumed() {
  let server = inspect_fixture("--inspect");
  let ws = only_target(&server).await;
  assert!(
    server.stderr().contains("serving on one thread"),
    "--inspect serves on one thread: {}",
    server.stderr()
  );
  let mut cdp = Cdp::connect(&ws).await;
  cdp.call("Runtime.enable", json!({})).await;
  cdp.call("Debugger.enable", json!({})).await;
  let url = file_url(&fixture("inspector/worker.js"));
  let parsed = cdp.script_parsed(&url).await;
  let script_id = parsed["scriptId"].clone();
  assert!(script_id.is_string());
  let breakpoint = cdp
    .call(
      "Debugger.setBreakpointByUrl",
      json!({ "url": url, "lineNumber": GREETING_LINE }),
    )
    .await;
  let locations = breakpoint["locations"].as_array().unwrap();
  assert_eq!(locations.len(), 1, "the breakpoint resolves: {breakpoint}");
  assert_eq!(locations[0]["lineNumber"], GREETING_LINE);
  let breakpoint_id = breakpoint["breakpointId"].as_str().unwrap().to_string();

  // A real request runs into it; its response waits while the isolate is paused.
  let request = tokio::spawn({
    let url = server.url("/paused/here?x=1");
    async move {
      let response = client().get(url).send().await.unwrap();
      (response.status().as_u16(), response.text().await.unwrap())
    }
  });
  let paused = cdp.event("Debugger.paused", |_| true).await;
  assert_eq!(paused["hitBreakpoints"], json!([breakpoint_id]), "{paused}");
  let frame = &paused["callFrames"][0];
  assert_eq!(frame["location"]["lineNumber"], GREETING_LINE);
  assert_eq!(frame["location"]["scriptId"], script_id);
  let frame_id = frame["callFrameId"].clone();
  assert!(
    !request.is_finished(),
    "the response waits for the paused handler"
  );

  let evaluated = cdp
    .call(
      "Debugger.evaluateOnCallFrame",
      json!({ "callFrameId": frame_id, "expression": "`${hits * 10} ${new URL(request.url).pathname}`" }),
    )
    .await;
  assert_eq!(
    evaluated["result"]["value"], "10 /paused/here",
    "{evaluated}"
  );
  cdp.call("Debugger.resume", json!({})).await;
  cdp.event("Debugger.resumed", |_| true).await;

  let (status, body) = deadline(10, "the response after resume", request)
    .await
    .unwrap();
  assert_eq!((status, body.as_str()), (200, "hello 1"));
  // The script's console call reached the debugger, with its arguments.
  let console = cdp
    .event("Runtime.consoleAPICalled", |p| {
      p["args"][0]["value"] == "served"
    })
    .await;
  assert_eq!(console["type"], "log");
  assert_eq!(console["args"][1]["value"], 1);
  // ... and the server's own log, as without a debugger.
  server.wait_for_stderr("served 1", 10).await;

  // With the breakpoint removed, requests run through.
  cdp
    .call(
      "Debugger.removeBreakpoint",
      json!({ "breakpointId": breakpoint_id }),
    )
    .await;
  let response = client().get(server.url("/")).send().await.unwrap();
  assert_eq!(response.text().await.unwrap(), "hello 2");
}

#[tokio::test]
async fn a_cpu_profile_and_a_heap_snapshot_are_taken_over_the_session() {
  let server = inspect_fixture("--inspect");
  let ws = only_target(&server).await;
  let mut cdp = Cdp::connect(&ws).await;
  cdp.call("Profiler.enable", json!({})).await;
  // Sampled every 100 µs over a few ms of handler time: the handler is in many samples.
  cdp
    .call("Profiler.setSamplingInterval", json!({ "interval": 100 }))
    .await;
  cdp.call("Profiler.start", json!({})).await;
  let c = client();
  for _ in 0..300 {
    assert_eq!(get_text(&c, &server.url("/")).await.0, 200);
  }
  let profile = cdp.call("Profiler.stop", json!({})).await;
  let nodes = profile["profile"]["nodes"].as_array().unwrap();
  assert!(
    nodes
      .iter()
      .any(|n| n["callFrame"]["functionName"] == "fetch"
        && n["callFrame"]["url"] == file_url(&fixture("inspector/worker.js")).as_str()),
    "the worker's fetch handler is in the profile"
  );

  cdp.call("HeapProfiler.enable", json!({})).await;
  let id = cdp.next_id;
  cdp.next_id += 1;
  let command = json!({ "id": id, "method": "HeapProfiler.takeHeapSnapshot", "params": {} });
  cdp
    .socket
    .send(Message::text(command.to_string()))
    .await
    .unwrap();
  let mut snapshot = String::new();
  loop {
    let message = cdp.receive().await;
    if message["method"] == "HeapProfiler.addHeapSnapshotChunk" {
      snapshot.push_str(message["params"]["chunk"].as_str().unwrap());
    } else if message["id"] == id {
      assert!(message.get("error").is_none(), "{message}");
      break;
    }
  }
  let snapshot: Value = serde_json::from_str(&snapshot).expect("the chunks make one JSON snapshot");
  assert!(snapshot["snapshot"]["node_count"].as_u64().unwrap() > 1000);
  assert!(
    snapshot["strings"].as_array().unwrap().iter().any(|s| s
      .as_str()
      .is_some_and(|s| s.contains("const greeting = `hello"))),
    "the worker's source is in its heap"
  );
}

#[tokio::test]
async fn inspect_brk_waits_for_a_debugger_and_pauses_on_the_first_statement() {
  let server = inspect_fixture("--inspect-brk");
  let ws = only_target(&server).await;
  server
    .wait_for_stderr("waiting for a debugger to attach", 10)
    .await;
  // A request meanwhile waits for the worker's start.
  let request = tokio::spawn({
    let url = server.url("/");
    async move {
      client()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
    }
  });
  tokio::time::sleep(std::time::Duration::from_millis(300)).await;
  assert!(!request.is_finished(), "the worker waits for a debugger");

  let mut cdp = Cdp::connect(&ws).await;
  cdp.call("Runtime.enable", json!({})).await;
  cdp.call("Debugger.enable", json!({})).await;
  let url = file_url(&fixture("inspector/worker.js"));
  let parsed = cdp.script_parsed(&url).await;
  cdp.call("Runtime.runIfWaitingForDebugger", json!({})).await;
  let paused = cdp.event("Debugger.paused", |_| true).await;
  let frame = &paused["callFrames"][0];
  assert_eq!(
    frame["location"]["scriptId"], parsed["scriptId"],
    "{paused}"
  );
  // The top level's first statement: `let hits = 0;`, 0-based line 3.
  assert_eq!(frame["location"]["lineNumber"], 3, "{paused}");
  assert!(!request.is_finished());
  cdp.call("Debugger.resume", json!({})).await;
  assert_eq!(
    deadline(10, "the response", request).await.unwrap(),
    "hello 1"
  );
}

#[tokio::test]
async fn the_inspector_refuses_what_is_no_session() {
  let server = inspect_fixture("--inspect");
  let inspector = server.inspector_url().await;
  only_target(&server).await;
  let c = client();
  let missing = c
    .get(format!("{inspector}/ws/no-such-target"))
    .send()
    .await
    .unwrap();
  assert_eq!(missing.status(), 400, "not a WebSocket handshake");
  let unknown = c.get(format!("{inspector}/nothing")).send().await.unwrap();
  assert_eq!(unknown.status(), 404);
  let error = tokio_tungstenite::connect_async(format!(
    "{}/ws/00000000-0000-4000-8000-000000000000",
    inspector.replace("http://", "ws://")
  ))
  .await
  .expect_err("no such target");
  assert!(error.to_string().contains("404"), "{error}");
}

#[tokio::test]
async fn a_debugger_reattaches_to_the_worker_after_a_dev_reload() {
  let dir = scratch_dir("inspector-dev");
  let script = dir.join("worker.js");
  std::fs::copy(fixture("inspector/worker.js"), &script).unwrap();
  let mut cmd = dev_cmd(["--inspect=127.0.0.1:0"]);
  cmd.arg(&script);
  let server = serve(cmd);
  server.wait_for_stderr("dev: watching", 10).await;
  let inspector = server.inspector_url().await;
  let list = get_json(&format!("{inspector}/json/list")).await;
  let ws = list[0]["webSocketDebuggerUrl"]
    .as_str()
    .unwrap()
    .to_string();
  let mut old = Cdp::connect(&ws).await;
  old.call("Runtime.enable", json!({})).await;
  let c = client();
  assert_eq!(
    get_text(&c, &server.url("/")).await,
    (200, "hello 1".into())
  );

  let source = std::fs::read_to_string(&script).unwrap();
  std::fs::write(&script, source.replace("`hello ", "`howdy ")).unwrap();
  server.wait_for_stderr("dev: reloaded", 10).await;
  // The next request starts the new version's isolate; the session on the old one ends.
  assert_eq!(
    get_text(&c, &server.url("/")).await,
    (200, "howdy 1".into())
  );
  loop {
    match deadline(10, "the old session to end", old.socket.next()).await {
      Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
      Some(Ok(_)) => continue,
    }
  }

  // The same target now debugs the new version.
  let mut new = Cdp::connect(&ws).await;
  new.call("Debugger.enable", json!({})).await;
  let url = file_url(&std::fs::canonicalize(&script).unwrap());
  let parsed = new.script_parsed(&url).await;
  let source = new
    .call(
      "Debugger.getScriptSource",
      json!({ "scriptId": parsed["scriptId"] }),
    )
    .await;
  assert!(source["scriptSource"].as_str().unwrap().contains("`howdy "));
}

/// chrome-remote-interface (npm), installed once into target/inspector-tools beside a copy of
/// the fixture's client script; returns that script.
fn cdp_client_script() -> std::path::PathBuf {
  static TOOLS: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
  TOOLS
    .get_or_init(|| {
      let dir = repo_root().join("target/inspector-tools");
      if !dir.join("node_modules/chrome-remote-interface").exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let installed = std::process::Command::new("npm")
          .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
          .arg(&dir)
          .arg("chrome-remote-interface@0.34.0")
          .status()
          .expect("npm (Node.js) runs the CDP client");
        assert!(
          installed.success(),
          "npm install chrome-remote-interface failed"
        );
      }
      let script = dir.join("cdp-client.mjs");
      std::fs::copy(fixture("inspector/cdp-client.mjs"), &script).unwrap();
      script
    })
    .clone()
}

#[tokio::test]
async fn chrome_remote_interface_debugs_a_worker() {
  let script = cdp_client_script();
  let server = inspect_fixture("--inspect");
  let inspector = server.inspector_url().await;
  let port = inspector.rsplit(':').next().unwrap().to_string();
  let output = deadline(
    60,
    "the CDP client",
    tokio::process::Command::new("node")
      .arg(&script)
      .arg(&port)
      .arg(server.url("/from-node"))
      .arg(file_url(&fixture("inspector/worker.js")))
      .output(),
  )
  .await
  .expect("node runs");
  assert!(
    output.status.success(),
    "the client failed: {}",
    String::from_utf8_lossy(&output.stderr)
  );
  let seen: Value = serde_json::from_slice(&output.stdout).expect("one JSON line");
  assert_eq!(
    seen,
    json!({
      "targets": ["worker.js"],
      "protocol": "1.3",
      "hit": true,
      "line": GREETING_LINE,
      "value": 10,
      "body": "hello 1",
    })
  );
}
