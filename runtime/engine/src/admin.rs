//! The admin server (`--admin ADDR`), for operators and orchestrators:
//! `/metrics` (Prometheus text format), `/healthz` (the process is alive and
//! answers) and `/readyz` (every worker loaded and every server thread
//! listening; 503 while starting and once shutdown begins, so a load
//! balancer stops sending before the listeners close). It runs on a thread
//! of its own, apart from the workers' listeners: a scrape never waits for
//! an isolate, and a busy isolate never delays a probe.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};

use crate::metrics::Metrics;
use crate::side_server::{respond, text};

/// Binds `addr` now (so that a bad address is a start-up error) and serves
/// the admin endpoints on a new thread for the life of the process.
pub fn start(addr: SocketAddr, metrics: Arc<Metrics>) -> anyhow::Result<SocketAddr> {
  let listener = crate::side_server::bind("--admin", addr)?;
  let local = listener.local_addr()?;
  crate::side_server::spawn("admin", listener, move |request| answer(&request, &metrics))?;
  tracing::info!("admin on http://{local}/ (/metrics, /healthz, /readyz)");
  Ok(local)
}

fn answer<B>(request: &Request<B>, metrics: &Arc<Metrics>) -> Response<Full<Bytes>> {
  if request.method() != Method::GET && request.method() != Method::HEAD {
    return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
  }
  match request.uri().path() {
    "/metrics" => respond(
      StatusCode::OK,
      "text/plain; version=0.0.4; charset=utf-8",
      metrics.encode(),
    ),
    "/healthz" => text(StatusCode::OK, "ok\n"),
    "/readyz" if metrics.is_ready() => text(StatusCode::OK, "ready\n"),
    "/readyz" => text(
      StatusCode::SERVICE_UNAVAILABLE,
      "not ready: starting or shutting down\n",
    ),
    _ => text(
      StatusCode::NOT_FOUND,
      "not found: /metrics, /healthz and /readyz are served here\n",
    ),
  }
}
