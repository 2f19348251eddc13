//! The runtime's extension: the ops behind the global scope a Workers script
//! sees, and the list of JavaScript files (in `js/`) evaluated into the
//! startup snapshot.

pub mod body;
pub mod cache;
pub mod cache_memory;
pub mod clock;
pub mod console;
pub mod crypto;
pub mod fetch;
pub mod http;
pub mod integrity;
pub mod outbound;
pub mod quota;
pub mod url;
pub mod websocket;
pub mod websocket_queue;

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use deno_core::{Extension, OpDecl};
/// The isolate's blob: URL store (in its `OpState` as
/// `Arc<dyn BlobStoreTrait>`): emptied when a realm is replaced, so no URL
/// outlives the request that made it.
pub use deno_web::BlobStoreTrait;
/// The document location, in the `OpState` of an isolate that has one (the
/// WPT runner's): `URL.createObjectURL` names its origin in the URLs it
/// makes. A Worker has none, so its blob: URLs are `blob:null/…`.
pub use deno_web::Location;

deno_core::extension!(
  runtime,
  deps = [deno_webidl, deno_web, deno_crypto],
  ops = [
    console::op_log,
    clock::op_date_now,
    cache::op_cache_put_begin,
    cache::op_cache_put_chunk,
    cache::op_cache_put_abort,
    cache::op_cache_put_commit,
    cache::op_cache_match,
    cache::op_cache_delete,
    cache::op_cache_keys,
    cache::op_caches_open,
    cache::op_caches_has,
    cache::op_caches_delete,
    cache::op_caches_keys,
    crypto::op_runtime_aes_gcm,
    crypto::op_runtime_cshake,
    crypto::op_runtime_ecdsa_p384_sha1,
    http::op_respond,
    http::op_respond_stream,
    http::op_respond_error,
    http::op_request_disconnected,
    fetch::op_fetch,
    fetch::op_fetch_send,
    integrity::op_fetch_integrity_matches,
    runtime_htmlrewriter::op_html_rewriter_check_selector,
    runtime_htmlrewriter::op_html_rewriter_create,
    runtime_htmlrewriter::op_html_rewriter_next,
    runtime_htmlrewriter::op_html_rewriter_try_next,
    runtime_htmlrewriter::op_html_rewriter_output,
    runtime_htmlrewriter::op_html_rewriter_event,
    runtime_htmlrewriter::op_html_rewriter_error,
    runtime_htmlrewriter::op_html_rewriter_write,
    runtime_htmlrewriter::op_html_rewriter_end,
    runtime_htmlrewriter::op_html_rewriter_mutations,
    runtime_kv::ops::op_kv_get,
    runtime_kv::ops::op_kv_put,
    runtime_kv::ops::op_kv_put_stream,
    runtime_kv::ops::op_kv_delete,
    runtime_kv::ops::op_kv_list,
    websocket::op_respond_websocket,
    websocket::op_ws_send_text,
    websocket::op_ws_send_binary,
    websocket::op_ws_buffered,
    websocket::op_ws_close,
    websocket::op_ws_next_event,
    websocket::op_ws_event_text,
    websocket::op_ws_event_binary,
    websocket::op_ws_event_code,
    websocket::op_ws_protocol,
    websocket::op_ws_response_headers,
    websocket::op_ws_connect,
  ],
  esm_entry_point = "ext:runtime/99_main.js",
  esm = [
    dir "../js",
    "00_web.js",
    "03_date.js",
    "05_url.js",
    "06_urlpattern.js",
    "08_streams.js",
    "10_headers.js",
    "11_body.js",
    "12_formdata.js",
    "13_request.js",
    "14_response.js",
    "20_fetch_event.js",
    "21_scheduled_event.js",
    "25_wasm_streaming.js",
    "30_fetch.js",
    "40_crypto.js",
    "50_kv.js",
    "55_cache.js",
    "58_websocket.js",
    "60_html_rewriter.js",
    "90_global_scope.js",
    "99_main.js",
  ],
);

/// Every extension an isolate needs, in dependency order. The same list is
/// used to build the snapshot and to create isolates from it, as deno_core
/// requires.
pub fn extensions() -> Vec<Extension> {
  vec![
    deno_webidl::deno_webidl::init(),
    // With ada's URL parsing in place of the `url` crate's (url.rs), and
    // the isolate's own clock for performance.now() (clock.rs).
    replace_web_ops(deno_web::deno_web::init(
      Arc::new(deno_web::BlobStore::default()),
      None,
      false,
      Default::default(),
    )),
    deno_crypto::deno_crypto::init(None),
    runtime::init(),
  ]
}

/// deno_web's extension with some of its ops' implementations swapped for
/// ours (same names, signatures and contracts, so its JavaScript is used
/// unchanged). The table is rewritten once per process and borrowed by every
/// isolate, where an op middleware would copy every extension's op table
/// into each isolate. The snapshot is built with the same list
/// ([`extensions`]), so the op bindings it holds, which isolates use as they
/// are, are these.
fn replace_web_ops(mut web: Extension) -> Extension {
  static OPS: OnceLock<OpTable> = OnceLock::new();
  let ops = OPS.get_or_init(|| {
    let mut ops = web.ops.to_vec();
    let ours = url::replacement_ops().into_iter().chain([clock::op_now()]);
    for ours in ours {
      let theirs = ops.iter_mut().find(|op| op.name == ours.name);
      let theirs = theirs.unwrap_or_else(|| panic!("deno_web has no {}", ours.name));
      *theirs = theirs.with_implementation_from(&ours);
    }
    OpTable(ops)
  });
  web.ops = Cow::Borrowed(ops.0.as_slice());
  web
}

struct OpTable(Vec<OpDecl>);

// SAFETY: an `OpDecl` is not `Sync`/`Send` only because it holds raw
// pointers, to functions and to V8 fast-call signatures in static memory; the
// table is never written after it is built, like the static tables of the
// `extension!` macro that every thread shares.
unsafe impl Sync for OpTable {}
unsafe impl Send for OpTable {}
