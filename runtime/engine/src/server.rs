//! The HTTP server: shared-nothing threads, one per core, each with its own
//! accept loop on a `SO_REUSEPORT` socket, its own isolate and its own
//! current-thread tokio runtime, so a request never crosses threads.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use runtime_ext::http::{BoxError, HandlerOutcome, ResponseBody};
use runtime_ext::quota::Quota;
use runtime_ext::websocket::{PeerLink, WebSocketUpgrade};
use tokio::sync::{oneshot, watch};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use crate::coarse_timer::{self, CoarseTimer};
use crate::config::{EngineConfig, WorkerConfig};
use crate::drain::Drain;
use crate::metrics::{Metrics, Outcome, ThreadMetrics};
use crate::pool::{IsolatePool, MemoryBudget};
use crate::routes::{RoutePattern, Router};
use crate::worker::{IncomingRequest, Worker, WorkerContext};

/// Protective limits applied to every request.
#[derive(Clone, Debug)]
pub struct Limits {
  pub max_body_bytes: u64,
  pub max_header_bytes: usize,
  /// A client that has not sent its whole request head by then is dropped.
  pub header_read_timeout: Duration,
  /// How long shutdown waits for requests in flight.
  pub shutdown_grace: Duration,
  /// How long a handler may take to produce its response (wall clock).
  pub response_timeout: Duration,
}

impl Default for Limits {
  fn default() -> Self {
    Self {
      max_body_bytes: 100 * 1024 * 1024,
      max_header_bytes: 64 * 1024,
      header_read_timeout: Duration::from_secs(10),
      shutdown_grace: Duration::from_secs(30),
      response_timeout: Duration::from_secs(30),
    }
  }
}

/// How often a thread refreshes its isolate gauges for `/metrics`.
const ISOLATE_GAUGE_INTERVAL: Duration = Duration::from_secs(1);

/// How often a thread measures its warm isolates against `max_memory_mb`.
const MEMORY_CHECK_INTERVAL: Duration = Duration::from_millis(100);

pub struct ServeOptions {
  pub config: EngineConfig,
  pub addr: SocketAddr,
  pub threads: usize,
  pub limits: Limits,
  /// `GET /__scheduled?cron=...` runs the routed worker's scheduled handler
  /// (`--test-scheduled`, for development).
  pub test_scheduled: bool,
  /// Where the admin server (`/metrics`, `/healthz`, `/readyz`) listens.
  pub admin: Option<SocketAddr>,
  /// One `access` log line per request.
  pub access_log: bool,
  /// `runtime dev`: watch and reload.
  pub dev: Option<DevOptions>,
  /// `--inspect` / `--inspect-brk`: the V8 inspector for debuggers.
  pub inspect: Option<InspectOptions>,
}

/// Where the inspector listens, and whether each worker's first isolate
/// waits for a debugger.
#[derive(Debug, Clone, Copy)]
pub struct InspectOptions {
  pub addr: SocketAddr,
  pub break_on_start: bool,
}

/// CPU limits under a debugger: time paused at a breakpoint costs none,
/// but stepping does, and a debugging session is no runaway.
const INSPECTED_CPU_MS: u64 = 24 * 3600 * 1000;

/// What `runtime dev` watches besides the workers' folders.
pub struct DevOptions {
  /// The config file it was started with, if any.
  pub config_file: Option<std::path::PathBuf>,
  /// Loads that file again when it changes.
  pub load_config: Option<crate::dev::ConfigLoader>,
}

/// Checks every worker before serving: its script loads, evaluates and has a
/// fetch handler. Nothing half-starts.
fn validate_workers(workers: &[WorkerConfig]) -> anyhow::Result<()> {
  let rt = tokio::runtime::Builder::new_current_thread()
    .enable_all()
    .build()?;
  let local = tokio::task::LocalSet::new();
  local.block_on(&rt, async {
    let ctx = WorkerContext::for_current_thread();
    for worker in workers {
      drop(Worker::load(worker, &ctx).await?);
    }
    Ok(())
  })
}

/// Serves the configured workers until SIGINT or SIGTERM, then finishes the
/// requests in flight and returns.
pub fn serve(mut options: ServeOptions) -> anyhow::Result<()> {
  let metrics = Metrics::new(
    options
      .config
      .workers
      .iter()
      .map(|w| (w.name.clone(), w.quotas.clone()))
      .collect(),
  );
  if let Some(addr) = options.admin {
    // First, so that /healthz answers while the workers are checked.
    crate::admin::start(addr, metrics.clone())?;
  }
  options.config.open_cache()?;
  crate::worker::anchor_read_only_heap()?;
  if options.dev.is_some() {
    for worker in &mut options.config.workers {
      worker.dev = Some(crate::dev::DevVersion::new());
    }
    // The start-up check, which also records each worker's first version.
    crate::dev::load_first_versions(&options.config.workers)?;
  } else {
    validate_workers(&options.config.workers)?;
  }
  if let Some(inspect) = options.inspect {
    start_inspector(&mut options, inspect)?;
  }
  let first = bind_reuseport(options.addr)?;
  let local = first.local_addr()?;
  let mut listeners = vec![first];
  for _ in 1..options.threads {
    listeners.push(bind_reuseport(local)?);
  }

  let shared = Arc::new(SharedConfig {
    router: Router::new(
      &options
        .config
        .workers
        .iter()
        .map(|w| {
          if w.routes.is_empty() && options.config.workers.len() == 1 {
            vec![RoutePattern::parse("*/*").expect("catch-all pattern")]
          } else {
            w.routes.clone()
          }
        })
        .collect::<Vec<_>>(),
    ),
    workers: options.config.workers.clone(),
    max_live_per_thread: options.config.max_isolates.div_ceil(options.threads),
    memory_per_thread: {
      let share = |mb: u64| (mb as usize).saturating_mul(1 << 20) / options.threads.max(1);
      MemoryBudget {
        total: options.config.max_memory_mb.map(share),
        heap: crate::config::HEAP_CAGE_BUDGET_MB.map(share),
      }
    },
    limits: options.limits,
    test_scheduled: options.test_scheduled,
    metrics: metrics.clone(),
    access_log: options.access_log,
    admin: options.admin.is_some(),
  });

  let (shutdown_tx, shutdown_rx) = watch::channel(false);
  let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
  let mut threads = Vec::new();
  for (i, listener) in listeners.into_iter().enumerate() {
    let shared = shared.clone();
    let ready = ready_tx.clone();
    let shutdown = shutdown_rx.clone();
    let thread = std::thread::Builder::new()
      .name(format!("isolate-{i}"))
      .spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
          .enable_all()
          .build()
          .expect("tokio runtime");
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, serve_thread(listener, shared, ready, shutdown, i));
      })?;
    threads.push(thread);
  }
  drop(ready_tx);

  for _ in 0..threads.len() {
    match ready_rx.recv() {
      Ok(Ok(())) => {}
      Ok(Err(error)) => {
        let _ = shutdown_tx.send(true);
        return Err(error);
      }
      Err(_) => {
        let _ = shutdown_tx.send(true);
        anyhow::bail!("a server thread died while starting");
      }
    }
  }
  if let Some(dev) = options.dev.take() {
    crate::dev::watch(
      options.config.workers.clone(),
      dev.config_file,
      dev.load_config,
    )?;
  }
  metrics.set_ready(true);
  println!("Listening on http://{local}/");
  use std::io::Write;
  let _ = std::io::stdout().flush();
  tracing::info!(
    "listening on http://{local}/ with {} threads, {} workers",
    threads.len(),
    options.config.workers.len()
  );

  let signals = tokio::runtime::Builder::new_current_thread()
    .enable_all()
    .build()?;
  signals.block_on(wait_for_shutdown_signal())?;
  tracing::info!("shutting down: finishing requests in flight");
  metrics.set_ready(false);
  let _ = shutdown_tx.send(true);
  for thread in threads {
    let _ = thread.join();
  }
  tracing::info!("stopped");
  Ok(())
}

/// Starts the inspector and makes every worker register its isolates with
/// it. One server thread, so that each worker has one isolate to debug,
/// and no CPU limits.
fn start_inspector(options: &mut ServeOptions, inspect: InspectOptions) -> anyhow::Result<()> {
  if options.threads > 1 {
    tracing::info!(
      "--inspect: serving on one thread, so that each worker has one isolate to debug"
    );
    options.threads = 1;
  }
  let workers: Vec<(String, String)> = options
    .config
    .workers
    .iter()
    .map(|w| {
      let url = deno_core::ModuleSpecifier::from_file_path(&w.main)
        .map_or_else(|()| w.main.display().to_string(), |u| u.to_string());
      (w.name.clone(), url)
    })
    .collect();
  let inspector =
    crate::inspector::Inspector::start(inspect.addr, &workers, inspect.break_on_start)?;
  for worker in &mut options.config.workers {
    worker.inspector = Some(inspector.clone());
    worker.limits.cpu_ms = INSPECTED_CPU_MS;
    worker.limits.startup_ms = INSPECTED_CPU_MS;
    worker.limits.scheduled_cpu_ms = INSPECTED_CPU_MS;
  }
  tracing::info!("--inspect: CPU limits are off while debugging");
  Ok(())
}

/// What every server thread shares, read-only.
struct SharedConfig {
  router: Router,
  workers: Vec<WorkerConfig>,
  max_live_per_thread: usize,
  memory_per_thread: MemoryBudget,
  limits: Limits,
  test_scheduled: bool,
  metrics: Arc<Metrics>,
  access_log: bool,
  /// An admin server reads the metrics (else the gauges are not refreshed
  /// and requests are not timed or counted: nothing would read them).
  admin: bool,
}

async fn wait_for_shutdown_signal() -> anyhow::Result<()> {
  use tokio::signal::unix::{signal, SignalKind};
  let mut term = signal(SignalKind::terminate())?;
  let mut int = signal(SignalKind::interrupt())?;
  tokio::select! {
    _ = term.recv() => {}
    _ = int.recv() => {}
  }
  Ok(())
}

fn bind_reuseport(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
  use socket2::{Domain, Socket, Type};
  let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
  socket.set_reuse_address(true)?;
  socket.set_reuse_port(true)?;
  socket.set_nonblocking(true)?;
  socket
    .bind(&addr.into())
    .with_context(|| format!("cannot listen on {addr}"))?;
  socket.listen(1024)?;
  Ok(socket.into())
}

/// Spawns hyper's HTTP/2 tasks on this thread: they hold `!Send` bodies.
#[derive(Clone, Copy)]
struct LocalExec;

impl<F: std::future::Future + 'static> hyper::rt::Executor<F> for LocalExec {
  fn execute(&self, future: F) {
    tokio::task::spawn_local(future);
  }
}

struct ThreadContext {
  pool: IsolatePool,
  shared: Arc<SharedConfig>,
  local_addr: SocketAddr,
  /// The thread's connections, WebSockets included, for graceful shutdown.
  connections: Drain,
  metrics: Arc<ThreadMetrics>,
}

async fn serve_thread(
  listener: std::net::TcpListener,
  shared: Arc<SharedConfig>,
  ready: std::sync::mpsc::Sender<anyhow::Result<()>>,
  mut shutdown: watch::Receiver<bool>,
  index: usize,
) {
  // Cron triggers fire once per process: the first thread runs them.
  let run_crons = index == 0;
  let metrics = shared.metrics.register_thread(index);
  let listener = match tokio::net::TcpListener::from_std(listener) {
    Ok(l) => l,
    Err(error) => {
      let _ = ready.send(Err(error.into()));
      return;
    }
  };
  let local_addr = listener.local_addr().expect("bound socket");
  let pool = IsolatePool::new(
    shared.workers.clone().into(),
    WorkerContext::for_current_thread(),
    shared.max_live_per_thread,
    shared.memory_per_thread,
  );
  if shared.workers.len() == 1 {
    pool.prewarm(0);
  } else if shared.workers.iter().any(|w| w.inspector.is_some()) {
    // Every worker a target a debugger can attach to from the start.
    for index in 0..shared.workers.len() {
      pool.prewarm(index);
    }
  }
  let _ = ready.send(Ok(()));
  let limits = shared.limits.clone();

  let ctx = Rc::new(ThreadContext {
    pool,
    shared,
    local_addr,
    connections: Drain::default(),
    metrics,
  });
  if ctx.shared.admin {
    // The gauges that need the isolates, refreshed on this thread.
    let ctx = ctx.clone();
    tokio::task::spawn_local(async move {
      let mut tick = tokio::time::interval(ISOLATE_GAUGE_INTERVAL);
      tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
      loop {
        tick.tick().await;
        let memory = ctx.pool.memory();
        ctx
          .metrics
          .set_isolates(ctx.pool.live_count(), memory.total, memory.heap_committed);
      }
    });
  }
  tokio::task::spawn_local(coarse_timer::sweep());
  let mut cron_tasks = Vec::new();
  if run_crons {
    for (index, worker) in ctx.shared.workers.iter().enumerate() {
      if worker.crons.is_empty() {
        continue;
      }
      let pool_ctx = ctx.clone();
      cron_tasks.push(tokio::task::spawn_local(crate::scheduled::run_triggers(
        worker.name.clone(),
        worker.crons.clone(),
        move |event| pool_ctx.pool.dispatch(index, event),
      )));
    }
  }
  let budget = ctx.shared.memory_per_thread;
  if budget.total.is_some() || budget.heap.is_some() {
    // Heaps grow between requests too (timers, waitUntil): measured on a
    // tick rather than on the request path.
    let ctx = ctx.clone();
    tokio::task::spawn_local(async move {
      let mut tick = tokio::time::interval(MEMORY_CHECK_INTERVAL);
      tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
      loop {
        tick.tick().await;
        ctx.pool.enforce_memory_budget();
      }
    });
  }
  let mut http1 = http1::Builder::new();
  http1
    .timer(CoarseTimer)
    .header_read_timeout(limits.header_read_timeout)
    .max_buf_size(limits.max_header_bytes.max(8192))
    // One flat buffer per response: a single small write is cheaper for the
    // kernel than a two-part writev.
    .writev(false)
    .keep_alive(true);
  let mut http2 = http2::Builder::new(LocalExec);
  http2
    .timer(TokioTimer::new())
    .max_header_list_size(limits.max_header_bytes as u32);
  let connections = &ctx.connections;

  loop {
    tokio::select! {
      accepted = listener.accept() => {
        let (stream, peer) = match accepted {
          Ok(a) => a,
          Err(error) => {
            tracing::warn!("accept failed: {error}");
            continue;
          }
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        let service = service_fn(move |request| handle(request, ctx.clone()));
        let (http1, http2) = (http1.clone(), http2.clone());
        let header_timeout = limits.header_read_timeout;
        let watcher = connections.watcher();
        tokio::task::spawn_local(async move {
          // A connection that has sent nothing yet is dropped when shutdown
          // begins (it is no hyper connection yet, to be shut down
          // gracefully, and would hold the drain for the header timeout).
          let detected = tokio::select! {
            detected = tokio::time::timeout(header_timeout, is_http2(&stream)) => detected,
            () = watcher.draining() => {
              tracing::debug!(%peer, "dropped at shutdown: no request yet");
              return;
            }
          };
          let result = match detected {
            Ok(Ok(false)) => {
              let connection = http1
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
              watcher.watch(connection, |c| c.graceful_shutdown()).await
            }
            Ok(Ok(true)) => {
              let connection = http2.serve_connection(TokioIo::new(stream), service);
              watcher.watch(connection, |c| c.graceful_shutdown()).await
            }
            Ok(Err(error)) => {
              tracing::debug!(%peer, "connection ended: {error}");
              return;
            }
            Err(_) => {
              tracing::debug!(%peer, "dropped: no request within the header timeout");
              return;
            }
          };
          if let Err(error) = result {
            tracing::debug!(%peer, "connection ended: {error}");
          }
        });
      }
      _ = shutdown.changed() => break,
    }
  }
  drop(listener);
  for task in cron_tasks {
    task.abort();
  }
  if tokio::time::timeout(limits.shutdown_grace, connections.drain())
    .await
    .is_err()
  {
    tracing::warn!("shutdown: connections still open after the grace period were dropped");
  }
  // Workers finish their waitUntil work once their channels are closed.
  ctx.pool.close_all();
  let _ = tokio::time::timeout(limits.shutdown_grace, async {
    while ctx.pool.running() > 0 {
      tokio::time::sleep(Duration::from_millis(5)).await;
    }
  })
  .await;
}

/// Whether a connection speaks HTTP/2 with prior knowledge: its first bytes
/// are the HTTP/2 preface (`PRI * HTTP/2.0...`), which no HTTP/1 request
/// starts with. Peeks, so the bytes stay for the protocol's own parser.
async fn is_http2(stream: &tokio::net::TcpStream) -> std::io::Result<bool> {
  const PREFIX: &[u8] = b"PRI ";
  let mut buf = [0u8; 4];
  loop {
    let n = stream.peek(&mut buf).await?;
    if n == 0 || buf[..n] != PREFIX[..n] {
      return Ok(false);
    }
    if n == PREFIX.len() {
      return Ok(true);
    }
    // Only part of the prefix is here yet: the readiness stays set while
    // those bytes wait, so wait a moment instead of peeking in a spin.
    tokio::time::sleep(Duration::from_millis(1)).await;
  }
}

/// `GET /__scheduled?cron=...` under `--test-scheduled` (as `wrangler dev
/// --test-scheduled`): runs the routed worker's scheduled handler now and
/// answers when the run is over.
async fn run_scheduled_for_test(
  ctx: &ThreadContext,
  worker: usize,
  query: Option<&str>,
) -> Response<ResponseBody> {
  let cron = query
    .into_iter()
    .flat_map(|q| q.split('&'))
    .find_map(|pair| pair.strip_prefix("cron="))
    .map(percent_decode)
    .unwrap_or_else(|| "* * * * *".to_string());
  let now_ms = std::time::SystemTime::now()
    .duration_since(std::time::UNIX_EPOCH)
    .map_or(0.0, |d| d.as_millis() as f64);
  let (event, outcome) = crate::scheduled::event_request(&cron, now_ms);
  ctx.pool.dispatch(worker, event);
  let name = &ctx.pool.worker(worker).name;
  match tokio::time::timeout(
    ctx.shared.limits.response_timeout,
    crate::scheduled::outcome_of(outcome),
  )
  .await
  {
    Ok(Ok(())) => {
      tracing::info!(worker = %name, %cron, "scheduled run ok (/__scheduled)");
      plain(StatusCode::OK, "Ran scheduled event")
    }
    Ok(Err(error)) => {
      tracing::error!(worker = %name, %cron, "scheduled run failed (/__scheduled): {error}");
      let mut response = plain(StatusCode::INTERNAL_SERVER_ERROR, "");
      *response.body_mut() =
        ResponseBody::full(Bytes::from(format!("Scheduled event failed: {error}\n")));
      response
    }
    Err(_) => plain(
      StatusCode::GATEWAY_TIMEOUT,
      "Gateway Timeout: the scheduled run did not end in time.\n",
    ),
  }
}

/// `%XX` escapes and `+` of a query value (a cron expression's spaces).
fn percent_decode(value: &str) -> String {
  let bytes = value.as_bytes();
  let mut out = Vec::with_capacity(bytes.len());
  let mut i = 0;
  while i < bytes.len() {
    match bytes[i] {
      b'+' => out.push(b' '),
      b'%' if i + 2 < bytes.len() => {
        let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
        match u8::from_str_radix(hex, 16) {
          Ok(b) => {
            out.push(b);
            i += 2;
          }
          Err(_) => out.push(b'%'),
        }
      }
      b => out.push(b),
    }
    i += 1;
  }
  String::from_utf8_lossy(&out).into_owned()
}

fn plain(status: StatusCode, text: &'static str) -> Response<ResponseBody> {
  let mut response = Response::new(ResponseBody::full(Bytes::from_static(text.as_bytes())));
  *response.status_mut() = status;
  response.headers_mut().insert(
    header::CONTENT_TYPE,
    HeaderValue::from_static("text/plain;charset=UTF-8"),
  );
  response
}

/// What `handle` found out about a request, for the metrics and the access
/// log: the worker it was routed to, and how it ended.
#[derive(Clone, Copy, Default)]
struct RequestNote {
  worker: Option<usize>,
  outcome: Outcome,
}

/// What the access log needs that `handle` consumes.
struct AccessLine {
  method: http::Method,
  path: String,
  /// CPU time of the handler's synchronous run.
  cpu: Duration,
}

/// The monotonic clock in ns: read directly, a few instructions cheaper
/// on the request path than `Instant`'s checked arithmetic.
fn monotonic_ns() -> u64 {
  crate::limits::clock_ns(libc::CLOCK_MONOTONIC).unwrap_or(0)
}

fn thread_cpu_ns() -> u64 {
  crate::limits::clock_ns(libc::CLOCK_THREAD_CPUTIME_ID).unwrap_or(0)
}

/// Counts a response in the thread's metrics (and logs it, with
/// `--access-log`). Called by `handle` itself rather than by a future
/// around it: hyper then moves one future per request, not two nested.
fn finish(
  ctx: &ThreadContext,
  start_ns: u64,
  note: RequestNote,
  access: Option<AccessLine>,
  response: &Response<ResponseBody>,
) {
  let wall = Duration::from_nanos(monotonic_ns().saturating_sub(start_ns));
  let status = response.status().as_u16();
  let RequestNote { worker, outcome } = note;
  if let Some(worker) = worker {
    ctx.metrics.record(worker, status, wall, outcome);
  }
  if let Some(access) = access {
    tracing::info!(
      target: "access",
      worker = %worker.map_or("-", |w| ctx.pool.worker(w).name.as_str()),
      method = %access.method,
      path = %access.path,
      status,
      wall_ms = format_args!("{:.3}", wall.as_secs_f64() * 1e3),
      cpu_us = access.cpu.as_micros() as u64,
      outcome = %outcome.as_str(),
    );
  }
}

async fn handle(
  mut request: Request<Incoming>,
  ctx: Rc<ThreadContext>,
) -> Result<Response<ResponseBody>, Infallible> {
  // Timed only when something reads the figures: the admin server's
  // /metrics, or the access log (without them, neither clock read is made).
  let timed = ctx.shared.admin || ctx.shared.access_log;
  let start_ns = if timed { monotonic_ns() } else { 0 };
  let mut note = RequestNote::default();
  let mut access = ctx.shared.access_log.then(|| AccessLine {
    method: request.method().clone(),
    path: request.uri().path().to_owned(),
    cpu: Duration::ZERO,
  });
  let response = 'serve: {
    // A WebSocket handshake: the handler decides; if it answers with a
    // WebSocket, the connection is taken over once the 101 is sent.
    let upgrade = websocket_key(&request).map(|key| (key, hyper::upgrade::on(&mut request)));
    let (parts, body) = request.into_parts();
    // A request without a body (hyper knows) declares no length to check.
    let declared_length = (!body.is_end_stream())
      .then(|| parts.headers.get(header::CONTENT_LENGTH))
      .flatten()
      .and_then(|v| v.to_str().ok())
      .and_then(|v| v.parse::<u64>().ok());
    if declared_length.is_some_and(|n| n > ctx.shared.limits.max_body_bytes) {
      tracing::warn!(
        "413: request body of {} bytes is over the {} byte limit",
        declared_length.unwrap_or_default(),
        ctx.shared.limits.max_body_bytes
      );
      break 'serve plain(StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large\n");
    }

    // hyper enforces the limit only while a head arrives in pieces: one that
    // came in whole, over the limit, is refused here.
    let header_bytes: usize = parts
      .headers
      .iter()
      .map(|(name, value)| name.as_str().len() + value.len() + 4)
      .sum();
    if header_bytes > ctx.shared.limits.max_header_bytes {
      tracing::warn!(
        "431: request headers of {header_bytes} bytes are over the {} byte limit",
        ctx.shared.limits.max_header_bytes
      );
      break 'serve plain(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "Request Header Fields Too Large\n",
      );
    }

    let host = request_host(&parts, ctx.local_addr);
    let Some(worker) = ctx.shared.router.route(&host, parts.uri.path()) else {
      break 'serve plain(StatusCode::NOT_FOUND, "No worker is routed here.\n");
    };
    note.worker = Some(worker);
    let worker_name = &ctx.pool.worker(worker).name;
    if ctx.shared.test_scheduled && parts.uri.path() == "/__scheduled" {
      break 'serve run_scheduled_for_test(&ctx, worker, parts.uri.query()).await;
    }
    // One tenant's burst may not take every connection slot: past its
    // `limits.concurrent_requests` a worker's requests get a 503 at once.
    let permit = match ctx.pool.worker(worker).quotas.acquire(Quota::Requests) {
      Ok(permit) => permit,
      Err(reason) => {
        tracing::warn!(worker = %worker_name, "503: {reason}");
        break 'serve plain(
          StatusCode::SERVICE_UNAVAILABLE,
          "Service Unavailable: the worker has too many requests in flight.\n",
        );
      }
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut url = String::with_capacity(7 + host.len() + path.len());
    url.push_str("http://");
    url.push_str(&host);
    url.push_str(path);
    let too_large = (!body.is_end_stream()).then(|| Arc::new(AtomicBool::new(false)));
    let body = too_large.as_ref().map(|exceeded| {
      LimitedBody {
        inner: body,
        remaining: ctx.shared.limits.max_body_bytes,
        exceeded: exceeded.clone(),
      }
      .boxed_unsync()
    });
    let (respond, mut response) = oneshot::channel();
    let incoming = IncomingRequest {
      method: parts.method,
      url,
      headers: parts.headers,
      body,
      respond,
      scheduled: None,
    };
    // With the access log, the CPU time of the handler's synchronous run.
    let cpu_before = access.is_some().then(thread_cpu_ns);
    ctx.pool.dispatch(worker, incoming);
    if let (Some(before), Some(access)) = (cpu_before, access.as_mut()) {
      access.cpu = Duration::from_nanos(thread_cpu_ns().saturating_sub(before));
    }
    // Most handlers have answered by the time dispatch returns: only a
    // response still to come needs the wall-clock timer.
    let outcome = match response.try_recv() {
      Ok(outcome) => Ok(outcome),
      Err(oneshot::error::TryRecvError::Closed) => Err(()),
      Err(oneshot::error::TryRecvError::Empty) => {
        match tokio::time::timeout(ctx.shared.limits.response_timeout, response).await {
          Ok(outcome) => outcome.map_err(drop),
          Err(_) => {
            note.outcome = Outcome::Limit;
            tracing::error!(
              worker = %worker_name,
              "504: no response within the {} s wall-clock limit",
              ctx.shared.limits.response_timeout.as_secs()
            );
            break 'serve plain(
              StatusCode::GATEWAY_TIMEOUT,
              "Gateway Timeout: the worker did not respond in time.\n",
            );
          }
        }
      }
    };
    if too_large.is_some_and(|t| t.load(Ordering::Relaxed)) {
      tracing::warn!(
        worker = %worker_name,
        "413: request body is over the {} byte limit",
        ctx.shared.limits.max_body_bytes
      );
      break 'serve plain(StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large\n");
    }
    match outcome {
      Ok(HandlerOutcome::Response(mut response)) => {
        let Some(link) = response
          .extensions()
          .get::<WebSocketUpgrade>()
          .and_then(WebSocketUpgrade::take)
        else {
          // A tenant's bodies waiting for slow clients are bounded too.
          let quotas = &ctx.pool.worker(worker).quotas;
          if let Err(reason) = response.body_mut().count_against(quotas) {
            tracing::warn!(worker = %worker_name, "503: {reason}");
            break 'serve plain(
              StatusCode::SERVICE_UNAVAILABLE,
              "Service Unavailable: the worker's responses waiting for slow clients hold too much memory.\n",
            );
          }
          // The request is in flight until its body has gone out.
          response.body_mut().hold(permit);
          break 'serve response;
        };
        match upgrade {
          Some((key, on_upgrade)) => accept_websocket(&ctx, response, &key, on_upgrade, link),
          None => {
            tracing::error!(
              worker = %worker_name,
              "500: the handler answered with a WebSocket (status 101), but the request is not a WebSocket upgrade"
            );
            plain(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n")
          }
        }
      }
      Ok(HandlerOutcome::Error(error)) => {
        note.outcome = Outcome::Exception;
        tracing::error!(worker = %worker_name, "500: {error}");
        plain(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n")
      }
      Ok(HandlerOutcome::Unavailable(reason)) => {
        note.outcome = Outcome::Limit;
        tracing::error!(worker = %worker_name, "503: {reason}");
        plain(
          StatusCode::SERVICE_UNAVAILABLE,
          "Service Unavailable: the worker was stopped by a limit.\n",
        )
      }
      Err(_) => {
        tracing::error!(worker = %worker_name, "500: the worker stopped before responding");
        plain(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n")
      }
    }
  };
  if timed {
    finish(&ctx, start_ns, note, access, &response);
  }
  Ok(response)
}

/// The `Sec-WebSocket-Key` of an HTTP/1.1 WebSocket handshake (RFC 6455
/// 4.2.1), if the request is one.
fn websocket_key(request: &Request<Incoming>) -> Option<String> {
  let headers = request.headers();
  let has_token = |name: header::HeaderName, token: &str| {
    headers.get_all(name).iter().any(|value| {
      value
        .to_str()
        .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
  };
  (request.method() == http::Method::GET
    && request.version() == http::Version::HTTP_11
    && has_token(header::UPGRADE, "websocket")
    && has_token(header::CONNECTION, "upgrade")
    && headers
      .get(header::SEC_WEBSOCKET_VERSION)
      .is_some_and(|v| v == "13"))
  .then(|| {
    headers
      .get(header::SEC_WEBSOCKET_KEY)?
      .to_str()
      .ok()
      .map(str::to_string)
  })
  .flatten()
}

/// Completes the handshake the handler accepted: the 101's headers, and a
/// task that pumps the upgraded connection once hyper hands it over. The
/// pump counts as a connection of the thread: shutdown closes it (1001).
fn accept_websocket(
  ctx: &ThreadContext,
  mut response: Response<ResponseBody>,
  key: &str,
  on_upgrade: hyper::upgrade::OnUpgrade,
  link: PeerLink,
) -> Response<ResponseBody> {
  let headers = response.headers_mut();
  headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
  headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
  if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
  }
  let watcher = ctx.connections.watcher();
  tokio::task::spawn_local(async move {
    let upgraded = match on_upgrade.await {
      Ok(upgraded) => upgraded,
      Err(error) => {
        tracing::debug!(worker = %link.worker, "WebSocket upgrade failed: {error}");
        return;
      }
    };
    let config = link.limits.protocol_config();
    let ws =
      WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
    runtime_ext::websocket::pump(ws, link, watcher.draining()).await;
  });
  response
}

/// The host a request was sent to: the authority (HTTP/2) or the Host header
/// (HTTP/1), falling back to the address it came in on.
fn request_host(parts: &http::request::Parts, local: SocketAddr) -> std::borrow::Cow<'_, str> {
  if let Some(authority) = parts.uri.authority() {
    return authority.as_str().into();
  }
  // Found by walking the few headers a request has (most clients send Host
  // first) rather than by `get`, which hashes the name.
  match parts
    .headers
    .iter()
    .find(|(name, _)| *name == header::HOST)
    .and_then(|(_, h)| h.to_str().ok())
  {
    Some(host) => host.into(),
    None => local.to_string().into(),
  }
}

/// A request body that fails once it grows past the limit, and says so.
struct LimitedBody {
  inner: Incoming,
  remaining: u64,
  exceeded: Arc<AtomicBool>,
}

impl Body for LimitedBody {
  type Data = Bytes;
  type Error = BoxError;

  fn poll_frame(
    mut self: Pin<&mut Self>,
    cx: &mut Context<'_>,
  ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    let frame = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
    Poll::Ready(match frame {
      Some(Ok(frame)) => {
        let len = frame.data_ref().map_or(0, |d| d.len() as u64);
        if len > self.remaining {
          self.exceeded.store(true, Ordering::Relaxed);
          Some(Err("request body too large".into()))
        } else {
          self.remaining -= len;
          Some(Ok(frame))
        }
      }
      Some(Err(error)) => Some(Err(error.into())),
      None => None,
    })
  }

  fn is_end_stream(&self) -> bool {
    self.inner.is_end_stream()
  }

  fn size_hint(&self) -> SizeHint {
    self.inner.size_hint()
  }
}
