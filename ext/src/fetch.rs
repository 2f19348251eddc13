//! The network side of `fetch()`: outbound HTTP(S) requests from scripts.
//!
//! JavaScript (`js/30_fetch.js`) does everything the Fetch standard asks of
//! `fetch()` itself (argument processing, redirects, `data:` and `blob:`
//! URLs, abort); Rust sends one HTTP request per call and hands back the
//! response head and a resource to read its body from:
//!
//! - `op_fetch(method, url, headers, body)` checks and builds the request and
//!   returns the rid of a [`FetchRequestResource`]. `body` is null, a string,
//!   bytes, or the rid of a resource to stream the body from (a
//!   ReadableStream made into a resource, or a request body passed through).
//! - `op_fetch_send(rid)` sends it and resolves with the response head and
//!   the rid of a [`FetchResponseBodyResource`] (none for an empty body).
//!   Closing the request rid meanwhile (an AbortSignal fired) cancels it.
//!
//! The HTTP client is hyper-util's pooled client over rustls (ring, webpki
//! roots), one per thread and tokio runtime: isolates run on current-thread
//! runtimes and their ops on that thread, so a thread's isolates share its
//! connection pool.

use std::cell::RefCell;
use std::error::Error as _;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use deno_core::convert::{ByteString, OptionNull};
use deno_core::url::{Position, Url};
use deno_core::{
  op2, v8, AsyncResult, BufView, CancelFuture, CancelHandle, OpState, RcRef, Resource, ResourceId,
  ToV8,
};
use deno_error::JsErrorBox;
use http::header::{HeaderName, HeaderValue};
use http::{header, Method, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

use crate::console::ScriptName;
use crate::outbound::{DeniedAddress, OutboundPolicy, PolicyResolver};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::mpsc;

use crate::body::BodyReader;
use crate::http::BoxError;

type HttpClient = Client<HttpsConnector<HttpConnector<PolicyResolver>>, FetchBody>;
/// Chunks of a streamed request body on their way to hyper.
type ChunkSender = mpsc::Sender<Result<Bytes, BoxError>>;

/// Bytes asked of a body stream's resource at a time.
const CHUNK_SIZE: usize = 64 * 1024;
/// Chunks of a streamed request body buffered between JavaScript and hyper.
const BODY_CHANNEL_CHUNKS: usize = 2;
/// `User-Agent` sent when the script sets none (what `navigator.userAgent` says).
const USER_AGENT: &str = "runtime/0.1";

fn type_error(message: impl Into<std::borrow::Cow<'static, str>>) -> JsErrorBox {
  JsErrorBox::type_error(message)
}

// ---------------------------------------------------------------------------
// The client

thread_local! {
  /// This thread's clients, one per outbound policy (so a connection pooled
  /// under one policy is never reused under another), with the runtime they
  /// were made on: a connection in a pool belongs to that runtime's reactor.
  static CLIENTS: RefCell<Vec<(tokio::runtime::Id, Arc<OutboundPolicy>, HttpClient)>> =
    const { RefCell::new(Vec::new()) };
}

/// The operator's own certificate authorities (an internal CA, a test CA):
/// a PEM file named by `RUNTIME_CA_CERTS` in the runtime's environment,
/// trusted by `fetch()` in addition to the webpki roots. Scripts never see
/// the environment.
const CA_CERTS_ENV: &str = "RUNTIME_CA_CERTS";

fn add_operator_roots(roots: &mut rustls::RootCertStore) {
  use rustls::pki_types::pem::PemObject;
  use rustls::pki_types::CertificateDer;
  let Some(path) = std::env::var_os(CA_CERTS_ENV) else {
    return;
  };
  let certs = match CertificateDer::pem_file_iter(&path) {
    Ok(certs) => certs,
    Err(error) => {
      tracing::warn!(
        "{CA_CERTS_ENV}: cannot read {}: {error}",
        path.to_string_lossy()
      );
      return;
    }
  };
  for cert in certs {
    match cert
      .map_err(|e| e.to_string())
      .and_then(|c| roots.add(c).map_err(|e| e.to_string()))
    {
      Ok(()) => {}
      Err(error) => tracing::warn!("{CA_CERTS_ENV}: skipped a certificate: {error}"),
    }
  }
}

pub(crate) fn tls_config() -> rustls::ClientConfig {
  static CONFIG: OnceLock<rustls::ClientConfig> = OnceLock::new();
  CONFIG
    .get_or_init(|| {
      let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
      };
      add_operator_roots(&mut roots);
      rustls::ClientConfig::builder_with_provider(
        Arc::new(rustls::crypto::ring::default_provider()),
      )
      .with_safe_default_protocol_versions()
      .expect("ring supports the default TLS versions")
      .with_root_certificates(roots)
      .with_no_client_auth()
    })
    .clone()
}

fn new_client(policy: Arc<OutboundPolicy>) -> HttpClient {
  let mut http = HttpConnector::new_with_resolver(PolicyResolver { policy });
  http.enforce_http(false);
  http.set_nodelay(true);
  http.set_connect_timeout(Some(Duration::from_secs(30)));
  let connector = hyper_rustls::HttpsConnectorBuilder::new()
    .with_tls_config(tls_config())
    .https_or_http()
    .enable_http1()
    .enable_http2()
    .wrap_connector(http);
  Client::builder(TokioExecutor::new())
    .pool_timer(TokioTimer::new())
    .pool_idle_timeout(Duration::from_secs(30))
    .build(connector)
}

/// The client of the current thread and runtime for `policy`.
fn client(policy: &Arc<OutboundPolicy>) -> HttpClient {
  let runtime = tokio::runtime::Handle::current().id();
  CLIENTS.with(|clients| {
    let mut clients = clients.borrow_mut();
    clients.retain(|(id, _, _)| *id == runtime);
    if let Some((_, _, client)) = clients.iter().find(|(_, p, _)| **p == **policy) {
      return client.clone();
    }
    let client = new_client(policy.clone());
    clients.push((runtime, policy.clone(), client.clone()));
    client
  })
}

/// The policy that governs a request to `url` by a worker whose policy is
/// `policy` (none: the WPT runner and tools, which may reach anything): the
/// open policy when the host is allowed by name, else the worker's. An
/// address literal is checked here, as the connector resolves only names.
fn policy_for(state: &OpState, url: &Url, shown: &str) -> Result<Arc<OutboundPolicy>, JsErrorBox> {
  static ANY: OnceLock<Arc<OutboundPolicy>> = OnceLock::new();
  let any = || ANY.get_or_init(|| Arc::new(OutboundPolicy::any())).clone();
  let Some(policy) = state.try_borrow::<Arc<OutboundPolicy>>() else {
    return Ok(any());
  };
  let port = url.port_or_known_default().unwrap_or(80);
  let literal = match url.host() {
    Some(deno_core::url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
    Some(deno_core::url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
    _ => None,
  };
  if policy.allows_everything() || policy.allows_host(url.host_str().unwrap_or(""), port) {
    return Ok(any());
  }
  if let Some(ip) = literal {
    if !policy.allows_address(ip) {
      let message = policy.denial(ip, shown);
      log_denial(state, &message);
      return Err(type_error(message));
    }
  }
  Ok(policy.clone())
}

pub(crate) fn log_denial(state: &OpState, message: &str) {
  let worker = state
    .try_borrow::<ScriptName>()
    .map_or("?", |name| name.0.as_str());
  tracing::warn!(worker = %worker, "{message}");
}

// ---------------------------------------------------------------------------
// Request bodies

/// The body of an outgoing request: held whole, or streamed from a resource
/// by a task that feeds a channel (hyper needs a `Send` body; resources are
/// not).
pub enum FetchBody {
  Full(Option<Bytes>),
  Stream(mpsc::Receiver<Result<Bytes, BoxError>>),
}

impl Body for FetchBody {
  type Data = Bytes;
  type Error = BoxError;

  fn poll_frame(
    self: Pin<&mut Self>,
    cx: &mut Context<'_>,
  ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    match self.get_mut() {
      FetchBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
      FetchBody::Stream(rx) => rx
        .poll_recv(cx)
        .map(|chunk| chunk.map(|c| c.map(Frame::data))),
    }
  }

  fn is_end_stream(&self) -> bool {
    matches!(self, FetchBody::Full(None))
  }

  fn size_hint(&self) -> SizeHint {
    match self {
      FetchBody::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
      FetchBody::Stream(_) => SizeHint::default(),
    }
  }
}

/// Reads `source` to its end into `tx`. Stops early when hyper drops the
/// body (the request failed or was aborted); either way the source is closed
/// after, so a JavaScript stream behind it learns it can stop.
async fn pump_body(source: Rc<dyn Resource>, tx: ChunkSender) {
  loop {
    let read = source.clone().read(CHUNK_SIZE);
    let result = tokio::select! {
      result = read => result,
      _ = tx.closed() => break,
    };
    match result {
      Ok(view) if view.is_empty() => break,
      Ok(view) => {
        if tx.send(Ok(Bytes::copy_from_slice(&view))).await.is_err() {
          break;
        }
      }
      Err(error) => {
        let message = format!("the request body stream failed: {error}");
        let _ = tx.send(Err(message.into())).await;
        break;
      }
    }
  }
  source.close();
}

// ---------------------------------------------------------------------------
// op_fetch: build a request

/// A request built by `op_fetch`, waiting for `op_fetch_send`. Closing it
/// cancels the request, whether or not it was sent yet.
pub struct FetchRequestResource {
  url: String,
  /// The outbound policy it is sent under.
  policy: Arc<OutboundPolicy>,
  request: RefCell<Option<http::Request<FetchBody>>>,
  /// Where a streamed body comes from, and where it goes; pumped once the
  /// request is sent.
  body_source: RefCell<Option<(Rc<dyn Resource>, ChunkSender)>>,
  cancel: CancelHandle,
}

impl Resource for FetchRequestResource {
  fn name(&self) -> std::borrow::Cow<'_, str> {
    "fetchRequest".into()
  }

  fn close(self: Rc<Self>) {
    self.cancel.cancel();
    // A body never sent: its source is dropped (closing a stream resource).
    if let Some((source, _)) = self.body_source.borrow_mut().take() {
      source.close();
    }
  }
}

/// Request headers a script may set but the client decides: the connection
/// is hyper's, and the body's framing follows the body actually sent.
fn is_connection_header(name: &HeaderName) -> bool {
  matches!(
    name.as_str(),
    "host"
      | "connection"
      | "keep-alive"
      | "proxy-connection"
      | "transfer-encoding"
      | "upgrade"
      | "te"
      | "trailer"
      | "content-length"
  )
}

/// Response headers about the connection, not the response.
fn is_hop_by_hop(name: &HeaderName) -> bool {
  matches!(
    name.as_str(),
    "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade"
  )
}

/// Checks a URL that JavaScript already parsed (so failures are unlikely)
/// and turns it into the request target: no fragment, no credentials.
fn request_uri(url: &str) -> Result<(Url, http::Uri), JsErrorBox> {
  let parsed =
    Url::parse(url).map_err(|e| type_error(format!("fetch failed: invalid URL {url:?}: {e}")))?;
  match parsed.scheme() {
    "http" | "https" => {}
    scheme => {
      return Err(type_error(format!(
        "fetch failed: unsupported scheme {scheme}: in {url} (fetch() supports http:, https:, data: and blob: URLs)"
      )))
    }
  }
  if parsed.host_str().is_none_or(str::is_empty) {
    return Err(type_error(format!(
      "fetch failed: invalid URL {url:?}: no host"
    )));
  }
  let target = format!(
    "{}://{}",
    parsed.scheme(),
    &parsed[Position::BeforeHost..Position::AfterQuery]
  );
  let uri = target
    .parse::<http::Uri>()
    .map_err(|e| type_error(format!("fetch failed: invalid URL {url:?}: {e}")))?;
  Ok((parsed, uri))
}

/// Builds a request: `headers` is a flat `[name, value, ...]` list (names
/// lowercase), `body` is null/undefined, a string, an ArrayBufferView, or
/// the rid of a resource to stream the body from (taken from the table).
/// Returns the rid of the request, for `op_fetch_send`.
#[op2]
#[smi]
pub fn op_fetch<'s>(
  scope: &mut v8::PinScope<'s, '_>,
  state: &mut OpState,
  #[string] method: String,
  #[string] url: String,
  #[scoped] headers: Vec<ByteString>,
  body: v8::Local<'s, v8::Value>,
) -> Result<ResourceId, JsErrorBox> {
  let (parsed, uri) = request_uri(&url)?;
  let policy = policy_for(state, &parsed, &url)?;
  let method = Method::from_bytes(method.as_bytes())
    .map_err(|_| type_error(format!("fetch failed: invalid method {method:?}")))?;

  let mut request = http::Request::new(FetchBody::Full(None));
  *request.method_mut() = method;
  *request.uri_mut() = uri;
  let map = request.headers_mut();
  map.reserve(headers.len() / 2 + 2);
  let mut content_length = None;
  for pair in headers.chunks_exact(2) {
    let name = HeaderName::from_bytes(&pair[0]).map_err(|_| {
      type_error(format!(
        "fetch failed: invalid header name {:?}",
        String::from_utf8_lossy(&pair[0])
      ))
    })?;
    let value = HeaderValue::from_bytes(&pair[1])
      .map_err(|_| type_error(format!("fetch failed: invalid value for header {name}")))?;
    if name == header::CONTENT_LENGTH {
      content_length = Some(value);
    } else if !is_connection_header(&name) {
      map.append(name, value);
    }
  }
  if !map.contains_key(header::ACCEPT) {
    map.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
  }
  if !map.contains_key(header::USER_AGENT) {
    map.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
  }

  let mut body_source = None;
  if body.is_null_or_undefined() {
    // No body.
  } else if let Ok(s) = v8::Local::<v8::String>::try_from(body) {
    *request.body_mut() = FetchBody::Full(Some(Bytes::from(s.to_rust_string_lossy(scope))));
  } else if let Ok(view) = v8::Local::<v8::ArrayBufferView>::try_from(body) {
    let mut bytes = vec![0; view.byte_length()];
    view.copy_contents(&mut bytes);
    *request.body_mut() = FetchBody::Full(Some(Bytes::from(bytes)));
  } else if body.is_number() {
    let rid = body.uint32_value(scope).unwrap_or(ResourceId::MAX);
    let source = state
      .resource_table
      .take_any(rid)
      .map_err(|_| type_error("fetch failed: the request body stream is gone"))?;
    let (tx, rx) = mpsc::channel(BODY_CHANNEL_CHUNKS);
    *request.body_mut() = FetchBody::Stream(rx);
    // A length the script declared for a streamed body is kept (hyper then
    // checks the stream against it); a held body's length is its own.
    if let Some(length) = content_length
      .filter(|v| std::str::from_utf8(v.as_bytes()).is_ok_and(|s| s.parse::<u64>().is_ok()))
    {
      request.headers_mut().insert(header::CONTENT_LENGTH, length);
    }
    body_source = Some((source, tx));
  } else {
    return Err(type_error("fetch failed: unsupported request body"));
  }

  Ok(state.resource_table.add(FetchRequestResource {
    url,
    policy,
    request: RefCell::new(Some(request)),
    body_source: RefCell::new(body_source),
    cancel: CancelHandle::new(),
  }))
}

// ---------------------------------------------------------------------------
// op_fetch_send: send it

/// The response head, as `op_fetch_send` resolves with it.
#[derive(ToV8)]
pub struct FetchResponse {
  status: u16,
  status_text: ByteString,
  /// `[name, value, ...]`, names lowercase.
  headers: Vec<ByteString>,
  /// The body's resource; null when the response has no body at all.
  body_rid: OptionNull<u32>,
}

/// What went wrong, in words, for the TypeError a script sees.
fn describe_error(error: &hyper_util::client::legacy::Error, url: &str) -> String {
  use std::io::ErrorKind;
  let mut io_kind = None;
  let mut tls = None;
  let mut innermost = None;
  let mut source = error.source();
  while let Some(e) = source {
    innermost = Some(e.to_string());
    if let Some(error) = e.downcast_ref::<rustls::Error>() {
      tls = Some(error.to_string());
    }
    if let Some(denied) = e.downcast_ref::<DeniedAddress>() {
      return denied.policy.denial(denied.ip, url);
    }
    source = match e.downcast_ref::<std::io::Error>() {
      Some(io) => {
        if io.kind() != ErrorKind::Other {
          io_kind.get_or_insert(io.kind());
        }
        // An io::Error's source skips the error it wraps: go into that.
        match io.get_ref() {
          Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
          None => io.source(),
        }
      }
      None => e.source(),
    };
  }
  let what = match (tls, io_kind) {
    (Some(tls), _) => format!("TLS error: {tls}"),
    (_, Some(ErrorKind::ConnectionRefused)) => "connection refused".to_string(),
    (_, Some(ErrorKind::ConnectionReset)) => "connection reset".to_string(),
    (_, Some(ErrorKind::ConnectionAborted)) => "connection aborted".to_string(),
    (_, Some(ErrorKind::TimedOut)) => "connection timed out".to_string(),
    _ => {
      let detail = innermost.unwrap_or_else(|| error.to_string());
      if error.is_connect() {
        format!("could not connect ({detail})")
      } else {
        detail
      }
    }
  };
  format!("fetch failed: {what} to {url}")
}

/// Sends request `rid` (from `op_fetch`) and resolves with the response
/// head once it arrived. Rejects with a TypeError if the request failed, or
/// if it was cancelled by closing `rid`.
#[op2]
pub async fn op_fetch_send(
  state: Rc<RefCell<OpState>>,
  #[smi] rid: ResourceId,
) -> Result<FetchResponse, JsErrorBox> {
  let resource = state
    .borrow()
    .resource_table
    .get::<FetchRequestResource>(rid)
    .map_err(|_| type_error("fetch failed: the request was aborted"))?;
  // Held until the response head has come (or the fetch failed).
  let in_flight = crate::quota::acquire_in(&state.borrow(), crate::quota::Quota::Subrequests);
  let _in_flight = match in_flight {
    Ok(permit) => permit,
    Err(error) => {
      let _ = state
        .borrow_mut()
        .resource_table
        .take::<FetchRequestResource>(rid);
      return Err(type_error(format!(
        "fetch failed: {}: {error}",
        resource.url
      )));
    }
  };
  let request = resource.request.borrow_mut().take();
  let Some(request) = request else {
    return Err(type_error("fetch failed: the request was already sent"));
  };
  let body_source = resource.body_source.borrow_mut().take();
  if let Some((source, tx)) = body_source {
    deno_core::unsync::spawn(pump_body(source, tx));
  }
  let cancel = RcRef::map(&resource, |r| &r.cancel);
  let result = client(&resource.policy)
    .request(request)
    .or_cancel(cancel)
    .await;
  // Done with the request, whatever happened; closing it now does nothing.
  let _ = state
    .borrow_mut()
    .resource_table
    .take::<FetchRequestResource>(rid);
  let response = match result {
    Err(_) => return Err(type_error("fetch failed: the request was aborted")),
    Ok(Err(error)) => {
      let message = describe_error(&error, &resource.url);
      if message.contains("outbound policy") {
        log_denial(&state.borrow(), &message);
      }
      return Err(type_error(message));
    }
    Ok(Ok(response)) => response,
  };

  let (head, body) = response.into_parts();
  let status_text = match head.extensions.get::<hyper::ext::ReasonPhrase>() {
    Some(reason) => ByteString::from(reason.as_bytes()),
    None if head.version == Version::HTTP_2 => ByteString::default(),
    None => ByteString::from(head.status.canonical_reason().unwrap_or("")),
  };
  let mut headers = Vec::with_capacity(head.headers.len() * 2);
  for (name, value) in head.headers.iter() {
    // How the upstream connection was framed and kept is no business of
    // the script's, nor of a client the Response may be passed on to.
    if is_hop_by_hop(name) {
      continue;
    }
    headers.push(ByteString::from(name.as_str()));
    headers.push(ByteString::from(value.as_bytes()));
  }
  let body_rid = if body.is_end_stream() {
    None
  } else {
    let resource = FetchResponseBodyResource::new(body, resource.url.clone());
    Some(state.borrow_mut().resource_table.add(resource))
  };
  Ok(FetchResponse {
    status: head.status.as_u16(),
    status_text,
    headers,
    body_rid: OptionNull(body_rid),
  })
}

// ---------------------------------------------------------------------------
// Response bodies

/// A response body as a resource: read by a ReadableStream in JavaScript,
/// or, when a script returns the Response as is, by the engine straight into
/// its own response. Closing it cancels a pending read and drops the body
/// (and with it the connection, if the body was not read to its end).
pub struct FetchResponseBodyResource {
  reader: BodyReader<Incoming>,
  size: SizeHint,
  url: String,
  cancel: CancelHandle,
}

impl FetchResponseBodyResource {
  fn new(body: Incoming, url: String) -> Self {
    Self {
      size: body.size_hint(),
      reader: BodyReader::new(body),
      url,
      cancel: CancelHandle::new(),
    }
  }

  async fn next_chunk(self: Rc<Self>, limit: usize) -> Result<BufView, JsErrorBox> {
    self.reader.next_chunk(limit).await.map_err(|error| {
      let detail = error
        .source()
        .map_or_else(|| error.to_string(), |s| format!("{error}: {s}"));
      type_error(format!(
        "fetch failed: error reading the response body from {}: {detail}",
        self.url
      ))
    })
  }
}

impl Resource for FetchResponseBodyResource {
  fn name(&self) -> std::borrow::Cow<'_, str> {
    "fetchResponseBody".into()
  }

  fn read(self: Rc<Self>, limit: usize) -> AsyncResult<BufView> {
    use deno_core::futures::FutureExt;
    let cancel = RcRef::map(&self, |r| &r.cancel);
    Box::pin(self.clone().next_chunk(limit).or_cancel(cancel).map(|r| {
      r.unwrap_or_else(|_| Err(type_error("fetch failed: the response body was aborted")))
    }))
  }

  fn close(self: Rc<Self>) {
    self.cancel.cancel();
    self.reader.close();
  }

  fn size_hint(&self) -> (u64, Option<u64>) {
    (self.size.lower(), self.size.upper())
  }
}
