//! The admin server (`--admin ADDR`), for operators and orchestrators:
//! `/metrics` (Prometheus text format), `/healthz` (the process is alive and
//! answers) and `/readyz` (every worker loaded and every server thread
//! listening; 503 while starting and once shutdown begins, so a load
//! balancer stops sending before the listeners close). It runs on a thread
//! of its own, apart from the workers' listeners: a scrape never waits for
//! an isolate, and a busy isolate never delays a probe.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::metrics::Metrics;

/// Binds `addr` now (so that a bad address is a start-up error) and serves
/// the admin endpoints on a new thread for the life of the process.
pub fn start(addr: SocketAddr, metrics: Arc<Metrics>) -> anyhow::Result<SocketAddr> {
  let listener = std::net::TcpListener::bind(addr)
    .map_err(|error| anyhow::anyhow!("--admin {addr}: cannot listen: {error}"))?;
  listener.set_nonblocking(true)?;
  let local = listener.local_addr()?;
  std::thread::Builder::new()
    .name("admin".into())
    .spawn(move || {
      let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
      rt.block_on(serve(listener, metrics));
    })?;
  tracing::info!("admin on http://{local}/ (/metrics, /healthz, /readyz)");
  Ok(local)
}

async fn serve(listener: std::net::TcpListener, metrics: Arc<Metrics>) {
  let listener = match tokio::net::TcpListener::from_std(listener) {
    Ok(listener) => listener,
    Err(error) => {
      tracing::error!("admin server: {error}");
      return;
    }
  };
  loop {
    let Ok((stream, _)) = listener.accept().await else {
      continue;
    };
    let metrics = metrics.clone();
    tokio::spawn(async move {
      let service = service_fn(move |request| {
        let metrics = metrics.clone();
        async move { Ok::<_, Infallible>(answer(&request, &metrics)) }
      });
      let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
    });
  }
}

fn answer<B>(request: &Request<B>, metrics: &Arc<Metrics>) -> Response<Full<Bytes>> {
  if request.method() != Method::GET && request.method() != Method::HEAD {
    return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
  }
  match request.uri().path() {
    "/metrics" => Response::builder()
      .header(
        header::CONTENT_TYPE,
        "text/plain; version=0.0.4; charset=utf-8",
      )
      .body(Full::new(Bytes::from(metrics.encode())))
      .expect("a valid response"),
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

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
  Response::builder()
    .status(status)
    .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
    .body(Full::new(Bytes::from_static(body.as_bytes())))
    .expect("a valid response")
}
