//! The ops behind a KV binding (`js/50_kv.js`). Each takes the binding's
//! index among its worker's namespaces ([`KvBindings`], in the isolate's
//! `OpState`), and is async: the store works on the KV runtime while the
//! isolate runs on.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use base64::Engine as _;
use deno_core::convert::{OptionNull, Uint8Array};
use deno_core::{op2, OpState, ResourceId};
use deno_error::JsErrorBox;

use crate::{expiry, now_ms, value_too_large, KvBindings, Namespace, MAX_VALUE_BYTES};

fn namespace(state: &Rc<RefCell<OpState>>, ns: u32) -> Result<Arc<Namespace>, JsErrorBox> {
  state
    .borrow()
    .try_borrow::<KvBindings>()
    .and_then(|b| b.0.get(ns as usize).cloned())
    .ok_or_else(|| JsErrorBox::generic("KV namespace binding is not available in this isolate"))
}

/// Each key's value and metadata (JSON text), or null when the key is absent
/// (or expired).
type GetResult = Vec<OptionNull<(Uint8Array, OptionNull<String>)>>;

#[op2]
pub async fn op_kv_get(
  state: Rc<RefCell<OpState>>,
  #[smi] ns: u32,
  #[serde] keys: Vec<String>,
) -> Result<GetResult, JsErrorBox> {
  let namespace = namespace(&state, ns)?;
  let entries = namespace.get(keys).await.map_err(JsErrorBox::generic)?;
  Ok(
    entries
      .into_iter()
      .map(|entry| OptionNull(entry.map(|e| (Uint8Array::from(e.value), OptionNull(e.metadata)))))
      .collect(),
  )
}

/// `expiration` (seconds since the epoch) and `expiration_ttl` (seconds) are
/// NaN when not given; `metadata` is JSON text ("" when none).
#[op2]
pub async fn op_kv_put(
  state: Rc<RefCell<OpState>>,
  #[smi] ns: u32,
  #[string] key: String,
  #[buffer(copy)] value: Vec<u8>,
  expiration: f64,
  expiration_ttl: f64,
  #[string] metadata: String,
) -> Result<(), JsErrorBox> {
  let namespace = namespace(&state, ns)?;
  let metadata = given_metadata(metadata);
  if value.len() > MAX_VALUE_BYTES {
    return Err(JsErrorBox::generic(value_too_large(value.len())));
  }
  let expires = expires(&namespace, expiration, expiration_ttl)?;
  namespace
    .put(key, value, expires, metadata)
    .await
    .map_err(JsErrorBox::generic)
}

/// A put whose value is a ReadableStream (resource `rid`): its chunks are
/// read here as the stream produces them, never gathered in the isolate.
#[op2]
pub async fn op_kv_put_stream(
  state: Rc<RefCell<OpState>>,
  #[smi] ns: u32,
  #[string] key: String,
  #[smi] rid: ResourceId,
  expiration: f64,
  expiration_ttl: f64,
  #[string] metadata: String,
) -> Result<(), JsErrorBox> {
  let namespace = namespace(&state, ns)?;
  let metadata = given_metadata(metadata);
  let source = state
    .borrow_mut()
    .resource_table
    .take_any(rid)
    .map_err(JsErrorBox::from_err)?;
  let expires = match expires(&namespace, expiration, expiration_ttl) {
    Ok(expires) => expires,
    Err(error) => {
      source.close();
      return Err(error);
    }
  };
  let mut value = Vec::new();
  loop {
    let chunk = match source.clone().read(64 * 1024).await {
      Ok(chunk) => chunk,
      Err(error) => {
        source.close();
        return Err(JsErrorBox::generic(format!(
          "KV PUT failed: the value stream failed: {error}"
        )));
      }
    };
    if chunk.is_empty() {
      break;
    }
    if value.len() + chunk.len() > MAX_VALUE_BYTES {
      source.close();
      return Err(JsErrorBox::generic(value_too_large(
        value.len() + chunk.len(),
      )));
    }
    value.extend_from_slice(&chunk);
  }
  source.close();
  namespace
    .put(key, value, expires, metadata)
    .await
    .map_err(JsErrorBox::generic)
}

/// Metadata is JSON text, never empty: "" is none.
fn given_metadata(metadata: String) -> Option<String> {
  (!metadata.is_empty()).then_some(metadata)
}

fn expires(
  namespace: &Namespace,
  expiration: f64,
  expiration_ttl: f64,
) -> Result<Option<i64>, JsErrorBox> {
  let given = |n: f64| (!n.is_nan()).then_some(n);
  expiry(
    given(expiration),
    given(expiration_ttl),
    namespace.min_ttl_seconds(),
    now_ms(),
  )
  .map_err(JsErrorBox::generic)
}

#[op2]
pub async fn op_kv_delete(
  state: Rc<RefCell<OpState>>,
  #[smi] ns: u32,
  #[string] key: String,
) -> Result<(), JsErrorBox> {
  let namespace = namespace(&state, ns)?;
  namespace.delete(key).await.map_err(JsErrorBox::generic)
}

/// `[[name, expiration (seconds) | null, metadata JSON | null], ...]`, and
/// the cursor of the next page (null when this one is the last).
type ListResult = (
  Vec<(String, OptionNull<f64>, OptionNull<String>)>,
  OptionNull<String>,
);

#[op2]
pub async fn op_kv_list(
  state: Rc<RefCell<OpState>>,
  #[smi] ns: u32,
  #[string] prefix: String,
  #[smi] limit: u32,
  #[string] cursor: String,
) -> Result<ListResult, JsErrorBox> {
  let namespace = namespace(&state, ns)?;
  let after = if cursor.is_empty() {
    None
  } else {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
      .decode(cursor.as_bytes())
      .ok()
      .and_then(|b| String::from_utf8(b).ok())
      .ok_or_else(|| JsErrorBox::generic("KV GET failed: 400 Invalid cursor."))?;
    Some(bytes)
  };
  let page = namespace
    .list(prefix, limit as usize, after)
    .await
    .map_err(JsErrorBox::generic)?;
  let cursor = page.more.then(|| {
    let last = page.keys.last().map_or("", |k| k.name.as_str());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last.as_bytes())
  });
  let keys = page
    .keys
    .into_iter()
    .map(|k| {
      (
        k.name,
        OptionNull(k.expires_ms.map(|ms| (ms / 1000) as f64)),
        OptionNull(k.metadata),
      )
    })
    .collect();
  Ok((keys, OptionNull(cursor)))
}
