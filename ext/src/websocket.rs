//! WebSockets: the engine's half of a script's sockets.
//!
//! Both kinds end up the same: the server end of Workers' `WebSocketPair`
//! once its partner goes out in a 101 response, and a client socket from
//! `new WebSocket(url)` or `fetch()` with `Upgrade: websocket`. Each is a
//! [`WebSocketResource`] in the isolate's resource table and a pump task on
//! the same thread that owns the tungstenite stream ([`pump`]). They talk
//! through two channels:
//!
//! - to the peer, unbounded, with the bytes queued counted
//!   (`bufferedAmount`); past the worker's `websocket_buffer_kb` the socket
//!   is aborted with 1011 rather than buffering without bound;
//! - from the peer, bounded: the pump reads the next message only once
//!   JavaScript has room for it, so a script slow to handle messages slows
//!   its peer through TCP instead of filling memory.
//!
//! Pings are answered by the pump (tungstenite queues the pong, the pump
//! flushes it) without waking JavaScript. JavaScript (`js/58_websocket.js`)
//! holds the API; the ops here move messages.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use deno_core::url::Url;
use deno_core::{op2, v8, AsyncRefCell, OpState, RcRef, Resource, ResourceId};
use deno_error::JsErrorBox;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::console::ScriptName;
use crate::http::{answer_response, build_response, HandlerOutcome, ResponseBody};
use crate::outbound::OutboundPolicy;
use crate::quota::{acquire_in, Quota, QuotaPermit};
use crate::websocket_queue as queue;

/// A worker's WebSocket limits (`limits.websocket_*` of its config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebSocketLimits {
  /// The largest message accepted from a peer (Workers': 1 MiB); a larger
  /// one closes the socket with 1009.
  pub max_message_bytes: usize,
  /// Bytes a script may have queued for a peer that does not read.
  pub max_buffered_bytes: usize,
  /// A socket with no traffic either way for this long is closed (1001).
  pub idle_timeout: Duration,
}

impl Default for WebSocketLimits {
  fn default() -> Self {
    Self {
      max_message_bytes: 1 << 20,
      max_buffered_bytes: 16 << 20,
      // Cloudflare's proxy closes WebSockets idle for 100 seconds.
      idle_timeout: Duration::from_secs(100),
    }
  }
}

impl WebSocketLimits {
  /// The protocol's configuration: small read buffers, the message limit on
  /// frames and messages. tungstenite zero-fills its whole read buffer on
  /// the first read and keeps it, so its size is resident for every socket
  /// that ever received a message: 2 KiB per read keeps an idle socket
  /// small (10,000 idle sockets in under 100 MiB), at the cost of more reads
  /// for big messages (a buffer grows to a message's size; each read takes
  /// at most this much).
  pub fn protocol_config(&self) -> WebSocketConfig {
    WebSocketConfig::default()
      .read_buffer_size(2 * 1024)
      .write_buffer_size(16 * 1024)
      .max_message_size(Some(self.max_message_bytes))
      .max_frame_size(Some(self.max_message_bytes))
  }
}

/// How long the pump waits for the peer's reply to a close frame.
const CLOSE_REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages from the peer waiting for JavaScript.
const FROM_PEER_MESSAGES: usize = 16;

/// What JavaScript asks of the peer.
enum ToPeer {
  Message(Message),
  /// Close with a code (none: 1005, no status) and reason.
  Close(Option<u16>, String),
}

/// What the peer did, for JavaScript.
enum FromPeer {
  Text(String),
  Binary(Bytes),
  Error(String),
  Close {
    code: u16,
    reason: String,
    clean: bool,
  },
}

/// Event kinds `op_ws_next_event` resolves with.
const EVENT_TEXT: u32 = 0;
const EVENT_BINARY: u32 = 1;
const EVENT_ERROR: u32 = 2;
const EVENT_CLOSE_CLEAN: u32 = 3;
const EVENT_CLOSE_UNCLEAN: u32 = 4;

/// What the resource and its pump share (across the `Send` boundary of a
/// response's extensions, hence atomics).
struct SocketShared {
  buffered: AtomicUsize,
  abort: Notify,
  abort_reason: Mutex<Option<String>>,
}

/// The pump's end of a socket.
pub struct PeerLink {
  from_js: queue::Receiver<ToPeer>,
  to_js: queue::Sender<FromPeer>,
  shared: Arc<SocketShared>,
  pub limits: WebSocketLimits,
  /// For log lines.
  pub worker: String,
  /// The socket's unit of the worker's `limits.websockets`, held while the
  /// pump runs.
  _permit: Option<QuotaPermit>,
}

/// The WebSocket a 101 response carries to the server, which takes it to
/// pump the upgraded connection (an extension of the response: it must be
/// `Clone + Send + Sync`).
#[derive(Clone)]
pub struct WebSocketUpgrade(Arc<Mutex<Option<PeerLink>>>);

impl WebSocketUpgrade {
  pub fn take(&self) -> Option<PeerLink> {
    self.0.lock().ok()?.take()
  }
}

/// The open sockets of one isolate, so the engine can close them all: with
/// 1001 when the worker is evicted or the server stops, 1011 when a limit
/// ends the isolate.
#[derive(Default)]
pub struct WebSockets {
  next: Cell<u64>,
  open: RefCell<HashMap<u64, queue::Sender<ToPeer>>>,
}

impl WebSockets {
  pub fn count(&self) -> usize {
    self.open.borrow().len()
  }

  /// Asks every open socket to close; returns how many there were.
  pub fn close_all(&self, code: u16, reason: &str) -> usize {
    let open = self.open.borrow();
    for socket in open.values() {
      let _ = socket.push(ToPeer::Close(Some(code), reason.to_string()));
    }
    open.len()
  }

  fn insert(&self, socket: queue::Sender<ToPeer>) -> u64 {
    let key = self.next.get() + 1;
    self.next.set(key);
    self.open.borrow_mut().insert(key, socket);
    key
  }
}

fn registry(state: &mut OpState) -> Rc<WebSockets> {
  if let Some(sockets) = state.try_borrow::<Rc<WebSockets>>() {
    return sockets.clone();
  }
  let sockets = Rc::new(WebSockets::default());
  state.put(sockets.clone());
  sockets
}

/// The isolate's end of a socket.
pub struct WebSocketResource {
  to_peer: queue::Sender<ToPeer>,
  from_peer: AsyncRefCell<queue::Receiver<FromPeer>>,
  shared: Arc<SocketShared>,
  max_buffered: usize,
  /// The event `op_ws_next_event` last returned, read by `op_ws_event_*`.
  event: RefCell<Option<FromPeer>>,
  registry: Rc<WebSockets>,
  key: u64,
  /// A client socket's handshake: the subprotocol the server chose and the
  /// response head (`fetch()` shows it).
  protocol: String,
  response_headers: String,
}

impl Resource for WebSocketResource {
  fn name(&self) -> std::borrow::Cow<'_, str> {
    "webSocket".into()
  }
}

impl Drop for WebSocketResource {
  fn drop(&mut self) {
    // With the last sender gone the pump closes the socket (1001).
    self.registry.open.borrow_mut().remove(&self.key);
  }
}

/// A socket's two ends: the resource (added to `state`'s table) and the
/// pump's link.
fn new_socket(
  state: &mut OpState,
  protocol: String,
  response_headers: String,
  permit: Option<QuotaPermit>,
) -> (ResourceId, PeerLink) {
  let limits = state
    .try_borrow::<WebSocketLimits>()
    .copied()
    .unwrap_or_default();
  let worker = state
    .try_borrow::<ScriptName>()
    .map_or_else(|| "?".to_string(), |name| name.0.clone());
  let (to_peer, from_js) = queue::unbounded();
  let (to_js, from_peer) = queue::bounded(FROM_PEER_MESSAGES);
  let shared = Arc::new(SocketShared {
    buffered: AtomicUsize::new(0),
    abort: Notify::new(),
    abort_reason: Mutex::new(None),
  });
  let registry = registry(state);
  let key = registry.insert(to_peer.clone());
  let resource = WebSocketResource {
    to_peer,
    from_peer: AsyncRefCell::new(from_peer),
    shared: shared.clone(),
    max_buffered: limits.max_buffered_bytes,
    event: RefCell::new(None),
    registry,
    key,
    protocol,
    response_headers,
  };
  let rid = state.resource_table.add(resource);
  let link = PeerLink {
    from_js,
    to_js,
    shared,
    limits,
    worker,
    _permit: permit,
  };
  (rid, link)
}

/// Answers request `id` with a 101 carrying a WebSocket (the partner of the
/// pair end the script keeps); returns the rid of the script's end.
#[op2(fast)]
#[smi]
pub fn op_respond_websocket<'s>(
  scope: &mut v8::PinScope<'s, '_>,
  state: &mut OpState,
  #[smi] id: u32,
  headers: v8::Local<'s, v8::Array>,
) -> Result<ResourceId, JsErrorBox> {
  let permit = acquire_in(state, Quota::WebSockets).map_err(JsErrorBox::range_error)?;
  let mut response = build_response(scope, 101, headers, ResponseBody::empty())?;
  let (rid, link) = new_socket(state, String::new(), String::new(), permit);
  response
    .extensions_mut()
    .insert(WebSocketUpgrade(Arc::new(Mutex::new(Some(link)))));
  answer_response(state, id, HandlerOutcome::Response(response));
  Ok(rid)
}

fn socket(state: &OpState, rid: ResourceId) -> Result<Rc<WebSocketResource>, JsErrorBox> {
  state
    .resource_table
    .get::<WebSocketResource>(rid)
    .map_err(|_| JsErrorBox::new("DOMExceptionInvalidStateError", "the WebSocket is closed"))
}

fn queue(
  state: &OpState,
  rid: ResourceId,
  message: Message,
  len: usize,
) -> Result<f64, JsErrorBox> {
  let socket = socket(state, rid)?;
  let buffered = socket.shared.buffered.fetch_add(len, Ordering::Relaxed) + len;
  if buffered > socket.max_buffered {
    // The peer is not reading: stop rather than buffer without bound.
    if let Ok(mut reason) = socket.shared.abort_reason.lock() {
      reason.get_or_insert_with(|| {
        format!(
          "the peer is not reading: over {} KiB queued for it",
          socket.max_buffered >> 10
        )
      });
    }
    socket.shared.abort.notify_one();
  } else {
    let _ = socket.to_peer.push(ToPeer::Message(message));
  }
  Ok(buffered as f64)
}

/// Queues a text message; returns `bufferedAmount`.
#[op2(fast)]
pub fn op_ws_send_text(
  state: &OpState,
  #[smi] rid: ResourceId,
  #[string] text: String,
) -> Result<f64, JsErrorBox> {
  let len = text.len();
  queue(state, rid, Message::Text(text.into()), len)
}

/// Queues a binary message; returns `bufferedAmount`.
#[op2(fast)]
pub fn op_ws_send_binary(
  state: &OpState,
  #[smi] rid: ResourceId,
  #[buffer] data: &[u8],
) -> Result<f64, JsErrorBox> {
  let len = data.len();
  queue(
    state,
    rid,
    Message::Binary(Bytes::copy_from_slice(data)),
    len,
  )
}

/// Bytes queued for the peer and not yet written.
#[op2(fast)]
pub fn op_ws_buffered(state: &OpState, #[smi] rid: ResourceId) -> f64 {
  socket(state, rid).map_or(0.0, |s| s.shared.buffered.load(Ordering::Relaxed) as f64)
}

/// Starts the closing handshake (`code` 0: no status code).
#[op2(fast)]
pub fn op_ws_close(
  state: &OpState,
  #[smi] rid: ResourceId,
  #[smi] code: u32,
  #[string] reason: String,
) {
  if let Ok(socket) = socket(state, rid) {
    let code = u16::try_from(code).ok().filter(|&c| c != 0);
    let _ = socket.to_peer.push(ToPeer::Close(code, reason));
  }
}

/// Waits for what the peer does next; its data is then read with
/// `op_ws_event_text` / `op_ws_event_binary` / `op_ws_event_code`.
#[op2]
#[smi]
pub async fn op_ws_next_event(state: Rc<RefCell<OpState>>, #[smi] rid: ResourceId) -> u32 {
  let Ok(socket) = state.borrow().resource_table.get::<WebSocketResource>(rid) else {
    return EVENT_CLOSE_UNCLEAN;
  };
  let next = {
    let mut from_peer = RcRef::map(&socket, |s| &s.from_peer).borrow_mut().await;
    from_peer.recv().await
  };
  let event = next.unwrap_or(FromPeer::Close {
    code: 1006,
    reason: String::new(),
    clean: false,
  });
  let kind = match &event {
    FromPeer::Text(_) => EVENT_TEXT,
    FromPeer::Binary(_) => EVENT_BINARY,
    FromPeer::Error(_) => EVENT_ERROR,
    FromPeer::Close { clean: true, .. } => EVENT_CLOSE_CLEAN,
    FromPeer::Close { clean: false, .. } => EVENT_CLOSE_UNCLEAN,
  };
  *socket.event.borrow_mut() = Some(event);
  kind
}

/// The last event's text: a message, an error's description, a close reason.
#[op2]
#[string]
pub fn op_ws_event_text(state: &OpState, #[smi] rid: ResourceId) -> String {
  let Ok(socket) = socket(state, rid) else {
    return String::new();
  };
  let mut event = socket.event.borrow_mut();
  match event.as_mut() {
    Some(FromPeer::Text(text)) | Some(FromPeer::Error(text)) => std::mem::take(text),
    Some(FromPeer::Close { reason, .. }) => std::mem::take(reason),
    _ => String::new(),
  }
}

/// The last event's bytes (a binary message).
#[op2]
#[buffer]
pub fn op_ws_event_binary(state: &OpState, #[smi] rid: ResourceId) -> Vec<u8> {
  let Ok(socket) = socket(state, rid) else {
    return Vec::new();
  };
  let mut event = socket.event.borrow_mut();
  match event.as_mut() {
    Some(FromPeer::Binary(bytes)) => std::mem::take(bytes).into(),
    _ => Vec::new(),
  }
}

/// The last event's close code.
#[op2(fast)]
#[smi]
pub fn op_ws_event_code(state: &OpState, #[smi] rid: ResourceId) -> u32 {
  let Ok(socket) = socket(state, rid) else {
    return 1006;
  };
  let code = match socket.event.borrow().as_ref() {
    Some(FromPeer::Close { code, .. }) => u32::from(*code),
    _ => 0,
  };
  code
}

/// A client socket's subprotocol, as the server chose it.
#[op2]
#[string]
pub fn op_ws_protocol(state: &OpState, #[smi] rid: ResourceId) -> String {
  socket(state, rid).map_or_else(|_| String::new(), |s| s.protocol.clone())
}

/// A client socket's handshake response headers, as `name:value` lines.
#[op2]
#[string]
pub fn op_ws_response_headers(state: &OpState, #[smi] rid: ResourceId) -> String {
  socket(state, rid).map_or_else(|_| String::new(), |s| s.response_headers.clone())
}

// ---------------------------------------------------------------------------
// The client

/// A connection a client socket runs on: plain TCP or TLS over it.
trait Connection: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Connection for T {}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects to `host:port` under `policy`: the name is resolved once and
/// only the addresses the policy allows are tried, so the check is made on
/// the address connected to.
async fn connect_tcp(
  host: &str,
  port: u16,
  policy: &OutboundPolicy,
  shown: &str,
) -> Result<tokio::net::TcpStream, String> {
  let addresses: Vec<SocketAddr> = match host.parse::<std::net::IpAddr>() {
    Ok(ip) => vec![SocketAddr::new(ip, port)],
    Err(_) => tokio::net::lookup_host((host, port))
      .await
      .map_err(|e| format!("WebSocket connection to {shown} failed: cannot resolve {host}: {e}"))?
      .collect(),
  };
  let open = policy.allows_everything() || policy.allows_host(host, port);
  let allowed: Vec<SocketAddr> = addresses
    .iter()
    .copied()
    .filter(|a| open || policy.allows_address(a.ip()))
    .collect();
  if allowed.is_empty() {
    return Err(match addresses.first() {
      Some(first) => {
        policy
          .denial(first.ip(), shown)
          .replacen("fetch failed", "WebSocket connection failed", 1)
      }
      None => format!("WebSocket connection to {shown} failed: {host} has no address"),
    });
  }
  let mut last = String::new();
  for address in allowed {
    match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address)).await {
      Ok(Ok(stream)) => {
        let _ = stream.set_nodelay(true);
        return Ok(stream);
      }
      Ok(Err(e)) => last = e.to_string(),
      Err(_) => last = "timed out".to_string(),
    }
  }
  Err(format!("WebSocket connection to {shown} failed: {last}"))
}

/// Opens a client socket to `url` (ws: or wss:) with `protocols`
/// (comma-separated) and extra request `headers` (`name:value` lines);
/// resolves with the socket's rid once the handshake is done.
#[op2]
#[smi]
pub async fn op_ws_connect(
  state: Rc<RefCell<OpState>>,
  #[string] url: String,
  #[string] protocols: String,
  #[string] headers: String,
) -> Result<ResourceId, JsErrorBox> {
  let type_error = JsErrorBox::type_error;
  let parsed =
    Url::parse(&url).map_err(|e| type_error(format!("invalid WebSocket URL {url}: {e}")))?;
  let tls = match parsed.scheme() {
    "ws" => false,
    "wss" => true,
    other => {
      return Err(type_error(format!(
        "WebSocket URLs are ws: or wss:, not {other}"
      )))
    }
  };
  let host = parsed
    .host_str()
    .ok_or_else(|| type_error(format!("WebSocket URL {url} has no host")))?
    .trim_start_matches('[')
    .trim_end_matches(']')
    .to_string();
  let port = parsed
    .port_or_known_default()
    .unwrap_or(if tls { 443 } else { 80 });
  let permit = acquire_in(&state.borrow(), Quota::WebSockets)
    .map_err(|e| type_error(format!("WebSocket connection to {url} refused: {e}")))?;
  let policy = state
    .borrow()
    .try_borrow::<Arc<OutboundPolicy>>()
    .cloned()
    .unwrap_or_else(|| Arc::new(OutboundPolicy::any()));
  let tcp = match connect_tcp(&host, port, &policy, &url).await {
    Ok(tcp) => tcp,
    Err(message) => {
      if message.contains("outbound policy") {
        crate::fetch::log_denial(&state.borrow(), &message);
      }
      return Err(type_error(message));
    }
  };
  let stream: Box<dyn Connection> = if tls {
    let name = rustls::pki_types::ServerName::try_from(host.clone())
      .map_err(|e| type_error(format!("WebSocket URL {url}: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(crate::fetch::tls_config()));
    Box::new(
      connector
        .connect(name, tcp)
        .await
        .map_err(|e| type_error(format!("WebSocket connection to {url} failed: TLS: {e}")))?,
    )
  } else {
    Box::new(tcp)
  };

  let mut request = url
    .as_str()
    .into_client_request()
    .map_err(|e| type_error(format!("WebSocket request to {url}: {e}")))?;
  let map = request.headers_mut();
  for line in headers.split('\n').filter(|l| !l.is_empty()) {
    let (name, value) = line.split_once(':').unwrap_or((line, ""));
    let (Ok(name), Ok(value)) = (
      http::HeaderName::from_bytes(name.as_bytes()),
      http::HeaderValue::from_str(value),
    ) else {
      return Err(type_error(format!("invalid header {name:?}")));
    };
    map.append(name, value);
  }
  if !protocols.is_empty() {
    let value = http::HeaderValue::from_str(&protocols)
      .map_err(|_| type_error("invalid WebSocket subprotocol".to_string()))?;
    map.insert(http::header::SEC_WEBSOCKET_PROTOCOL, value);
  }
  if !map.contains_key(http::header::USER_AGENT) {
    map.insert(
      http::header::USER_AGENT,
      http::HeaderValue::from_static("runtime/0.1"),
    );
  }

  let limits = state
    .borrow()
    .try_borrow::<WebSocketLimits>()
    .copied()
    .unwrap_or_default();
  let (ws, response) = tokio_tungstenite::client_async_with_config(
    request,
    stream,
    Some(limits.protocol_config()),
  )
  .await
  .map_err(|e| match e {
    WsError::Http(response) => type_error(format!(
      "WebSocket connection to {url} failed: the server answered {} instead of 101 Switching Protocols",
      response.status()
    )),
    e => type_error(format!("WebSocket connection to {url} failed: {e}")),
  })?;
  let protocol = response
    .headers()
    .get(http::header::SEC_WEBSOCKET_PROTOCOL)
    .and_then(|v| v.to_str().ok())
    .unwrap_or("")
    .to_string();
  let mut lines = String::new();
  for (name, value) in response.headers() {
    if let Ok(value) = value.to_str() {
      if !lines.is_empty() {
        lines.push('\n');
      }
      lines.push_str(name.as_str());
      lines.push(':');
      lines.push_str(value);
    }
  }
  let (rid, link) = new_socket(&mut state.borrow_mut(), protocol, lines, permit);
  deno_core::unsync::spawn(pump(ws, link, std::future::pending::<()>()));
  Ok(rid)
}

// ---------------------------------------------------------------------------
// The pump

/// What the reader asks of the writer.
enum Control {
  /// Write what tungstenite queued (a pong, the reply to a close).
  Flush,
  Close(u16, &'static str),
  /// The reader is done: flush, close the connection, stop.
  Finish,
}

/// Moves messages between a socket's connection and its isolate until the
/// socket is closed (either side), the peer vanishes, the socket is idle
/// past its timeout, or `shutdown` resolves (the server stops: 1001).
pub async fn pump<S>(ws: WebSocketStream<S>, link: PeerLink, shutdown: impl Future<Output = ()>)
where
  S: AsyncRead + AsyncWrite + Unpin,
{
  let PeerLink {
    mut from_js,
    to_js,
    shared,
    limits,
    worker,
    _permit,
  } = link;
  let (mut sink, mut stream) = ws.split();
  let (control, mut controls) = queue::unbounded::<Control>();
  let activity = Cell::new(Instant::now());
  // When our close frame went out, or the reader asked for it (the reply
  // is awaited until a deadline).
  let close_sent: Cell<Option<Instant>> = Cell::new(None);
  let close_asked: Cell<Option<Instant>> = Cell::new(None);
  // Wakes the reader when our close frame goes out, so that it waits for
  // the reply until CLOSE_REPLY_TIMEOUT rather than until the idle timeout.
  let close_went_out = tokio::sync::Notify::new();
  // JavaScript got its close event: nothing more goes to it.
  let js_closed = Cell::new(false);

  let reader = async {
    let tell_js = |event: FromPeer| {
      let to_js = &to_js;
      async move {
        let _ = to_js.send(event).await;
      }
    };
    loop {
      if !js_closed.get() {
        // Room for one more event before reading: backpressure on the peer.
        if to_js.reserve().await.is_err() {
          js_closed.set(true);
        }
      }
      let deadline = match close_sent.get().or(close_asked.get()) {
        Some(at) => at + CLOSE_REPLY_TIMEOUT,
        None => activity.get() + limits.idle_timeout,
      };
      let next = tokio::select! {
        next = stream.next() => next,
        () = close_went_out.notified() => continue,
        () = tokio::time::sleep_until(deadline) => {
          if close_sent.get().or(close_asked.get()).is_some() {
            // The peer never answered our close frame.
            if !js_closed.replace(true) {
              tell_js(FromPeer::Close { code: 1006, reason: String::new(), clean: false }).await;
            }
            break;
          }
          if activity.get() + limits.idle_timeout <= Instant::now() {
            tracing::info!(worker = %worker, "WebSocket idle for {} s: closing (1001)", limits.idle_timeout.as_secs());
            let _ = control.push(Control::Close(1001, "idle timeout"));
            close_asked.set(Some(Instant::now()));
          }
          continue;
        }
      };
      activity.set(Instant::now());
      match next {
        Some(Ok(Message::Text(text))) if !js_closed.get() => {
          tell_js(FromPeer::Text(text.as_str().to_owned())).await;
        }
        Some(Ok(Message::Binary(bytes))) if !js_closed.get() => {
          tell_js(FromPeer::Binary(bytes)).await;
        }
        Some(Ok(Message::Ping(_))) => {
          let _ = control.push(Control::Flush);
        }
        Some(Ok(Message::Close(frame))) => {
          let (code, reason) = frame.map_or((1005, String::new()), |f| {
            (u16::from(f.code), f.reason.as_str().to_owned())
          });
          if !js_closed.replace(true) {
            tell_js(FromPeer::Close {
              code,
              reason,
              clean: true,
            })
            .await;
          }
          break;
        }
        Some(Ok(_)) => {}
        Some(Err(WsError::Capacity(error))) => {
          tracing::warn!(worker = %worker, "WebSocket closed (1009): {error}, the limit is {} KiB", limits.max_message_bytes >> 10);
          if !js_closed.replace(true) {
            tell_js(FromPeer::Error(format!("message too big: {error}"))).await;
            tell_js(FromPeer::Close {
              code: 1009,
              reason: "Message too big".to_string(),
              clean: false,
            })
            .await;
          }
          let _ = control.push(Control::Close(1009, "Message too big"));
          close_asked.set(Some(Instant::now()));
        }
        Some(Err(WsError::ConnectionClosed)) | None => {
          if !js_closed.replace(true) {
            tell_js(FromPeer::Close {
              code: 1006,
              reason: String::new(),
              clean: false,
            })
            .await;
          }
          break;
        }
        Some(Err(error)) => {
          if !js_closed.replace(true) {
            tell_js(FromPeer::Error(error.to_string())).await;
            tell_js(FromPeer::Close {
              code: 1006,
              reason: String::new(),
              clean: false,
            })
            .await;
          }
          break;
        }
      }
    }
    let _ = control.push(Control::Finish);
  };

  let writer = async {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut shutting_down = false;
    let mut js_open = true;
    let send_close = |code: Option<u16>, reason: String| {
      close_sent.get().is_none().then(|| {
        close_sent.set(Some(Instant::now()));
        close_went_out.notify_one();
        Message::Close(code.map(|code| CloseFrame {
          code: CloseCode::from(code),
          reason: reason.into(),
        }))
      })
    };
    loop {
      let outgoing = tokio::select! {
        biased;
        control = controls.recv() => match control {
          Some(Control::Flush) => None,
          Some(Control::Close(code, reason)) => send_close(Some(code), reason.to_string()),
          Some(Control::Finish) | None => {
            let _ = sink.close().await;
            return;
          }
        },
        () = &mut shutdown, if !shutting_down => {
          shutting_down = true;
          send_close(Some(1001), "the server is shutting down".to_string())
        }
        message = from_js.recv(), if js_open => match message {
          Some(ToPeer::Message(message)) => {
            let mut len = message.len();
            if sink.feed(message).await.is_err() {
              break;
            }
            // What else JavaScript queued goes out in the same flush; a
            // close among it ends the batch and follows the messages.
            let mut close = None;
            while let Some(next) = from_js.try_recv() {
              match next {
                ToPeer::Message(more) => {
                  len += more.len();
                  if sink.feed(more).await.is_err() {
                    break;
                  }
                }
                ToPeer::Close(code, reason) => {
                  close = Some((code, reason));
                  break;
                }
              }
            }
            let flushed = sink.flush().await;
            shared.buffered.fetch_sub(len.min(shared.buffered.load(Ordering::Relaxed)), Ordering::Relaxed);
            activity.set(Instant::now());
            if flushed.is_err() {
              break;
            }
            close.and_then(|(code, reason)| send_close(code, reason))
          }
          Some(ToPeer::Close(code, reason)) => send_close(code, reason),
          None => {
            js_open = false;
            send_close(Some(1001), "the worker went away".to_string())
          }
        },
      };
      let sent = match outgoing {
        Some(message) => sink.send(message).await,
        None => sink.flush().await,
      };
      if sent.is_err() {
        break;
      }
    }
    // The connection failed: the reader hears of it too; wait for it.
    while let Some(control) = controls.recv().await {
      if matches!(control, Control::Finish) {
        return;
      }
    }
  };

  let aborted = tokio::select! {
    _ = futures::future::join(reader, writer) => false,
    () = shared.abort.notified() => true,
  };
  if aborted {
    let reason = shared
      .abort_reason
      .lock()
      .ok()
      .and_then(|mut r| r.take())
      .unwrap_or_default();
    tracing::warn!(worker = %worker, "WebSocket aborted (1011): {reason}");
    if !js_closed.get() {
      let _ = to_js.send(FromPeer::Error(reason.clone())).await;
      let _ = to_js
        .send(FromPeer::Close {
          code: 1011,
          reason,
          clean: false,
        })
        .await;
    }
  }
}
