//! The server side of the Fetch layer: how a request reaches JavaScript and
//! how the Response a handler produced gets back to hyper.
//!
//! The engine registers a response slot in [`PendingResponses`] and passes its
//! id to JavaScript; the handler's Response comes back through one of the
//! `op_respond*` ops, which fill the slot. Bodies never go through JSON or
//! serde: strings and bytes are copied once, streams are read chunk by chunk
//! from a deno_core resource.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use deno_core::{op2, v8, AsyncResult, BufView, OpState, Resource, ResourceId};
use deno_error::JsErrorBox;
use http::{HeaderName, HeaderValue, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;

use crate::body::BodyReader;
use crate::quota::{Quota, QuotaPermit, WorkerQuotas};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A request body as the engine hands it over (already size-limited).
pub type RequestBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;
pub type HttpResponse = http::Response<ResponseBody>;

/// What a finished handler produced, or why it failed.
pub enum HandlerOutcome {
  Response(HttpResponse),
  /// The handler threw, rejected, or produced something other than a
  /// Response; the string is the JavaScript error with its stack.
  Error(String),
  /// The worker was stopped by a limit (CPU, memory) or could not start;
  /// the string says which.
  Unavailable(String),
}

/// Response slots of the requests in flight in one isolate, and the
/// Content-Type its last response had.
#[derive(Default)]
pub struct PendingResponses {
  next_id: u32,
  slots: HashMap<u32, PendingResponse, BuildHasherDefault<IdHasher>>,
  last_content_type: LastContentType,
}

/// An isolate's [`PendingResponses`], held by the engine as well as by the
/// isolate's `OpState`: the engine reaches it without `OpState`'s lookup by
/// type (a walk down a B-tree of every extension's state), and the ops with
/// one lookup per response.
pub type SharedResponses = Rc<RefCell<PendingResponses>>;

struct PendingResponse {
  respond: oneshot::Sender<HandlerOutcome>,
  /// The task of a script watching for the client to go away (see
  /// `op_request_disconnected`): woken when the response goes out.
  watcher: Option<Waker>,
}

impl PendingResponse {
  fn answer(self, outcome: HandlerOutcome) {
    if let Some(watcher) = self.watcher {
      watcher.wake();
    }
    let _ = self.respond.send(outcome);
  }
}

/// Ids are sequential: a multiplicative hash spreads them well, and costs a
/// fraction of SipHash on the request path.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
  fn finish(&self) -> u64 {
    self.0
  }

  fn write(&mut self, bytes: &[u8]) {
    for &b in bytes {
      self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
  }

  fn write_u32(&mut self, id: u32) {
    self.0 = u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
  }
}

impl PendingResponses {
  pub fn insert(&mut self, respond: oneshot::Sender<HandlerOutcome>) -> u32 {
    self.next_id = self.next_id.wrapping_add(1);
    self.slots.insert(
      self.next_id,
      PendingResponse {
        respond,
        watcher: None,
      },
    );
    self.next_id
  }

  /// Answers request `id`, if it still waits (the client may be gone; then
  /// there is nobody to answer).
  pub fn answer(&mut self, id: u32, outcome: HandlerOutcome) {
    if let Some(slot) = self.slots.remove(&id) {
      slot.answer(outcome);
    }
  }

  pub fn is_empty(&self) -> bool {
    self.slots.is_empty()
  }

  /// Forgets the last Content-Type (its JavaScript string): call with the
  /// isolate entered, before it goes.
  pub fn forget_content_type(&mut self) {
    self.last_content_type.0 = None;
  }

  /// Whether request `id` still waits for its response.
  pub fn is_waiting(&self, id: u32) -> bool {
    self.slots.contains_key(&id)
  }

  /// Fails every request still waiting: used when nothing left in the
  /// isolate can ever produce their responses.
  pub fn fail_all(&mut self, outcome: impl Fn() -> HandlerOutcome) -> usize {
    let n = self.slots.len();
    for (_, slot) in self.slots.drain() {
      slot.answer(outcome());
    }
    n
  }

  /// `Ready(true)` once the client of request `id` went away (the server
  /// dropped the response's receiver), `Ready(false)` once the request is
  /// answered; else registers `cx` to be woken by either.
  fn poll_disconnected(&mut self, id: u32, cx: &mut Context<'_>) -> Poll<bool> {
    let Some(slot) = self.slots.get_mut(&id) else {
      return Poll::Ready(false);
    };
    if slot.respond.poll_closed(cx).is_ready() {
      return Poll::Ready(true);
    }
    slot.watcher = Some(cx.waker().clone());
    Poll::Pending
  }
}

/// Resolves `true` when the client of request `id` goes away before its
/// response is handed over, `false` once the response went out (or if the
/// request is already answered). Backs `request.signal` of incoming requests.
#[op2]
pub async fn op_request_disconnected(state: Rc<RefCell<OpState>>, #[smi] id: u32) -> bool {
  let Some(responses) = state.borrow().try_borrow::<SharedResponses>().cloned() else {
    return false;
  };
  std::future::poll_fn(|cx| responses.borrow_mut().poll_disconnected(id, cx)).await
}

/// A Response's head from its status and its header list `[name0, value0,
/// name1, value1, ...]`.
pub(crate) fn build_response<'s>(
  scope: &mut v8::PinScope<'s, '_>,
  status: u32,
  headers: v8::Local<'s, v8::Array>,
  body: ResponseBody,
) -> Result<HttpResponse, JsErrorBox> {
  let mut response = response_head(status, body)?;
  let map = response.headers_mut();
  let len = headers.length();
  map.reserve(len as usize / 2);
  let mut i = 0;
  while i + 1 < len {
    let name = headers.get_index(scope, i).unwrap();
    let value = headers.get_index(scope, i + 1).unwrap();
    append_header(scope, map, name, value)?;
    i += 2;
  }
  Ok(response)
}

/// A Response with `status` and `body`, and no headers yet.
fn response_head(status: u32, body: ResponseBody) -> Result<HttpResponse, JsErrorBox> {
  let status = u16::try_from(status)
    .ok()
    .and_then(|s| StatusCode::from_u16(s).ok())
    .ok_or_else(|| JsErrorBox::range_error(format!("invalid status {status}")))?;
  let mut response = http::Response::new(body);
  *response.status_mut() = status;
  Ok(response)
}

fn append_header(
  scope: &mut v8::PinScope<'_, '_>,
  map: &mut http::HeaderMap,
  name: v8::Local<'_, v8::Value>,
  value: v8::Local<'_, v8::Value>,
) -> Result<(), JsErrorBox> {
  let name = with_byte_string(scope, name, |bytes| {
    if let Some(common) = common_response_header(bytes) {
      return Ok(common);
    }
    HeaderName::from_bytes(bytes).map_err(|_| {
      JsErrorBox::type_error(format!(
        "invalid header name {:?}",
        String::from_utf8_lossy(bytes)
      ))
    })
  })??;
  let value = with_byte_string(scope, value, |bytes| {
    HeaderValue::from_bytes(bytes)
      .map_err(|_| JsErrorBox::type_error(format!("invalid header value for {name}")))
  })??;
  map.append(name, value);
  Ok(())
}

fn header_value(
  scope: &mut v8::PinScope<'_, '_>,
  value: v8::Local<'_, v8::Value>,
) -> Result<HeaderValue, JsErrorBox> {
  with_byte_string(scope, value, |bytes| {
    HeaderValue::from_bytes(bytes)
      .map_err(|_| JsErrorBox::type_error("invalid header value for content-type"))
  })?
}

/// The header names responses carry most, found by a plain byte compare:
/// `HeaderName::from_bytes` maps and checks every byte and then looks the
/// name up among all standard headers, about 370 instructions for
/// `content-type`, which nearly every response has. Names come lowercase
/// from the JavaScript layer.
fn common_response_header(bytes: &[u8]) -> Option<HeaderName> {
  use http::header;
  Some(match bytes {
    b"content-type" => header::CONTENT_TYPE,
    b"content-length" => header::CONTENT_LENGTH,
    b"cache-control" => header::CACHE_CONTROL,
    b"set-cookie" => header::SET_COOKIE,
    b"location" => header::LOCATION,
    b"etag" => header::ETAG,
    b"vary" => header::VARY,
    b"access-control-allow-origin" => header::ACCESS_CONTROL_ALLOW_ORIGIN,
    _ => return None,
  })
}

/// Runs `f` on the bytes of a header name or value without copying them out
/// of V8: Fetch header names and values are byte strings, one byte per
/// character (the JavaScript layer has checked them).
fn with_byte_string<R>(
  scope: &mut v8::PinScope<'_, '_>,
  value: v8::Local<'_, v8::Value>,
  f: impl FnOnce(&[u8]) -> R,
) -> Result<R, JsErrorBox> {
  let string = v8::Local::<v8::String>::try_from(value)
    .map_err(|_| JsErrorBox::type_error("header names and values must be strings"))?;
  let view = v8::ValueView::new(scope, string);
  match view.data() {
    v8::ValueViewData::OneByte(bytes) => Ok(f(bytes)),
    v8::ValueViewData::TwoByte(units) => {
      let bytes = units
        .iter()
        .map(|&unit| u8::try_from(unit))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| JsErrorBox::type_error("header value is not a byte string"))?;
      Ok(f(&bytes))
    }
  }
}

pub(crate) fn answer_response(state: &OpState, id: u32, outcome: HandlerOutcome) {
  send(state, id, outcome);
}

fn send(state: &OpState, id: u32, outcome: HandlerOutcome) {
  answer(state.try_borrow::<SharedResponses>(), id, outcome);
}

fn answer(responses: Option<&SharedResponses>, id: u32, outcome: HandlerOutcome) {
  // (No slots at all while the snapshot is made: its warm-up answers
  // nobody.)
  if let Some(responses) = responses {
    responses.borrow_mut().answer(id, outcome);
  }
}

/// Answers request `id` with a body held whole: a string, bytes, or nothing.
/// Most responses have one header, their Content-Type: then it comes alone
/// as `content_type` (and `headers` is undefined); otherwise `headers` is
/// the header list and `content_type` is undefined.
#[op2(fast)]
pub fn op_respond<'s>(
  scope: &mut v8::PinScope<'s, '_>,
  state: &OpState,
  #[smi] id: u32,
  #[smi] status: u32,
  body: v8::Local<'s, v8::Value>,
  content_type: v8::Local<'s, v8::Value>,
  headers: v8::Local<'s, v8::Value>,
) -> Result<(), JsErrorBox> {
  let body = if body.is_null_or_undefined() {
    ResponseBody::empty()
  } else if let Ok(s) = v8::Local::<v8::String>::try_from(body) {
    ResponseBody::full(Bytes::from(s.to_rust_string_lossy(scope)))
  } else if let Ok(view) = v8::Local::<v8::ArrayBufferView>::try_from(body) {
    let mut bytes = vec![0; view.byte_length()];
    view.copy_contents(&mut bytes);
    ResponseBody::full(Bytes::from(bytes))
  } else {
    return Err(JsErrorBox::type_error("unsupported response body"));
  };
  let responses = state.try_borrow::<SharedResponses>();
  let response = if let Ok(list) = v8::Local::<v8::Array>::try_from(headers) {
    build_response(scope, status, list, body)?
  } else {
    let mut response = response_head(status, body)?;
    if !content_type.is_undefined() {
      let value = match responses {
        Some(responses) => responses
          .borrow_mut()
          .last_content_type
          .value(scope, content_type)?,
        None => header_value(scope, content_type)?,
      };
      response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, value);
    }
    response
  };
  answer(responses, id, HandlerOutcome::Response(response));
  Ok(())
}

/// The Content-Type value an isolate's last response had, by the identity
/// of its JavaScript string: a handler's responses nearly always carry the
/// same one (the very same string, a literal in its code or ours), so the
/// value is neither read out of V8, checked, nor copied again.
#[derive(Default)]
struct LastContentType(Option<(v8::Global<v8::String>, HeaderValue)>);

impl LastContentType {
  fn value(
    &mut self,
    scope: &mut v8::PinScope<'_, '_>,
    value: v8::Local<'_, v8::Value>,
  ) -> Result<HeaderValue, JsErrorBox> {
    let string = v8::Local::<v8::String>::try_from(value)
      .map_err(|_| JsErrorBox::type_error("header names and values must be strings"))?;
    if let Some((last, header)) = &self.0 {
      if string == *last {
        return Ok(header.clone());
      }
    }
    let header = header_value(scope, value)?;
    self.0 = Some((v8::Global::new(scope, string), header.clone()));
    Ok(header)
  }
}

/// Answers request `id` with a body read from resource `rid` (a
/// ReadableStream turned into a resource, or a body resource passed through).
#[op2(fast)]
pub fn op_respond_stream<'s>(
  scope: &mut v8::PinScope<'s, '_>,
  state: &mut OpState,
  #[smi] id: u32,
  #[smi] status: u32,
  headers: v8::Local<'s, v8::Array>,
  #[smi] rid: ResourceId,
) -> Result<(), JsErrorBox> {
  let resource = state
    .resource_table
    .take_any(rid)
    .map_err(JsErrorBox::from_err)?;
  let response = build_response(scope, status, headers, ResponseBody::stream(resource))?;
  send(state, id, HandlerOutcome::Response(response));
  Ok(())
}

/// Request `id` failed in JavaScript: `error` is the error with its stack.
#[op2(fast)]
pub fn op_respond_error(state: &OpState, #[smi] id: u32, #[string] error: String) {
  send(state, id, HandlerOutcome::Error(error));
}

/// Chunks read from a stream resource at a time.
const STREAM_READ_SIZE: usize = 64 * 1024;

/// Bodies smaller than this are not counted against
/// `limits.pending_response_bytes`: the socket takes them at once, and
/// `limits.concurrent_requests` bounds how many there are.
const UNCOUNTED_BODY_BYTES: usize = 16 * 1024;

/// A whole body goes to hyper in frames of this size: hyper copies each
/// into its write buffer (no writev) and asks for the next only once that
/// buffer has room, so the body waiting for a slow client stays here,
/// counted, instead of doubling in hyper's buffer.
const FULL_BODY_FRAME_BYTES: usize = 64 * 1024;

/// The body of a response produced by a script, with the worker's quota
/// permits: for the request it answers, and for the bytes of a whole body
/// (each given back once the body is done).
pub struct ResponseBody {
  kind: BodyKind,
  request: Option<QuotaPermit>,
  bytes: Option<QuotaPermit>,
}

enum BodyKind {
  Full(Option<Bytes>),
  Stream {
    resource: Rc<dyn Resource>,
    pending: Option<AsyncResult<BufView>>,
    done: bool,
  },
}

impl ResponseBody {
  fn new(kind: BodyKind) -> Self {
    Self {
      kind,
      request: None,
      bytes: None,
    }
  }

  pub fn empty() -> Self {
    Self::new(BodyKind::Full(None))
  }

  pub fn full(bytes: Bytes) -> Self {
    Self::new(BodyKind::Full(Some(bytes).filter(|b| !b.is_empty())))
  }

  pub fn stream(resource: Rc<dyn Resource>) -> Self {
    Self::new(BodyKind::Stream {
      resource,
      pending: None,
      done: false,
    })
  }

  /// Keeps `permit` until the body is done (sent whole, failed, or dropped
  /// with a client that went away).
  pub fn hold(&mut self, permit: QuotaPermit) {
    self.request = Some(permit);
  }

  /// Counts a whole body's bytes against the worker's
  /// `limits.pending_response_bytes` until it has gone to the socket; `Err`
  /// (for a 503) if that would pass the quota. A stream is not counted: it
  /// is read only as fast as the client takes it.
  pub fn count_against(&mut self, quotas: &Arc<WorkerQuotas>) -> Result<(), String> {
    if let BodyKind::Full(Some(bytes)) = &self.kind {
      if bytes.len() >= UNCOUNTED_BODY_BYTES {
        self.bytes = Some(quotas.acquire_units(Quota::ResponseBytes, bytes.len())?);
      }
    }
    Ok(())
  }
}

impl Drop for ResponseBody {
  fn drop(&mut self) {
    // A client that went away, or a finished stream: either way the
    // resource's producer (a JS reader) must learn it can stop.
    if let BodyKind::Stream { resource, .. } = &self.kind {
      resource.clone().close();
    }
  }
}

impl Body for ResponseBody {
  type Data = Bytes;
  type Error = JsErrorBox;

  fn poll_frame(
    mut self: Pin<&mut Self>,
    cx: &mut Context<'_>,
  ) -> Poll<Option<Result<Frame<Bytes>, JsErrorBox>>> {
    match &mut self.kind {
      BodyKind::Full(slot) => Poll::Ready(match slot {
        Some(bytes) if bytes.len() > FULL_BODY_FRAME_BYTES => {
          Some(Ok(Frame::data(bytes.split_to(FULL_BODY_FRAME_BYTES))))
        }
        _ => slot.take().map(|b| Ok(Frame::data(b))),
      }),
      BodyKind::Stream {
        resource,
        pending,
        done,
      } => {
        if *done {
          return Poll::Ready(None);
        }
        let read = pending.get_or_insert_with(|| resource.clone().read(STREAM_READ_SIZE));
        let result = std::task::ready!(read.as_mut().poll(cx));
        *pending = None;
        match result {
          Ok(view) if view.is_empty() => {
            *done = true;
            Poll::Ready(None)
          }
          Ok(view) => Poll::Ready(Some(Ok(Frame::data(bufview_to_bytes(view))))),
          Err(e) => {
            *done = true;
            Poll::Ready(Some(Err(e)))
          }
        }
      }
    }
  }

  fn is_end_stream(&self) -> bool {
    match &self.kind {
      BodyKind::Full(bytes) => bytes.is_none(),
      BodyKind::Stream { done, .. } => *done,
    }
  }

  fn size_hint(&self) -> SizeHint {
    match &self.kind {
      BodyKind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
      BodyKind::Stream { .. } => SizeHint::default(),
    }
  }
}

fn bufview_to_bytes(view: BufView) -> Bytes {
  Bytes::copy_from_slice(&view)
}

/// A request body as a deno_core resource, so JavaScript reads it as a
/// ReadableStream while it is still arriving.
pub struct RequestBodyResource {
  reader: BodyReader<RequestBody>,
  cancel: deno_core::CancelHandle,
}

impl RequestBodyResource {
  pub fn new(body: RequestBody) -> Self {
    Self {
      reader: BodyReader::new(body),
      cancel: Default::default(),
    }
  }

  async fn next_chunk(self: Rc<Self>, limit: usize) -> Result<BufView, JsErrorBox> {
    self
      .reader
      .next_chunk(limit)
      .await
      .map_err(|e| JsErrorBox::generic(format!("request body: {e}")))
  }
}

impl Resource for RequestBodyResource {
  fn name(&self) -> std::borrow::Cow<'_, str> {
    "requestBody".into()
  }

  fn read(self: Rc<Self>, limit: usize) -> AsyncResult<BufView> {
    use deno_core::futures::FutureExt;
    use deno_core::RcRef;
    let cancel = RcRef::map(&self, |r| &r.cancel);
    Box::pin(
      deno_core::CancelFuture::or_cancel(self.clone().next_chunk(limit), cancel)
        .map(|r| r.unwrap_or_else(|_| Err(JsErrorBox::generic("request body read cancelled")))),
    )
  }

  fn close(self: Rc<Self>) {
    self.cancel.cancel();
  }
}
