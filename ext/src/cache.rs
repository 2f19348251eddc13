//! The Cache API's ops (`js/55_cache.js` is the JavaScript side) and the
//! rules Workers applies to what is stored and what a match returns:
//! freshness from `Cache-Control` / `Expires`, what `put` refuses, Vary,
//! conditional requests (304) and ranges (206).
//!
//! Where entries live is a [`CacheBackend`]: the in-process LRU
//! (`cache_memory.rs`) or Redis (the `runtime_cache` crate). An isolate
//! reaches only the caches of its [`CacheScope`] (put in its `OpState` by
//! the engine): a namespace, the worker's name unless caches are shared.
//! Scripts never name a namespace.
//!
//! Bodies go in chunk by chunk (`op_cache_put_chunk`, copied into a Rust
//! buffer, never joined in the isolate) and come out as a stream over a
//! resource holding the stored bytes (up to 64 KiB, in one piece).

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use deno_core::convert::{ByteString, OptionNull, Uint8Array};
use deno_core::{op2, AsyncResult, BufView, OpState, Resource, ResourceId, ToV8};
use deno_error::JsErrorBox;

use crate::cache_memory::MemoryStore;

/// Which cache: a namespace (one per worker, or shared), and a cache of it
/// (`None`: `caches.default`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheId {
  pub namespace: Arc<str>,
  pub name: Option<String>,
}

/// One stored response.
#[derive(Clone, Debug)]
pub struct Entry {
  pub status: u16,
  pub status_text: String,
  /// Names lowercase; values as Latin-1 strings (one char per byte).
  pub headers: Vec<(String, String)>,
  /// The request headers the response's `Vary` names, as they were at put.
  pub vary: Vec<(String, Option<String>)>,
  pub body: Bytes,
  /// Milliseconds since the Unix epoch.
  pub stored_at_ms: u64,
  pub expires_at_ms: u64,
}

impl Entry {
  /// What the entry costs a byte-bounded store.
  pub fn weight(&self, url: &str) -> usize {
    let headers: usize = self
      .headers
      .iter()
      .map(|(n, v)| n.len() + v.len() + 16)
      .sum();
    let vary: usize = self
      .vary
      .iter()
      .map(|(n, v)| n.len() + v.as_ref().map_or(0, |v| v.len()) + 16)
      .sum();
    self.body.len() + headers + vary + url.len() + self.status_text.len() + 128
  }
}

/// A backend's failure, in words for the script's rejected promise.
#[derive(Debug, Clone)]
pub struct CacheError(pub String);

impl std::fmt::Display for CacheError {
  fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    f.write_str(&self.0)
  }
}

pub type CacheFuture<T> = Pin<Box<dyn Future<Output = Result<T, CacheError>> + Send>>;

/// Where entries live. Every method is called from an isolate thread and
/// must not block it: a store that does I/O does it elsewhere and bounds
/// its time.
pub trait CacheBackend: Send + Sync + 'static {
  fn put(&self, cache: CacheId, url: String, entry: Entry) -> CacheFuture<()>;
  /// The entry if present and not expired.
  fn get(&self, cache: CacheId, url: String) -> CacheFuture<Option<Entry>>;
  fn delete(&self, cache: CacheId, url: String) -> CacheFuture<bool>;
  /// URLs of the live entries of a cache, oldest put first.
  fn urls(&self, cache: CacheId) -> CacheFuture<Vec<String>>;
  /// Records a named cache as existing (`caches.open`).
  fn open(&self, cache: CacheId) -> CacheFuture<()>;
  fn has(&self, cache: CacheId) -> CacheFuture<bool>;
  /// Deletes a named cache and its entries; whether it existed.
  fn delete_cache(&self, cache: CacheId) -> CacheFuture<bool>;
  /// Names of a namespace's caches, in the order they were opened.
  fn names(&self, namespace: Arc<str>) -> CacheFuture<Vec<String>>;
  /// The largest entry (`Entry::weight`) the store takes.
  fn max_entry_bytes(&self) -> usize;
}

/// The caches an isolate may reach: `backend`, within `namespace`.
#[derive(Clone)]
pub struct CacheScope {
  pub backend: Arc<dyn CacheBackend>,
  pub namespace: Arc<str>,
}

impl std::fmt::Debug for CacheScope {
  fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    f.debug_struct("CacheScope")
      .field("namespace", &self.namespace)
      .finish_non_exhaustive()
  }
}

/// The namespace of caches shared by every worker (worker names are never
/// empty).
pub const SHARED_NAMESPACE: &str = "";

/// The default in-process capacity, `[cache] memory_mb`.
pub const DEFAULT_MEMORY_MB: u64 = 256;

impl CacheScope {
  /// The process's default in-process store (256 MiB), for isolates the
  /// engine gave no scope (the WPT runner's, benches').
  pub fn process_default(namespace: &str) -> Self {
    static STORE: OnceLock<Arc<MemoryStore>> = OnceLock::new();
    let store = STORE.get_or_init(|| Arc::new(MemoryStore::new(DEFAULT_MEMORY_MB << 20)));
    Self {
      backend: store.clone(),
      namespace: namespace.into(),
    }
  }
}

fn scope(state: &OpState) -> CacheScope {
  match state.try_borrow::<CacheScope>() {
    Some(scope) => scope.clone(),
    None => CacheScope::process_default(SHARED_NAMESPACE),
  }
}

fn cache_id(scope: &CacheScope, name: Option<String>) -> CacheId {
  CacheId {
    namespace: scope.namespace.clone(),
    name,
  }
}

fn type_error(message: impl Into<std::borrow::Cow<'static, str>>) -> JsErrorBox {
  JsErrorBox::type_error(message)
}

fn backend_error(error: CacheError) -> JsErrorBox {
  JsErrorBox::generic(format!("Cache API: {error}"))
}

pub fn now_ms() -> u64 {
  SystemTime::now()
    .duration_since(UNIX_EPOCH)
    .map_or(0, |d| d.as_millis() as u64)
}

// ---------------------------------------------------------------------------
// Header helpers. Header values travel as byte strings; they are kept as
// strings with one char per byte (Latin-1), which round-trips every byte.

fn latin1(bytes: &[u8]) -> String {
  bytes.iter().map(|&b| b as char).collect()
}

fn to_bytes(s: &str) -> ByteString {
  let bytes: Vec<u8> = s.chars().map(|c| c as u32 as u8).collect();
  ByteString::from(bytes)
}

fn pairs(flat: &[ByteString]) -> Vec<(String, String)> {
  flat
    .chunks_exact(2)
    .map(|p| (latin1(&p[0]).to_ascii_lowercase(), latin1(&p[1])))
    .collect()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
  headers
    .iter()
    .find(|(n, _)| n == name)
    .map(|(_, v)| v.as_str())
}

/// All values of `name`, joined as one field (`a, b`).
fn combined(headers: &[(String, String)], name: &str) -> Option<String> {
  let mut out: Option<String> = None;
  for (n, v) in headers {
    if n == name {
      match &mut out {
        Some(s) => {
          s.push_str(", ");
          s.push_str(v);
        }
        None => out = Some(v.clone()),
      }
    }
  }
  out
}

/// `Cache-Control` directives, names lowercase, values unquoted.
fn cache_control(headers: &[(String, String)]) -> Vec<(String, Option<String>)> {
  let Some(value) = combined(headers, "cache-control") else {
    return Vec::new();
  };
  let mut out = Vec::new();
  // Split on commas outside quotes.
  let mut parts = Vec::new();
  let (mut start, mut quoted) = (0, false);
  for (i, c) in value.char_indices() {
    match c {
      '"' => quoted = !quoted,
      ',' if !quoted => {
        parts.push(&value[start..i]);
        start = i + 1;
      }
      _ => {}
    }
  }
  parts.push(&value[start..]);
  for part in parts {
    let part = part.trim();
    if part.is_empty() {
      continue;
    }
    match part.split_once('=') {
      Some((name, value)) => out.push((
        name.trim().to_ascii_lowercase(),
        Some(value.trim().trim_matches('"').to_string()),
      )),
      None => out.push((part.to_ascii_lowercase(), None)),
    }
  }
  out
}

fn http_date_ms(value: &str) -> Option<u64> {
  httpdate::parse_http_date(value.trim())
    .ok()
    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
    .map(|d| d.as_millis() as u64)
}

/// What `put` does with a response, by Workers' rules.
#[derive(Debug, PartialEq, Eq)]
pub enum PutDecision {
  /// Stored, fresh for this long, without the header fields in `strip`
  /// (those of `private=...`, as `private=Set-Cookie`).
  Store { ttl: Duration, strip: Vec<String> },
  /// Accepted, not stored (no-store, private, no-cache, no freshness).
  Skip,
}

/// Cloudflare's default edge TTL by status, for a response that states no
/// freshness of its own; `None`: not cached.
fn default_ttl(status: u16) -> Option<u64> {
  match status {
    200 | 206 | 301 => Some(120 * 60),
    302 | 303 => Some(20 * 60),
    404 | 410 => Some(3 * 60),
    _ => None,
  }
}

/// Applies Workers' rules to a response about to be put. Errors are the
/// TypeErrors `put` rejects with.
pub fn put_decision(
  method: &str,
  status: u16,
  headers: &[(String, String)],
  now_ms: u64,
) -> Result<PutDecision, String> {
  if method != "GET" {
    return Err("Cannot cache response to non-GET request.".into());
  }
  if status == 206 {
    return Err("Cannot cache response to a range request (206 Partial Content).".into());
  }
  if let Some(vary) = combined(headers, "vary") {
    if vary.contains('*') {
      return Err("Cannot cache response with 'Vary: *' header.".into());
    }
  }
  if status == 304 {
    // As workerd: silently dropped (a cached 304 would answer unconditional
    // requests).
    return Ok(PutDecision::Skip);
  }
  let directives = cache_control(headers);
  let has = |name: &str| directives.iter().any(|(n, _)| n == name);
  let value = |name: &str| {
    directives
      .iter()
      .find(|(n, _)| n == name)
      .and_then(|(_, v)| v.as_deref())
  };
  if has("no-store") {
    return Ok(PutDecision::Skip);
  }
  // `private="a, b"`: those header fields are for one user only; the rest
  // of the response may be shared, without them.
  let mut strip = Vec::new();
  for (name, v) in &directives {
    if name != "private" {
      continue;
    }
    let Some(fields) = v else {
      return Ok(PutDecision::Skip);
    };
    for field in fields.split(',') {
      let field = field.trim().to_ascii_lowercase();
      if !field.is_empty() {
        strip.push(field);
      }
    }
  }
  let strip_set_cookie = strip.iter().any(|f| f == "set-cookie");
  if !strip_set_cookie && header(headers, "set-cookie").is_some() {
    return Err(
      "Cannot cache response with a 'Set-Cookie' header; mark it 'Cache-Control: private=Set-Cookie' to cache it without the cookie."
        .into(),
    );
  }
  // `no-cache` (without fields): every use must be revalidated with the
  // origin, which a cache that never revalidates cannot do.
  if directives
    .iter()
    .any(|(n, v)| n == "no-cache" && v.is_none())
  {
    return Ok(PutDecision::Skip);
  }
  let seconds = |v: &str| v.trim().parse::<i64>().ok();
  let ttl_ms: Option<i64> = if let Some(s) = value("s-maxage").and_then(seconds) {
    Some(s.saturating_mul(1000))
  } else if let Some(s) = value("max-age").and_then(seconds) {
    Some(s.saturating_mul(1000))
  } else if let Some(expires) = header(headers, "expires") {
    // An invalid Expires (e.g. "0") means already expired.
    let base = header(headers, "date")
      .and_then(http_date_ms)
      .unwrap_or(now_ms);
    Some(http_date_ms(expires).map_or(-1, |e| e as i64 - base as i64))
  } else {
    default_ttl(status).map(|s| s as i64 * 1000)
  };
  match ttl_ms {
    Some(ms) if ms > 0 => Ok(PutDecision::Store {
      ttl: Duration::from_millis(ms as u64),
      strip,
    }),
    _ => Ok(PutDecision::Skip),
  }
}

/// The request headers `Vary` names (from the response headers).
fn vary_of(
  response: &[(String, String)],
  request: &[(String, String)],
) -> Vec<(String, Option<String>)> {
  let Some(vary) = combined(response, "vary") else {
    return Vec::new();
  };
  vary
    .split(',')
    .map(|n| n.trim().to_ascii_lowercase())
    .filter(|n| !n.is_empty())
    .map(|n| {
      let v = combined(request, &n);
      (n, v)
    })
    .collect()
}

fn vary_matches(entry: &Entry, request: &[(String, String)]) -> bool {
  entry
    .vary
    .iter()
    .all(|(name, value)| combined(request, name) == *value)
}

/// Does `If-None-Match` list `etag` (weak comparison)?
fn none_match(list: &str, etag: &str) -> bool {
  let strip = |t: &str| t.trim().trim_start_matches("W/").to_string();
  let etag = strip(etag);
  list.split(',').any(|t| t.trim() == "*" || strip(t) == etag)
}

/// A single `bytes=` range against a body of `len` bytes: `Ok(Some(a..=b))`
/// to serve, `Ok(None)` to ignore (malformed or several ranges: the whole
/// body), `Err(())` unsatisfiable (416).
fn parse_range(value: &str, len: u64) -> Result<Option<(u64, u64)>, ()> {
  let Some(spec) = value.trim().strip_prefix("bytes=") else {
    return Ok(None);
  };
  if spec.contains(',') {
    return Ok(None);
  }
  let Some((a, b)) = spec.trim().split_once('-') else {
    return Ok(None);
  };
  let (a, b) = (a.trim(), b.trim());
  if a.is_empty() {
    let Ok(suffix) = b.parse::<u64>() else {
      return Ok(None);
    };
    if suffix == 0 || len == 0 {
      return Err(());
    }
    return Ok(Some((len.saturating_sub(suffix), len - 1)));
  }
  let Ok(start) = a.parse::<u64>() else {
    return Ok(None);
  };
  let end = if b.is_empty() {
    len.saturating_sub(1)
  } else {
    match b.parse::<u64>() {
      Ok(end) if end >= start => end.min(len.saturating_sub(1)),
      _ => return Ok(None),
    }
  };
  if start >= len {
    return Err(());
  }
  Ok(Some((start, end)))
}

/// What a match answers: status, headers, and the body's byte range (none
/// for a 304).
#[derive(Debug)]
pub struct Answer {
  pub status: u16,
  pub status_text: String,
  pub headers: Vec<(String, String)>,
  pub body: Option<Bytes>,
}

/// Builds the response a match gives for `entry`, honouring the request's
/// conditional and Range headers.
pub fn answer(entry: Entry, request: &[(String, String)], now_ms: u64) -> Answer {
  let mut headers = entry.headers;
  let age = now_ms.saturating_sub(entry.stored_at_ms) / 1000;
  headers.retain(|(n, _)| n != "age" && n != "cf-cache-status");
  headers.push(("age".into(), age.to_string()));
  headers.push(("cf-cache-status".into(), "HIT".into()));
  let not_modified = if let Some(list) = combined(request, "if-none-match") {
    header(&headers, "etag").is_some_and(|etag| none_match(&list, etag))
  } else if let Some(since) = header(request, "if-modified-since").and_then(http_date_ms) {
    header(&headers, "last-modified")
      .and_then(http_date_ms)
      .is_some_and(|modified| modified <= since)
  } else {
    false
  };
  if not_modified && (200..300).contains(&entry.status) {
    headers.retain(|(n, _)| n != "content-length" && n != "content-type");
    return Answer {
      status: 304,
      status_text: "Not Modified".into(),
      headers,
      body: None,
    };
  }
  let body = entry.body;
  if entry.status == 200 {
    if let Some(range) = header(request, "range") {
      let len = body.len() as u64;
      match parse_range(range, len) {
        Ok(Some((start, end))) => {
          headers.retain(|(n, _)| n != "content-length" && n != "content-range");
          headers.push(("content-range".into(), format!("bytes {start}-{end}/{len}")));
          headers.push(("content-length".into(), (end - start + 1).to_string()));
          return Answer {
            status: 206,
            status_text: "Partial Content".into(),
            headers,
            body: Some(body.slice(start as usize..=end as usize)),
          };
        }
        Err(()) => {
          headers.retain(|(n, _)| n != "content-length" && n != "content-range");
          headers.push(("content-range".into(), format!("bytes */{len}")));
          headers.push(("content-length".into(), "0".into()));
          return Answer {
            status: 416,
            status_text: "Range Not Satisfiable".into(),
            headers,
            body: Some(Bytes::new()),
          };
        }
        Ok(None) => {}
      }
    }
  }
  headers.retain(|(n, _)| n != "content-length");
  headers.push(("content-length".into(), body.len().to_string()));
  Answer {
    status: entry.status,
    status_text: entry.status_text,
    headers,
    body: Some(body),
  }
}

// ---------------------------------------------------------------------------
// Resources

/// A put under way: the entry, its body gathered chunk by chunk.
struct PutResource {
  cache: CacheId,
  url: String,
  entry: RefCell<Option<Entry>>,
  chunks: RefCell<Vec<Bytes>>,
  size: std::cell::Cell<usize>,
  limit: usize,
}

impl Resource for PutResource {
  fn name(&self) -> std::borrow::Cow<'_, str> {
    "cachePut".into()
  }
}

/// A stored body, read out as a stream.
pub struct CachedBodyResource {
  data: RefCell<Bytes>,
}

impl Resource for CachedBodyResource {
  fn name(&self) -> std::borrow::Cow<'_, str> {
    "cachedBody".into()
  }

  fn read(self: Rc<Self>, limit: usize) -> AsyncResult<BufView> {
    let mut data = self.data.borrow_mut();
    let n = limit.min(data.len());
    let chunk = data.split_to(n);
    Box::pin(std::future::ready(Ok(BufView::from(chunk))))
  }

  fn size_hint(&self) -> (u64, Option<u64>) {
    let n = self.data.borrow().len() as u64;
    (n, Some(n))
  }
}

// ---------------------------------------------------------------------------
// Ops. Cache names: `null` is `caches.default`.

/// Starts a put: checks Workers' rules and returns the rid to stream the
/// body into, or -1 when the response is accepted but not stored (the
/// caller discards the body).
#[op2]
#[smi]
pub fn op_cache_put_begin(
  state: &mut OpState,
  #[string] name: Option<String>,
  #[string] url: String,
  #[string] method: String,
  #[scoped] request_headers: Vec<ByteString>,
  #[smi] status: u32,
  #[string] status_text: String,
  #[scoped] response_headers: Vec<ByteString>,
) -> Result<i32, JsErrorBox> {
  let mut headers = pairs(&response_headers);
  let now = now_ms();
  let decision = put_decision(&method, status as u16, &headers, now).map_err(type_error)?;
  let PutDecision::Store { ttl, strip } = decision else {
    return Ok(-1);
  };
  headers.retain(|(n, _)| !strip.contains(n));
  let request = pairs(&request_headers);
  let vary = vary_of(&headers, &request);
  let scope = scope(state);
  let entry = Entry {
    status: status as u16,
    status_text,
    headers,
    vary,
    body: Bytes::new(),
    stored_at_ms: now,
    expires_at_ms: now.saturating_add(ttl.as_millis() as u64),
  };
  let limit = scope.backend.max_entry_bytes();
  let resource = PutResource {
    cache: cache_id(&scope, name),
    url,
    entry: RefCell::new(Some(entry)),
    chunks: RefCell::new(Vec::new()),
    size: std::cell::Cell::new(0),
    limit,
  };
  Ok(state.resource_table.add(resource) as i32)
}

/// Appends a chunk of the body (copied: the chunk's buffer stays the
/// script's).
#[op2(fast)]
pub fn op_cache_put_chunk(
  state: &mut OpState,
  #[smi] rid: ResourceId,
  #[buffer] chunk: &[u8],
) -> Result<(), JsErrorBox> {
  let resource = state
    .resource_table
    .get::<PutResource>(rid)
    .map_err(JsErrorBox::from_err)?;
  let size = resource.size.get() + chunk.len();
  if size > resource.limit {
    let limit = resource.limit;
    drop(resource);
    let _ = state.resource_table.take::<PutResource>(rid);
    return Err(type_error(format!(
      "Cache.put: the response is too large for the cache (more than {limit} bytes)"
    )));
  }
  resource.size.set(size);
  resource
    .chunks
    .borrow_mut()
    .push(Bytes::copy_from_slice(chunk));
  Ok(())
}

/// Abandons a put (its body failed).
#[op2(fast)]
pub fn op_cache_put_abort(state: &mut OpState, #[smi] rid: ResourceId) {
  let _ = state.resource_table.take::<PutResource>(rid);
}

/// Stores the entry whose body was streamed in.
#[op2]
pub async fn op_cache_put_commit(
  state: Rc<RefCell<OpState>>,
  #[smi] rid: ResourceId,
) -> Result<(), JsErrorBox> {
  let (resource, backend) = {
    let mut state = state.borrow_mut();
    let resource = state
      .resource_table
      .take::<PutResource>(rid)
      .map_err(JsErrorBox::from_err)?;
    (resource, scope(&state).backend)
  };
  let mut entry = resource
    .entry
    .borrow_mut()
    .take()
    .ok_or_else(|| type_error("cache put already committed"))?;
  let chunks = std::mem::take(&mut *resource.chunks.borrow_mut());
  entry.body = match chunks.len() {
    0 => Bytes::new(),
    1 => chunks.into_iter().next().unwrap(),
    _ => {
      let mut body = Vec::with_capacity(resource.size.get());
      for chunk in chunks {
        body.extend_from_slice(&chunk);
      }
      Bytes::from(body)
    }
  };
  if entry.weight(&resource.url) > resource.limit {
    return Err(type_error(format!(
      "Cache.put: the response is too large for the cache ({} bytes, at most {})",
      entry.weight(&resource.url),
      resource.limit
    )));
  }
  backend
    .put(resource.cache.clone(), resource.url.clone(), entry)
    .await
    .map_err(backend_error)
}

/// Bodies up to this size come out of `match` in one piece (a Uint8Array
/// the Response is made of, which the server then sends with its head in
/// one write); larger ones as a stream over a resource, chunk by chunk.
const INLINE_BODY: usize = 64 * 1024;

#[derive(ToV8)]
pub struct CachedResponse {
  status: u16,
  status_text: ByteString,
  headers: Vec<ByteString>,
  /// A small body, whole.
  body: OptionNull<Uint8Array>,
  /// A large body's resource.
  body_rid: OptionNull<u32>,
}

/// The response cached for `url`, if any, answered as the request's
/// headers ask (304, 206, 416); null on a miss.
#[op2]
pub async fn op_cache_match(
  state: Rc<RefCell<OpState>>,
  #[string] name: Option<String>,
  #[string] url: String,
  #[scoped] request_headers: Vec<ByteString>,
) -> Result<Option<CachedResponse>, JsErrorBox> {
  let scope = scope(&state.borrow());
  let entry = scope
    .backend
    .get(cache_id(&scope, name), url)
    .await
    .map_err(backend_error)?;
  let request = pairs(&request_headers);
  let Some(entry) = entry.filter(|e| vary_matches(e, &request)) else {
    return Ok(None);
  };
  let answer = answer(entry, &request, now_ms());
  let mut headers = Vec::with_capacity(answer.headers.len() * 2);
  for (n, v) in &answer.headers {
    headers.push(ByteString::from(n.as_str()));
    headers.push(to_bytes(v));
  }
  let (mut body, mut body_rid) = (None, None);
  match answer.body {
    Some(data) if data.len() <= INLINE_BODY => body = Some(Uint8Array::from(data.to_vec())),
    Some(data) => {
      body_rid = Some(state.borrow_mut().resource_table.add(CachedBodyResource {
        data: RefCell::new(data),
      }))
    }
    None => {}
  }
  Ok(Some(CachedResponse {
    status: answer.status,
    status_text: to_bytes(&answer.status_text),
    headers,
    body: body.into(),
    body_rid: body_rid.into(),
  }))
}

#[op2]
pub async fn op_cache_delete(
  state: Rc<RefCell<OpState>>,
  #[string] name: Option<String>,
  #[string] url: String,
) -> Result<bool, JsErrorBox> {
  let scope = scope(&state.borrow());
  scope
    .backend
    .delete(cache_id(&scope, name), url)
    .await
    .map_err(backend_error)
}

#[op2]
pub async fn op_cache_keys(
  state: Rc<RefCell<OpState>>,
  #[string] name: Option<String>,
) -> Result<Vec<String>, JsErrorBox> {
  let scope = scope(&state.borrow());
  scope
    .backend
    .urls(cache_id(&scope, name))
    .await
    .map_err(backend_error)
}

#[op2]
pub async fn op_caches_open(
  state: Rc<RefCell<OpState>>,
  #[string] name: String,
) -> Result<(), JsErrorBox> {
  let scope = scope(&state.borrow());
  scope
    .backend
    .open(cache_id(&scope, Some(name)))
    .await
    .map_err(backend_error)
}

#[op2]
pub async fn op_caches_has(
  state: Rc<RefCell<OpState>>,
  #[string] name: String,
) -> Result<bool, JsErrorBox> {
  let scope = scope(&state.borrow());
  scope
    .backend
    .has(cache_id(&scope, Some(name)))
    .await
    .map_err(backend_error)
}

#[op2]
pub async fn op_caches_delete(
  state: Rc<RefCell<OpState>>,
  #[string] name: String,
) -> Result<bool, JsErrorBox> {
  let scope = scope(&state.borrow());
  scope
    .backend
    .delete_cache(cache_id(&scope, Some(name)))
    .await
    .map_err(backend_error)
}

#[op2]
pub async fn op_caches_keys(state: Rc<RefCell<OpState>>) -> Result<Vec<String>, JsErrorBox> {
  let scope = scope(&state.borrow());
  scope
    .backend
    .names(scope.namespace.clone())
    .await
    .map_err(backend_error)
}

#[cfg(test)]
mod tests {
  use super::*;

  fn h(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list
      .iter()
      .map(|(n, v)| (n.to_string(), v.to_string()))
      .collect()
  }

  fn ttl(headers: &[(&str, &str)]) -> Option<u64> {
    match put_decision("GET", 200, &h(headers), 1_000_000_000_000).unwrap() {
      PutDecision::Store { ttl, .. } => Some(ttl.as_secs()),
      PutDecision::Skip => None,
    }
  }

  #[test]
  fn freshness() {
    assert_eq!(ttl(&[("cache-control", "max-age=60")]), Some(60));
    assert_eq!(
      ttl(&[("cache-control", "max-age=60, s-maxage=10")]),
      Some(10)
    );
    assert_eq!(ttl(&[("cache-control", "no-store, max-age=60")]), None);
    assert_eq!(ttl(&[("cache-control", "private")]), None);
    assert_eq!(ttl(&[("cache-control", "no-cache")]), None);
    assert_eq!(ttl(&[("cache-control", "max-age=0")]), None);
    assert_eq!(ttl(&[("expires", "0")]), None);
    assert_eq!(
      ttl(&[
        ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ("expires", "Sun, 06 Nov 1994 08:50:37 GMT")
      ]),
      Some(60)
    );
    assert_eq!(ttl(&[]), Some(7200));
    assert!(put_decision("GET", 500, &[], 0).unwrap() == PutDecision::Skip);
    assert!(put_decision("POST", 200, &[], 0).is_err());
    assert!(put_decision("GET", 206, &[], 0).is_err());
    assert!(put_decision("GET", 200, &h(&[("vary", "*")]), 0).is_err());
    assert!(put_decision("GET", 200, &h(&[("set-cookie", "a=b")]), 0).is_err());
    assert_eq!(
      put_decision(
        "GET",
        200,
        &h(&[
          ("set-cookie", "a=b"),
          ("cache-control", "private=Set-Cookie, max-age=5")
        ]),
        0
      )
      .unwrap(),
      PutDecision::Store {
        ttl: Duration::from_secs(5),
        strip: vec!["set-cookie".into()]
      }
    );
  }

  #[test]
  fn ranges() {
    assert_eq!(parse_range("bytes=0-3", 10), Ok(Some((0, 3))));
    assert_eq!(parse_range("bytes=5-", 10), Ok(Some((5, 9))));
    assert_eq!(parse_range("bytes=-3", 10), Ok(Some((7, 9))));
    assert_eq!(parse_range("bytes=2-100", 10), Ok(Some((2, 9))));
    assert_eq!(parse_range("bytes=10-", 10), Err(()));
    assert_eq!(parse_range("bytes=0-1,3-4", 10), Ok(None));
    assert_eq!(parse_range("items=0-1", 10), Ok(None));
  }

  #[test]
  fn etags() {
    assert!(none_match("\"a\", \"b\"", "\"b\""));
    assert!(none_match("W/\"a\"", "\"a\""));
    assert!(none_match("*", "\"a\""));
    assert!(!none_match("\"c\"", "\"a\""));
  }
}
