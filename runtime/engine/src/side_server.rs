//! A small HTTP/1.1 server on a thread of its own, apart from the workers'
//! listeners, for the admin endpoints and the inspector: what it answers
//! never waits for an isolate, and a busy (or paused) isolate never delays
//! it.

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{header, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// Binds `addr` now, so that a bad address is a start-up error naming
/// `flag`.
pub fn bind(flag: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
  let listener = TcpListener::bind(addr)
    .map_err(|error| anyhow::anyhow!("{flag} {addr}: cannot listen: {error}"))?;
  listener.set_nonblocking(true)?;
  Ok(listener)
}

/// Serves `listener` on a new thread named `name` for the life of the
/// process, each request answered by `answer` (connections may be upgraded).
pub fn spawn<F>(name: &str, listener: TcpListener, answer: F) -> anyhow::Result<()>
where
  F: Fn(Request<Incoming>) -> Response<Full<Bytes>> + Send + Sync + 'static,
{
  let answer = Arc::new(answer);
  let name = name.to_string();
  std::thread::Builder::new()
    .name(name.clone())
    .spawn(move || {
      let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
      rt.block_on(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
          Ok(listener) => listener,
          Err(error) => {
            tracing::error!("{name} server: {error}");
            return;
          }
        };
        loop {
          let Ok((stream, _)) = listener.accept().await else {
            continue;
          };
          let answer = answer.clone();
          tokio::spawn(async move {
            let service = service_fn(move |request| {
              let response = answer(request);
              async move { Ok::<_, Infallible>(response) }
            });
            let _ = http1::Builder::new()
              .serve_connection(TokioIo::new(stream), service)
              .with_upgrades()
              .await;
          });
        }
      });
    })?;
  Ok(())
}

/// A response of `content_type` with `body`.
pub fn respond(
  status: StatusCode,
  content_type: &'static str,
  body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
  Response::builder()
    .status(status)
    .header(header::CONTENT_TYPE, content_type)
    .body(Full::new(body.into()))
    .expect("a valid response")
}

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
  respond(status, "text/plain; charset=utf-8", body)
}
