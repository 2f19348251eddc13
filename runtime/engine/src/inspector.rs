//! The V8 inspector (`--inspect[=ADDR]`, `--inspect-brk[=ADDR]`): Chrome
//! DevTools, VS Code and other Chrome DevTools Protocol clients find the
//! workers at `/json/list` and attach to one over a WebSocket at
//! `/ws/ID`: breakpoints, stepping, the console, heap snapshots.
//!
//! Every worker is one target, with an id that stays the same for the life
//! of the process. Its live isolate registers here when it is made (each
//! new isolate of the worker replaces the last: an eviction, a limit, a
//! `runtime dev` reload), and a session attached to an isolate that goes
//! away is closed. The protocol itself is deno_core's `JsRuntimeInspector`;
//! this module is the HTTP and WebSocket front of it, on a thread of its
//! own, so it answers while an isolate is paused at a breakpoint.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use deno_core::futures::channel::mpsc;
use deno_core::futures::{SinkExt, StreamExt};
use deno_core::{
  InspectorMsg, InspectorSessionChannels, InspectorSessionKind, InspectorSessionProxy,
  JsRuntimeInspector,
};
use http_body_util::Full;
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::side_server::{respond, text};

/// The inspector server and its targets, shared by the isolate threads
/// (which register their isolates) and the server's own thread.
pub struct Inspector {
  addr: SocketAddr,
  targets: Mutex<HashMap<String, Target>>,
  /// `--inspect-brk`: workers whose first isolate has not started yet; it
  /// waits for a debugger and pauses on its first statement.
  break_on_start: Mutex<HashSet<String>>,
}

struct Target {
  worker: String,
  /// The main module's URL.
  url: String,
  /// The live isolate's inspector takes new sessions here (none until the
  /// worker's first isolate starts).
  sessions: Option<mpsc::UnboundedSender<InspectorSessionProxy>>,
  /// Sessions that attached while the worker had no isolate: its next one
  /// takes them.
  waiting: Vec<InspectorSessionProxy>,
}

impl std::fmt::Debug for Inspector {
  fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    f.debug_struct("Inspector")
      .field("addr", &self.addr)
      .finish()
  }
}

/// A new target id: UUID-shaped (version 4), as DevTools clients expect,
/// and random, so that it cannot be guessed from the worker's name. Made
/// once per worker, it stays for the life of the process: a client can
/// reattach to a worker whose isolate was replaced.
fn new_target_id() -> String {
  use std::hash::{BuildHasher, Hasher};
  // Each RandomState has fresh random keys.
  let random = || {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish()
  };
  let (a, b) = (random(), random());
  format!(
    "{:08x}-{:04x}-4{:03x}-{:x}{:03x}-{:012x}",
    a >> 32,
    (a >> 16) & 0xffff,
    a & 0xfff,
    8 | (b >> 62),
    (b >> 50) & 0xfff,
    b & 0xffff_ffff_ffff
  )
}

impl Inspector {
  /// Binds `addr` now (a bad address is a start-up error) and serves the
  /// inspector for `workers` (name, main module URL) on a new thread.
  pub fn start(
    addr: SocketAddr,
    workers: &[(String, String)],
    break_on_start: bool,
  ) -> anyhow::Result<Arc<Self>> {
    let listener = crate::side_server::bind("--inspect", addr)?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
      tracing::warn!(
        "--inspect {addr}: anyone who reaches this address can run code in the workers (the protocol has no authentication)"
      );
    }
    let targets = workers
      .iter()
      .map(|(worker, url)| {
        (
          new_target_id(),
          Target {
            worker: worker.clone(),
            url: url.clone(),
            sessions: None,
            waiting: Vec::new(),
          },
        )
      })
      .collect();
    let inspector = Arc::new(Self {
      addr,
      targets: Mutex::new(targets),
      break_on_start: Mutex::new(if break_on_start {
        workers.iter().map(|(name, _)| name.clone()).collect()
      } else {
        HashSet::new()
      }),
    });
    let server = inspector.clone();
    crate::side_server::spawn("inspector", listener, move |request| server.answer(request))?;
    tracing::info!(
      "inspector on http://{addr}/json/list (Chrome: chrome://inspect, Configure… {addr})"
    );
    for (id, target) in inspector.targets.lock().unwrap().iter() {
      tracing::info!(worker = %target.worker, "debugger listening on ws://{addr}/ws/{id}");
    }
    Ok(inspector)
  }

  /// Makes `inspector` (a new isolate of `worker`) the one its target
  /// attaches to. Returns whether the isolate should wait for a debugger
  /// and pause on its first statement (`--inspect-brk`, first isolate).
  pub fn register(&self, worker: &str, inspector: &JsRuntimeInspector) -> bool {
    let mut targets = self.targets.lock().unwrap();
    if let Some(target) = targets.values_mut().find(|t| t.worker == worker) {
      let sessions = inspector.get_session_sender();
      for session in target.waiting.drain(..) {
        let _ = sessions.unbounded_send(session);
      }
      target.sessions = Some(sessions);
    }
    drop(targets);
    let wait = self.break_on_start.lock().unwrap().remove(worker);
    if wait {
      tracing::info!(worker, "waiting for a debugger to attach (--inspect-brk)");
    }
    wait
  }

  fn answer(&self, request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
      return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    let host = request
      .headers()
      .get(header::HOST)
      .and_then(|h| h.to_str().ok())
      .map_or_else(|| self.addr.to_string(), str::to_string);
    let path = request.uri().path().trim_end_matches('/').to_string();
    match path.as_str() {
      "/json" | "/json/list" => json(self.list(&host)),
      "/json/version" => json(serde_json::json!({
        "Browser": concat!("runtime/", env!("CARGO_PKG_VERSION")),
        "Protocol-Version": "1.3",
        "V8-Version": deno_core::v8::VERSION_STRING,
      })),
      _ => match path.strip_prefix("/ws/") {
        Some(id) => self.attach(id, request),
        None => text(
          StatusCode::NOT_FOUND,
          "not found: /json/list, /json/version and /ws/ID are served here\n",
        ),
      },
    }
  }

  /// The targets, as Chrome's remote debugging `/json/list` describes them.
  fn list(&self, host: &str) -> serde_json::Value {
    let targets = self.targets.lock().unwrap();
    let mut list: Vec<_> = targets
      .iter()
      .map(|(id, target)| {
        serde_json::json!({
          "description": format!("worker {}", target.worker),
          "devtoolsFrontendUrl": format!(
            "devtools://devtools/bundled/js_app.html?experiments=true&v8only=true&ws={host}/ws/{id}"
          ),
          "devtoolsFrontendUrlCompat": format!(
            "devtools://devtools/bundled/inspector.html?experiments=true&v8only=true&ws={host}/ws/{id}"
          ),
          "faviconUrl": "",
          "id": id,
          "title": target.worker,
          "type": "node",
          "url": target.url,
          "webSocketDebuggerUrl": format!("ws://{host}/ws/{id}"),
        })
      })
      .collect();
    list.sort_by(|a, b| a["title"].as_str().cmp(&b["title"].as_str()));
    serde_json::Value::Array(list)
  }

  /// Upgrades to a WebSocket and connects it to the target's live isolate
  /// as a new inspector session.
  fn attach(&self, id: &str, request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let Some(key) = request
      .headers()
      .get(header::SEC_WEBSOCKET_KEY)
      .and_then(|k| k.to_str().ok())
      .map(str::to_string)
    else {
      return text(
        StatusCode::BAD_REQUEST,
        "a WebSocket handshake is expected here\n",
      );
    };
    if !self.targets.lock().unwrap().contains_key(id) {
      return text(StatusCode::NOT_FOUND, format!("no target {id}\n"));
    }
    // Messages from the isolate to the client, and from the client to it.
    let (to_client, mut for_client) = mpsc::unbounded::<InspectorMsg>();
    let (to_isolate, for_isolate) = mpsc::unbounded::<String>();
    let session = InspectorSessionProxy {
      channels: InspectorSessionChannels::Regular {
        tx: to_client,
        rx: for_isolate,
      },
      kind: InspectorSessionKind::NonBlocking {
        wait_for_disconnect: false,
      },
    };
    let worker = {
      let mut targets = self.targets.lock().unwrap();
      let target = targets.get_mut(id).expect("targets are never removed");
      // To the live isolate, or (none yet, or it is gone) to the next one
      // the worker starts (its next request starts it).
      let session = match &target.sessions {
        Some(sessions) => sessions
          .unbounded_send(session)
          .err()
          .map(|e| e.into_inner()),
        None => Some(session),
      };
      if let Some(session) = session {
        target.sessions = None;
        target.waiting.push(session);
      }
      target.worker.clone()
    };
    let on_upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
      let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(error) => {
          tracing::debug!(%worker, "inspector upgrade failed: {error}");
          return;
        }
      };
      tracing::info!(%worker, "debugger attached");
      let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
      let (mut sink, mut stream) = ws.split();
      let to_isolate = &to_isolate;
      let from_client = async move {
        while let Some(Ok(message)) = stream.next().await {
          let text = match message {
            Message::Text(text) => text.to_string(),
            Message::Binary(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Message::Close(_) => break,
            _ => continue,
          };
          if to_isolate.unbounded_send(text).is_err() {
            break;
          }
        }
      };
      let to_client = async move {
        while let Some(message) = for_client.next().await {
          if sink.send(Message::text(message.content)).await.is_err() {
            return;
          }
        }
        // The isolate went away: its session ended.
        let _ = sink.close().await;
      };
      tokio::select! {
        () = from_client => {}
        () = to_client => {}
      }
      to_isolate.close_channel();
      tracing::info!(%worker, "debugger detached");
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(
      header::UPGRADE,
      header::HeaderValue::from_static("websocket"),
    );
    headers.insert(
      header::CONNECTION,
      header::HeaderValue::from_static("Upgrade"),
    );
    if let Ok(accept) = header::HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
      headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
  }
}

fn json(value: serde_json::Value) -> Response<Full<Bytes>> {
  respond(
    StatusCode::OK,
    "application/json; charset=utf-8",
    value.to_string(),
  )
}
