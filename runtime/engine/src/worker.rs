//! A worker: one user script loaded into one isolate created from the
//! startup snapshot, and the loop that feeds it requests while driving its
//! event loop. Many requests run concurrently inside one worker, and many
//! workers live on one thread: an isolate is entered while its worker runs
//! and left entered until another one is needed (see [`IsolateRuntime`]).

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use deno_core::{v8, JsRuntime, ModuleSpecifier, PollEventLoopOptions, RuntimeOptions};
use http::HeaderMap;
use runtime_ext::cache::CacheScope;
use runtime_ext::clock::IsolateClock;
use runtime_ext::console::ScriptName;
use runtime_ext::http::{HandlerOutcome, RequestBody, RequestBodyResource, SharedResponses};
use runtime_ext::websocket::WebSockets;
use runtime_kv::KvBindings;
use tokio::sync::{mpsc, oneshot};

use crate::config::WorkerConfig;
use crate::limits::{ArrayBufferBudget, CpuSlot};
use crate::loader::{ModuleFiles, ScriptLoader};

/// A request on its way into a worker.
pub struct IncomingRequest {
  pub method: http::Method,
  /// Absolute URL, as `request.url` shows it.
  pub url: String,
  pub headers: HeaderMap,
  pub body: Option<RequestBody>,
  /// Where the response goes. The server drops the receiver when the
  /// client goes away first, which aborts `request.signal`.
  pub respond: oneshot::Sender<HandlerOutcome>,
  /// Set for a cron trigger's event: the worker's `scheduled` handler runs
  /// instead of its fetch handler, and its outcome is the response.
  pub scheduled: Option<ScheduledEvent>,
}

/// What a `scheduled` handler is told: `controller.cron` and
/// `controller.scheduledTime` (ms since the epoch).
#[derive(Debug, Clone)]
pub struct ScheduledEvent {
  pub cron: String,
  pub scheduled_time_ms: f64,
}

/// Why a response could not come: nothing left in the isolate can produce it.
pub const NEVER_RESPONDS: &str = "The script will never generate a response: its fetch handler's promise did not settle and nothing it waits on is pending.";

/// A `JsRuntime` whose isolate is entered while it is used (and left entered
/// until another isolate is needed: see `Entered`), so that many can live
/// on one thread and be dropped in any order (rusty_v8 enters an isolate on
/// creation and asserts on drop that it is the current one).
pub struct IsolateRuntime {
  runtime: std::mem::ManuallyDrop<JsRuntime>,
}

impl IsolateRuntime {
  /// Creates the runtime, runs `setup` while its isolate is entered, then
  /// exits it.
  fn new<T>(
    options: RuntimeOptions,
    setup: impl FnOnce(&mut JsRuntime) -> anyhow::Result<T>,
  ) -> anyhow::Result<(Self, T)> {
    // Created (and so entered) with no other isolate entered under it.
    exit_left_entered();
    let mut runtime = JsRuntime::try_new(options)?;
    let result = setup(&mut runtime);
    // SAFETY: creation entered this isolate; it is the current one.
    unsafe { runtime.v8_isolate().exit() };
    let this = Self {
      runtime: std::mem::ManuallyDrop::new(runtime),
    };
    Ok((this, result?))
  }

  fn isolate(&mut self) -> RawIsolate {
    RawIsolate::of(self.runtime.v8_isolate())
  }

  /// Runs `f` with the isolate entered.
  pub fn with<R>(&mut self, f: impl FnOnce(&mut JsRuntime) -> R) -> R {
    let _entered = Entered::new(self.isolate());
    f(&mut self.runtime)
  }
}

impl Drop for IsolateRuntime {
  fn drop(&mut self) {
    let isolate = self.isolate();
    // SAFETY: the isolate is alive. Its drop requires it to be the current
    // isolate, and exits it once: the entry it was left with (see
    // `Entered`), or a new one on top of whichever isolate is left entered,
    // which becomes the current one again afterwards.
    unsafe {
      if LEFT_ENTERED.get() == isolate {
        LEFT_ENTERED.set(RawIsolate::NONE);
      } else {
        isolate.enter();
      }
      std::mem::ManuallyDrop::drop(&mut self.runtime);
    }
  }
}

thread_local! {
  /// The isolate the last `Entered` guard of this thread left entered
  /// (null if none): most requests go to the same isolate as the one
  /// before, and V8's `Isolate::Enter` of an isolate that is not current
  /// costs a per-thread-data lookup under a lock; re-entering the current
  /// one is a counter.
  static LEFT_ENTERED: Cell<RawIsolate> = const { Cell::new(RawIsolate::NONE) };
  /// `Entered` guards alive on this thread.
  static ENTERED_DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Exits the isolate a guard left entered, if any.
fn exit_left_entered() {
  let left = LEFT_ENTERED.replace(RawIsolate::NONE);
  if left != RawIsolate::NONE {
    // SAFETY: alive (dropping it clears `LEFT_ENTERED`) and, with no guard
    // alive, the current isolate.
    unsafe { left.exit() };
  }
}

/// An isolate by its V8 address, which stays put while the `JsRuntime`
/// that owns it moves (the address of rusty_v8's `Isolate` wrapper does
/// not).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct RawIsolate(*mut std::ffi::c_void);

impl RawIsolate {
  const NONE: RawIsolate = RawIsolate(std::ptr::null_mut());

  fn of(isolate: &v8::Isolate) -> Self {
    // SAFETY: only the pointer is read; `UnsafeRawIsolatePtr` is a
    // transparent wrapper of it.
    Self(unsafe {
      std::mem::transmute::<v8::UnsafeRawIsolatePtr, *mut std::ffi::c_void>(
        isolate.as_raw_isolate_ptr(),
      )
    })
  }

  /// # Safety
  /// The isolate is alive, and this thread may enter it.
  unsafe fn enter(self) {
    unsafe { self.with(|isolate| isolate.enter()) }
  }

  /// # Safety
  /// The isolate is alive and the thread's current one.
  unsafe fn exit(self) {
    unsafe { self.with(|isolate| isolate.exit()) }
  }

  unsafe fn with(self, f: impl FnOnce(&v8::Isolate)) {
    // SAFETY (caller): alive. The wrapper made here owns nothing.
    let isolate = unsafe {
      v8::Isolate::from_raw_isolate_ptr(std::mem::transmute::<
        *mut std::ffi::c_void,
        v8::UnsafeRawIsolatePtr,
      >(self.0))
    };
    f(&isolate);
  }
}

/// Makes an isolate the thread's current one for the guard's lifetime.
/// When the outermost guard ends, the isolate stays entered (in
/// `LEFT_ENTERED`) until another isolate is needed or it is dropped, so
/// that consecutive uses of one isolate do not exit and re-enter it.
/// Isolates are entered strictly last-in first-out: one left entered is
/// exited before another is entered (with no guard alive, nothing is
/// entered above it).
struct Entered(RawIsolate);

impl Entered {
  fn new(isolate: RawIsolate) -> Self {
    let left = LEFT_ENTERED.get();
    // SAFETY (enter): callers pass the isolate of a live runtime on this
    // thread.
    if left == isolate {
      // The guard takes over the entry it was left with.
      LEFT_ENTERED.set(RawIsolate::NONE);
    } else {
      exit_left_entered();
      unsafe { isolate.enter() };
    }
    ENTERED_DEPTH.set(ENTERED_DEPTH.get() + 1);
    Self(isolate)
  }
}

impl Drop for Entered {
  fn drop(&mut self) {
    let depth = ENTERED_DEPTH.get() - 1;
    ENTERED_DEPTH.set(depth);
    if depth == 0 && LEFT_ENTERED.get() == RawIsolate::NONE {
      LEFT_ENTERED.set(self.0);
    } else {
      // SAFETY: entered in `new`, on this thread, and still alive.
      unsafe { self.0.exit() };
    }
  }
}

/// Polls `inner` with `isolate` entered.
struct InIsolate<F> {
  isolate: RawIsolate,
  inner: Pin<Box<F>>,
}

impl<F: Future> Future for InIsolate<F> {
  type Output = F::Output;

  fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
    let _entered = Entered::new(self.isolate);
    self.inner.as_mut().poll(cx)
  }
}

/// Everything a worker's isolate needs from its thread.
#[derive(Clone)]
pub struct WorkerContext {
  pub cpu: Arc<CpuSlot>,
}

impl WorkerContext {
  pub fn for_current_thread() -> Self {
    Self {
      cpu: CpuSlot::for_current_thread(),
    }
  }
}

/// Set when a limit stopped the isolate: it is never used again.
#[derive(Default)]
struct Poison(Cell<Option<String>>);

impl Poison {
  fn is_set(&self) -> bool {
    let reason = self.0.take();
    let set = reason.is_some();
    self.0.set(reason);
    set
  }
}

pub struct Worker {
  // Dropped before `rt` (see `Drop`), with the isolate entered.
  handles: Option<RequestHandles>,
  rt: IsolateRuntime,
  /// The isolate's module loader (the runtime's), set up for this worker.
  loader: Rc<ScriptLoader>,
  name: String,
  cpu: Arc<CpuSlot>,
  cpu_budget: Duration,
  /// What start-up left of `limits.startup_ms`, which the first event may
  /// use on top of `cpu_budget`: an app's lazy initialization on its first
  /// request (compiling what the top level did not run, a schema checked on
  /// first use) is start-up work deferred.
  startup_credit: Duration,
  /// `limits.scheduled_cpu_ms`, for scheduled events.
  scheduled_budget: Duration,
  /// Scheduled events whose outcome has not come yet (their response ids).
  scheduled_in_flight: Vec<u32>,
  isolate_handle: v8::IsolateHandle,
  poison: Rc<Poison>,
  array_buffers: Arc<ArrayBufferBudget>,
  memory_mb: u64,
  /// The isolate's response slots (also in its `OpState`, for the ops).
  responses: SharedResponses,
  /// Its open WebSockets (also in its `OpState`).
  sockets: Rc<WebSockets>,
  /// Its frozen clock when coarse time is on (also in its `OpState`, for the
  /// clock ops): moved on before each turn.
  clock: Option<Rc<IsolateClock>>,
  /// What its loader recorded (see [`Worker::take_loaded_files`]).
  loaded_files: Option<ModuleFiles>,
}

impl Drop for Worker {
  fn drop(&mut self) {
    let _entered = Entered::new(self.rt.isolate());
    self.handles.take();
    self.responses.borrow_mut().forget_content_type();
  }
}

thread_local! {
  /// Where a request's header lines are packed before they become one V8
  /// string: one buffer per thread, reused, so that packing is one copy per
  /// name and value and no allocation.
  static HEADER_LINES: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The common methods, whose strings a worker makes once, not per request.
const COMMON_METHODS: [http::Method; 7] = [
  http::Method::GET,
  http::Method::HEAD,
  http::Method::POST,
  http::Method::PUT,
  http::Method::DELETE,
  http::Method::PATCH,
  http::Method::OPTIONS,
];

/// Memory one isolate holds, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct IsolateMemory {
  /// Used V8 heap plus ArrayBuffers (what `max_memory_mb` counts).
  pub total: usize,
  /// V8 heap pages committed (what it takes of the pointer cage).
  pub heap_committed: usize,
}

/// What every request needs from the isolate, kept rather than made anew:
/// the script's dispatch function, its context, and the strings of the
/// common methods.
struct RequestHandles {
  dispatch: v8::Global<v8::Function>,
  context: v8::Global<v8::Context>,
  methods: [v8::Global<v8::String>; COMMON_METHODS.len()],
}

impl RequestHandles {
  fn new(runtime: &mut JsRuntime, dispatch: v8::Global<v8::Function>) -> Self {
    let context = runtime.main_context();
    deno_core::scope!(scope, runtime);
    let internalized = |name: &str| {
      let name =
        v8::String::new_from_one_byte(scope, name.as_bytes(), v8::NewStringType::Internalized)
          .unwrap();
      v8::Global::new(scope, name)
    };
    let methods = COMMON_METHODS.map(|method| internalized(method.as_str()));
    Self {
      dispatch,
      context,
      methods,
    }
  }
}

impl Worker {
  /// Creates an isolate from the snapshot, loads the worker's script and its
  /// imports as ES modules, evaluates them, and finds the fetch handler.
  pub async fn load(config: &WorkerConfig, ctx: &WorkerContext) -> anyhow::Result<Worker> {
    crate::metrics::count(crate::metrics::Event::IsolateCreated);
    let spare = match take_spare(config.limits.memory_mb) {
      Some(spare) => spare,
      None => {
        crate::metrics::count(crate::metrics::Event::SpareMiss);
        SpareIsolate::create(config.limits.memory_mb)?
      }
    };
    let SpareIsolate {
      mut rt,
      loader,
      entry,
      handle,
      array_buffers,
    } = spare;
    let responses = rt.with(shared_responses);
    let mut worker = Worker {
      handles: None,
      rt,
      loader,
      name: config.name.clone(),
      cpu: ctx.cpu.clone(),
      cpu_budget: Duration::from_millis(config.limits.cpu_ms),
      startup_credit: Duration::ZERO,
      scheduled_budget: Duration::from_millis(config.limits.scheduled_cpu_ms),
      scheduled_in_flight: Vec::new(),
      isolate_handle: handle,
      poison: Rc::default(),
      array_buffers,
      memory_mb: config.limits.memory_mb,
      responses,
      sockets: Rc::default(),
      clock: None,
      loaded_files: None,
    };
    worker.load_script(entry, config).await?;
    Ok(worker)
  }

  /// `isolation = "request"`: this worker's isolate, its request and
  /// `waitUntil` work done, with a fresh realm in place of the one that
  /// served (a new context from the snapshot: see patches/README.md), for the
  /// next request to load the script into at a fraction of an isolate's
  /// cost. Its resources (bodies, streams, sockets) are closed and its blob:
  /// URLs revoked first; nothing of the old context is reachable afterwards.
  /// An error (an async op still pending, a heap past REALM_REUSE_HEAP)
  /// means the isolate is not reused.
  pub fn into_fresh_realm(mut self) -> anyhow::Result<FreshRealm> {
    let entry = self.rt.with(|runtime| {
      // The realms an isolate replaced stay in its heap until V8's next
      // full collection (forcing one costs more than a new isolate: a
      // memory-reducing collection also flushes the bytecode every realm
      // then compiles again), and some APIs keep a replaced realm alive
      // longer (crypto.subtle.digest does: README.md, "A sandbox per request"). An isolate
      // whose heap has grown past REALM_REUSE_HEAP is dropped instead.
      let used = runtime.v8_isolate().get_heap_statistics().used_heap_size();
      if used > REALM_REUSE_HEAP {
        return Err(anyhow!(
          "its heap holds {} MiB of realms (more than {} MiB)",
          used >> 20,
          REALM_REUSE_HEAP >> 20
        ));
      }
      // Globals of the old context go while it is entered.
      drop(self.handles.take());
      self.responses.borrow_mut().forget_content_type();
      {
        let state = runtime.op_state();
        let mut state = state.borrow_mut();
        let rids: Vec<_> = state.resource_table.names().map(|(rid, _)| rid).collect();
        for rid in rids {
          if let Ok(resource) = state.resource_table.take_any(rid) {
            resource.close();
          }
        }
        if let Some(blobs) = state.try_borrow::<Arc<dyn runtime_ext::BlobStoreTrait>>() {
          blobs.clear();
        }
      }
      runtime.reset_main_realm()?;
      let [dispatch, set_handler, create_kv, wire_console] = prepare(runtime, "")?;
      anyhow::Ok(EntryPoints {
        dispatch,
        set_handler,
        create_kv,
        wire_console,
      })
    })?;
    crate::metrics::count(crate::metrics::Event::RealmReset);
    self.responses = self.rt.with(shared_responses);
    self.poison = Rc::default();
    self.scheduled_in_flight.clear();
    Ok(FreshRealm {
      worker: self,
      entry,
    })
  }

  /// Loads the worker's script into the isolate's current realm (fresh from
  /// the snapshot, `entry` its entry points) under the start-up budget, and
  /// keeps what its requests need.
  async fn load_script(&mut self, entry: EntryPoints, config: &WorkerConfig) -> anyhow::Result<()> {
    let EntryPoints {
      dispatch,
      set_handler,
      create_kv,
      wire_console,
    } = entry;
    let script = &config.main;
    let root = script.parent().map(Path::to_path_buf).unwrap_or_default();
    let poison = self.poison.clone();
    let isolate_handle = self.isolate_handle.clone();
    let loader = self.loader.clone();
    let rt = &mut self.rt;
    loader.unseal();
    loader.set_root(root);
    // Under `runtime dev`, the serving version's files, or (its first load)
    // the disk, recorded.
    if let Some(dev) = &config.dev {
      match dev.files() {
        Some(files) => loader.read_from(files),
        None => loader.record(),
      }
    }
    let version_loader = loader.clone();
    let sockets = Rc::new(WebSockets::default());
    let clock = config.coarse_time.then(IsolateClock::new);
    rt.with(|runtime| {
      {
        let state = runtime.op_state();
        let mut state = state.borrow_mut();
        state.put(ScriptName(config.name.clone()));
        // The namespaces bound to this worker, and only those: its KV
        // bindings index this list.
        state.put(KvBindings(
          config.kv.iter().map(|(_, ns)| ns.clone()).collect(),
        ));
        state.put(config.outbound.clone());
        state.put(config.quotas.clone());
        state.put(config.limits.websocket);
        state.put(sockets.clone());
        if let Some(clock) = &clock {
          state.put(clock.clone());
        }
        state.put(
          config
            .cache
            .clone()
            .unwrap_or_else(|| CacheScope::process_default(&config.name)),
        );
      }
      let on_oom = isolate_handle.clone();
      let poison = poison.clone();
      let limit_mb = config.limits.memory_mb;
      runtime.add_near_heap_limit_callback(move |current, _initial| {
        // Stop the script and give V8 room to unwind; the isolate is
        // discarded afterwards.
        poison
          .0
          .set(Some(format!("exceeded its memory limit of {limit_mb} MiB")));
        on_oom.terminate_execution();
        current * 2
      });
    });

    // Under `--inspect`, before the script loads, so that the debugger
    // learns of every module it parses.
    let wait_for_debugger = match &config.inspector {
      Some(inspector) => rt.with(|runtime| {
        runtime.maybe_init_inspector();
        call_entry_point(runtime, &wire_console);
        inspector.register(&config.name, &runtime.inspector())
      }),
      None => false,
    };
    let specifier = ModuleSpecifier::from_file_path(script)
      .map_err(|_| anyhow!("invalid script path {}", script.display()))?;
    let bindings = rt.with(|runtime| binding_values(runtime, config, &create_kv))?;
    let bindings = &bindings;
    let subrequests = config.limits.subrequests;
    let isolate = rt.isolate();
    let cpu = self.cpu.clone();
    let startup_budget = Duration::from_millis(config.limits.startup_ms);
    let poison_at_load = poison.clone();
    let clock_at_load = clock.clone();
    let runtime = &mut *rt.runtime;
    let startup_spent = InIsolate {
      isolate,
      inner: Box::pin(async move {
        let module_id = runtime.load_main_es_module(&specifier).await?;
        if wait_for_debugger {
          // `--inspect-brk`: blocks this thread until a debugger attaches
          // and resumes, then pauses on the top level's first statement.
          runtime
            .inspector()
            .wait_for_session_and_break_on_next_statement();
        }
        // Service-worker syntax sees its bindings as globals from the start,
        // module syntax never. Which one a script uses is certain only once
        // it has been evaluated (reading a module's exports earlier loses its
        // evaluation error), so guess from the source now and settle after.
        let guessed_module = looks_like_module_syntax(script);
        if !guessed_module {
          define_globals(runtime, bindings, true);
        }
        let spent = evaluate_with_limits(
          runtime,
          module_id,
          &cpu,
          startup_budget,
          &poison_at_load,
          clock_at_load.as_deref(),
        )
          .await
          .with_context(|| format!("{}: top-level code", script.display()))?;
        loader.seal();
        let namespace = runtime.get_module_namespace(module_id)?;
        let module_syntax = exports_default(runtime, &namespace);
        if module_syntax != guessed_module {
          define_globals(runtime, bindings, !module_syntax);
        }
        if !set_handler_call(
          runtime,
          &set_handler,
          &namespace,
          bindings,
          module_syntax,
          subrequests,
        ) {
          return Err(anyhow!(
            "{}: no fetch or scheduled handler: export default {{ fetch(request, env, ctx) }} or call addEventListener(\"fetch\", ...)",
            script.display()
          ));
        }
        Ok(spent)
      }),
    }
    .await
    .with_context(|| format!("worker {:?}", config.name))?;

    let handles = rt.with(|runtime| RequestHandles::new(runtime, dispatch));
    self.handles = Some(handles);
    self.loaded_files = version_loader.take_recorded();
    self.startup_credit = startup_budget.saturating_sub(startup_spent);
    self.sockets = sockets;
    self.clock = clock;
    Ok(())
  }

  /// The module files it loaded, if it recorded them (`runtime dev`).
  pub fn take_loaded_files(&mut self) -> Option<ModuleFiles> {
    self.loaded_files.take()
  }

  /// Hands one request to the script (isolate entered by the caller). Its
  /// response arrives through the request's `respond` slot once the handler
  /// produced it; returns whether it has already (the handler answered
  /// without waiting on anything).
  fn dispatch(&mut self, request: IncomingRequest) -> bool {
    // A request is an I/O event: the clock shows its arrival.
    self.tick_clock();
    let IncomingRequest {
      method,
      url,
      headers,
      body,
      respond,
      scheduled,
    } = request;
    let runtime = &mut *self.rt.runtime;
    let id = self.responses.borrow_mut().insert(respond);
    if scheduled.is_some() {
      self.scheduled_in_flight.push(id);
    }
    let body_rid = body.map(|body| {
      runtime
        .op_state()
        .borrow_mut()
        .resource_table
        .add(RequestBodyResource::new(body))
    });

    // The first event may also use what start-up left of its budget.
    let budget = match scheduled {
      Some(_) => self.scheduled_budget,
      None => self.cpu_budget,
    } + std::mem::take(&mut self.startup_credit);
    let slice = self.cpu.begin(&self.isolate_handle, budget);
    let handles = self.handles.as_ref().expect("live worker");
    v8::scope!(scope, runtime.v8_isolate());
    let context = v8::Local::new(scope, &handles.context);
    let scope = &mut v8::ContextScope::new(scope, context);
    let dispatch = v8::Local::new(scope, &handles.dispatch);
    let id_value = v8::Integer::new_from_unsigned(scope, id).into();
    let method = match COMMON_METHODS.iter().position(|common| *common == method) {
      Some(i) => v8::Local::new(scope, &handles.methods[i]),
      None => v8::String::new(scope, method.as_str()).unwrap(),
    }
    .into();
    // The URL is ASCII: the URI's own characters and a Host header that
    // passed `to_str`.
    let url = v8::String::new_from_one_byte(scope, url.as_bytes(), v8::NewStringType::Normal)
      .unwrap()
      .into();
    // The header list as one string of `name:value` lines joined by "\n"
    // (names are tokens and values hold no CR, LF or NUL, so both separators
    // are unambiguous): one string instead of two per header, and
    // JavaScript splits it only if the handler reads the headers.
    let headers = HEADER_LINES.with_borrow_mut(|packed| {
      packed.clear();
      for (name, value) in headers.iter() {
        if !packed.is_empty() {
          packed.push(b'\n');
        }
        packed.extend_from_slice(name.as_str().as_bytes());
        packed.push(b':');
        packed.extend_from_slice(value.as_bytes());
      }
      v8::String::new_from_one_byte(scope, packed, v8::NewStringType::Normal)
        .unwrap()
        .into()
    });
    let body = match body_rid {
      Some(rid) => v8::Integer::new_from_unsigned(scope, rid).into(),
      None => v8::undefined(scope).into(),
    };
    v8::tc_scope!(let scope, scope);
    let undefined = v8::undefined(scope).into();
    match &scheduled {
      None => dispatch.call(scope, undefined, &[id_value, method, url, headers, body]),
      Some(event) => {
        let cron = v8::String::new(scope, &event.cron).unwrap().into();
        let time = v8::Number::new(scope, event.scheduled_time_ms).into();
        dispatch.call(
          scope,
          undefined,
          &[id_value, method, url, headers, body, cron, time],
        )
      }
    };
    if !scope.has_terminated() && scope.exception().is_none() {
      // A handler that answers from a settled promise (any `async fetch`)
      // has its response after the microtasks: run them now, so the
      // response is there when the dispatch returns.
      scope.perform_microtask_checkpoint();
    }
    if slice.fired() {
      let previous = self.poison.0.take();
      let limit = match scheduled {
        Some(_) => self.scheduled_budget,
        None => self.cpu_budget,
      };
      self.poison.0.set(Some(previous.unwrap_or_else(|| {
        format!("exceeded its CPU time limit of {} ms", limit.as_millis())
      })));
    } else if scope.has_terminated() || self.poison.is_set() || self.array_buffers.exceeded() {
      // A limit stopped the script: the caller fails the request with the
      // limit's reason.
    } else if let Some(exception) = scope.exception() {
      let message = exception.to_rust_string_lossy(scope);
      self
        .responses
        .borrow_mut()
        .answer(id, HandlerOutcome::Error(message));
    }
    !self.responses.borrow().is_waiting(id)
  }

  /// What a turn of the event loop may use: the scheduled events' limit
  /// while one is still running, else the per-request one.
  fn tick_clock(&self) {
    if let Some(clock) = &self.clock {
      clock.tick();
    }
  }

  fn turn_budget(&mut self) -> Duration {
    if self.scheduled_in_flight.is_empty() {
      return self.cpu_budget;
    }
    let responses = self.responses.borrow();
    self
      .scheduled_in_flight
      .retain(|&id| responses.is_waiting(id));
    if self.scheduled_in_flight.is_empty() {
      self.cpu_budget
    } else {
      self.scheduled_budget
    }
  }

  /// Memory the isolate holds.
  fn memory(&mut self) -> IsolateMemory {
    let _entered = Entered::new(self.rt.isolate());
    let heap = self.rt.runtime.v8_isolate().get_heap_statistics();
    IsolateMemory {
      total: heap.used_heap_size() + self.array_buffers.used(),
      heap_committed: heap.total_heap_size(),
    }
  }

  fn poison_with(&self, reason: String) {
    let previous = self.poison.0.take();
    self.poison.0.set(Some(previous.unwrap_or(reason)));
  }

  /// If a limit stopped the isolate: fails every request in it, logs, and
  /// says so (the worker must then be discarded).
  fn check_poisoned(&mut self) -> bool {
    if self.array_buffers.exceeded() && !self.poison.is_set() {
      self.poison.0.set(Some(format!(
        "exceeded its memory limit of {} MiB (ArrayBuffers)",
        self.memory_mb
      )));
    }
    let Some(reason) = self.poison.0.take() else {
      return false;
    };
    let message = format!("worker {:?} {reason}; its isolate was discarded", self.name);
    tracing::error!(worker = %self.name, "{message}");
    let closed = self
      .sockets
      .close_all(1011, "the worker was stopped by a limit");
    if closed > 0 {
      tracing::warn!(worker = %self.name, "closed {closed} WebSocket(s) with 1011: the worker was stopped by a limit");
    }
    self
      .responses
      .borrow_mut()
      .fail_all(|| HandlerOutcome::Unavailable(message.clone()));
    self.poison.0.set(Some(reason));
    true
  }

  /// One turn: takes new requests and drives the event loop. `Ready(true)`
  /// when the worker is done (requests closed and idle, or poisoned).
  fn poll_turn(
    &mut self,
    cx: &mut Context<'_>,
    requests: &mut mpsc::UnboundedReceiver<IncomingRequest>,
    closed: &mut bool,
  ) -> Poll<()> {
    let _entered = Entered::new(self.rt.isolate());
    loop {
      while !*closed {
        match requests.poll_recv(cx) {
          Poll::Ready(Some(request)) => {
            let _answered = self.dispatch(request);
            if self.check_poisoned() {
              return Poll::Ready(());
            }
          }
          Poll::Ready(None) => *closed = true,
          Poll::Pending => break,
        }
      }
      let result = {
        // Something woke the isolate (I/O, a timer): its frozen clock shows
        // this moment until the next wake.
        self.tick_clock();
        let budget = self.turn_budget();
        let slice = self.cpu.begin(&self.isolate_handle, budget);
        let result = self
          .rt
          .runtime
          .poll_event_loop(cx, PollEventLoopOptions::default());
        if slice.fired() {
          self.poison_with(format!(
            "exceeded its CPU time limit of {} ms",
            budget.as_millis()
          ));
        }
        result
      };
      if self.check_poisoned() {
        return Poll::Ready(());
      }
      match result {
        Poll::Pending => return Poll::Pending,
        Poll::Ready(Ok(())) => {
          // Idle: nothing pending can ever settle a handler still waiting.
          let failed = self
            .responses
            .borrow_mut()
            .fail_all(|| HandlerOutcome::Error(NEVER_RESPONDS.to_string()));
          if failed > 0 {
            continue;
          }
          return if *closed {
            Poll::Ready(())
          } else {
            Poll::Pending
          };
        }
        Poll::Ready(Err(error)) => {
          tracing::error!(worker = %self.name, "uncaught error: {error}");
          if *closed {
            return Poll::Ready(());
          }
        }
      }
    }
  }

  /// Serves requests from `requests` (and those dispatched straight into
  /// it through `shared`) until the channel is closed and every request and
  /// all work left in the isolate (timers, `waitUntil`) is done, or a limit
  /// stops the isolate. Returns the worker unless a limit stopped it.
  pub async fn serve(
    shared: &SharedWorker,
    mut requests: mpsc::UnboundedReceiver<IncomingRequest>,
  ) -> Option<Worker> {
    let mut closed = false;
    poll_fn(|cx| {
      shared.register_task(cx.waker());
      if shared.stopped.get() {
        return Poll::Ready(());
      }
      let mut slot = shared.worker.borrow_mut();
      let worker = slot.as_mut().expect("a serving worker is loaded");
      if shared.closing.replace(false) {
        let closed = worker.sockets.close_all(1001, "the worker is going away");
        if closed > 0 {
          tracing::info!(worker = %worker.name, "closed {closed} WebSocket(s) with 1001: the worker was evicted or the server is stopping");
        }
      }
      let turn = worker.poll_turn(cx, &mut requests, &mut closed);
      if turn.is_ready() {
        shared.stopped.set(true);
      }
      turn
    })
    .await;
    let worker = shared.worker.borrow_mut().take()?;
    let poisoned = worker.poison.0.take().is_some();
    if poisoned {
      // Requests that were queued behind the one that broke the isolate.
      requests.close();
      while let Ok(request) = requests.try_recv() {
        let _ = request.respond.send(HandlerOutcome::Unavailable(format!(
          "worker {:?} was stopped by a limit",
          worker.name
        )));
      }
    }
    (!poisoned).then_some(worker)
  }
}

/// A loaded worker as its thread shares it. The worker's own task drives its
/// event loop (timers, I/O, `waitUntil`); the request path dispatches straight
/// into the isolate whenever the task is not using it, so a request the
/// handler answers at once is answered without a hop through the task.
#[derive(Default)]
pub struct SharedWorker {
  worker: std::cell::RefCell<Option<Worker>>,
  task: std::cell::RefCell<Option<std::task::Waker>>,
  /// Set once the worker stopped (a limit, or its task ended): it takes no
  /// more requests.
  stopped: Cell<bool>,
  /// A turn of the event loop is scheduled (see `defer_turn`).
  turn_deferred: Cell<bool>,
  /// When the request path last dispatched into the worker, in
  /// [`coarse_millis`] (0: never).
  last_dispatch: Cell<u64>,
  /// The pool let the worker go (evicted, or the server stops): its task
  /// closes its WebSockets, which would otherwise keep it running.
  closing: Cell<bool>,
  /// Its open WebSockets, once loaded.
  sockets: std::cell::RefCell<Option<Rc<WebSockets>>>,
}

/// How long a worker whose requests were all answered on the spot may go
/// without a turn of its event loop.
const DEFERRED_TURN: Duration = Duration::from_millis(10);

/// Milliseconds on the kernel's coarse monotonic clock: exact to a tick (1
/// to 4 ms), enough to tell whether the last dispatch was within
/// `DEFERRED_TURN`, and read from the vDSO at a fraction of what
/// `Instant::now` costs on every request.
fn coarse_millis() -> u64 {
  crate::limits::clock_ns(libc::CLOCK_MONOTONIC_COARSE).map_or(0, |ns| ns / 1_000_000)
}

thread_local! {
  /// Workers of this thread waiting for a deferred turn.
  static DEFERRED_TURNS: std::cell::RefCell<Vec<std::rc::Weak<SharedWorker>>> =
    const { std::cell::RefCell::new(Vec::new()) };
  /// Whether this thread's sweeper of deferred turns is running.
  static TURN_SWEEPER_RUNS: Cell<bool> = const { Cell::new(false) };
}

impl SharedWorker {
  /// Installs the loaded worker; [`Worker::serve`] then drives it.
  pub fn install(&self, worker: Worker) {
    *self.sockets.borrow_mut() = Some(worker.sockets.clone());
    *self.worker.borrow_mut() = Some(worker);
  }

  /// WebSockets open in the worker's isolate.
  pub fn open_sockets(&self) -> usize {
    self.sockets.borrow().as_ref().map_or(0, |s| s.count())
  }

  /// The pool let the worker go: it finishes what it has in flight and
  /// closes its WebSockets (1001).
  pub fn let_go(&self) {
    if self.open_sockets() > 0 {
      self.closing.set(true);
      self.wake_task();
    }
  }

  pub fn is_stopped(&self) -> bool {
    self.stopped.get()
  }

  /// Memory the worker's isolate holds, if it is loaded and not in use.
  pub fn memory(&self) -> Option<IsolateMemory> {
    let mut slot = self.worker.try_borrow_mut().ok()?;
    slot.as_mut().map(Worker::memory)
  }

  /// The worker will take no more requests (it failed to start).
  pub fn stop(&self) {
    self.stopped.set(true);
  }

  fn register_task(&self, waker: &std::task::Waker) {
    let mut task = self.task.borrow_mut();
    if !task.as_ref().is_some_and(|w| w.will_wake(waker)) {
      *task = Some(waker.clone());
    }
  }

  /// Runs `request`'s handler now if the worker is loaded and free, then
  /// lets its task poll the event loop for whatever the handler started.
  /// Hands the request back when the worker cannot take it this way (not
  /// loaded yet, stopped, or its task is using it).
  pub fn try_dispatch(self: &Rc<Self>, request: IncomingRequest) -> Option<IncomingRequest> {
    if self.stopped.get() {
      return Some(request);
    }
    let Ok(mut slot) = self.worker.try_borrow_mut() else {
      return Some(request);
    };
    let Some(worker) = slot.as_mut() else {
      return Some(request);
    };
    let answered = {
      let _entered = Entered::new(worker.rt.isolate());
      let answered = worker.dispatch(request);
      if worker.check_poisoned() {
        self.stopped.set(true);
      }
      answered && !self.stopped.get()
    };
    drop(slot);
    let now = coarse_millis();
    let last = self.last_dispatch.replace(now);
    let busy = last != 0 && now.saturating_sub(last) < DEFERRED_TURN.as_millis() as u64;
    if answered && busy {
      // Anything the handler started that needs the event loop wakes the
      // task itself (a fetch completing, a timer firing); what only a turn
      // of the loop notices (an unhandled rejection to report) waits for
      // the next turn, which comes within DEFERRED_TURN at the latest: one
      // turn for all the requests meanwhile.
      self.defer_turn();
    } else {
      // A worker with little traffic takes its turn now, while its isolate
      // is still in the caches.
      self.wake_task();
    }
    None
  }

  fn wake_task(&self) {
    if let Some(task) = self.task.borrow().as_ref() {
      task.wake_by_ref();
    }
  }

  /// Makes sure the task takes a turn of the event loop soon. One sweeper
  /// task per thread serves every worker that asked: asking costs a push.
  fn defer_turn(self: &Rc<Self>) {
    if self.turn_deferred.replace(true) {
      return;
    }
    DEFERRED_TURNS.with(|d| d.borrow_mut().push(Rc::downgrade(self)));
    if TURN_SWEEPER_RUNS.with(|r| r.replace(true)) {
      return;
    }
    tokio::task::spawn_local(async {
      loop {
        tokio::time::sleep(DEFERRED_TURN).await;
        let due = DEFERRED_TURNS.with(|d| std::mem::take(&mut *d.borrow_mut()));
        if due.is_empty() {
          // Nothing asked for a while: stop until something does.
          TURN_SWEEPER_RUNS.with(|r| r.set(false));
          return;
        }
        for worker in due.iter().filter_map(std::rc::Weak::upgrade) {
          worker.turn_deferred.set(false);
          worker.wake_task();
        }
      }
    });
  }
}

/// An isolate from the snapshot with the global scope ready and no script
/// yet. Each thread keeps one ready so that a cold worker's first request
/// does not wait for isolate creation.
struct SpareIsolate {
  rt: IsolateRuntime,
  loader: Rc<ScriptLoader>,
  entry: EntryPoints,
  handle: v8::IsolateHandle,
  array_buffers: Arc<ArrayBufferBudget>,
}

/// The heap past which an isolate that served isolated requests is dropped
/// rather than given a fresh realm (a hello-world realm leaves about 1 MiB
/// of garbage, a 77 KB Hono bundle's 3 MiB).
const REALM_REUSE_HEAP: usize = 24 << 20;

/// A worker's isolate with a fresh realm and no script yet
/// ([`Worker::into_fresh_realm`]).
pub struct FreshRealm {
  worker: Worker,
  entry: EntryPoints,
}

impl FreshRealm {
  /// Loads the worker's script into the fresh realm, as
  /// [`Worker::load`] does into a new isolate.
  pub async fn load(self, config: &WorkerConfig) -> anyhow::Result<Worker> {
    let Self { mut worker, entry } = self;
    worker.load_script(entry, config).await?;
    Ok(worker)
  }
}

/// The engine's entry points into a realm, from its bootstrap.
struct EntryPoints {
  dispatch: v8::Global<v8::Function>,
  set_handler: v8::Global<v8::Function>,
  /// `createKvNamespace(index)`: a KV binding's object.
  create_kv: v8::Global<v8::Function>,
  /// `wireConsoleToInspector()`, for an isolate with an inspector.
  wire_console: v8::Global<v8::Function>,
}

/// Spares are made with the default heap limit; a worker with another limit
/// gets an isolate made for it.
const SPARE_MEMORY_MB: u64 = crate::config::WorkerLimits::DEFAULT_MEMORY_MB;

thread_local! {
  static SPARES: std::cell::RefCell<Vec<SpareIsolate>> = const { std::cell::RefCell::new(Vec::new()) };
  static REFILL_SCHEDULED: Cell<bool> = const { Cell::new(false) };
}

impl SpareIsolate {
  fn create(memory_mb: u64) -> anyhow::Result<Self> {
    let loader = Rc::new(ScriptLoader::new(Default::default()));
    let max_heap = (memory_mb as usize).saturating_mul(1024 * 1024);
    let (options, budget) = runtime_options(loader.clone(), Some(max_heap));
    let (rt, (dispatch, set_handler, create_kv, wire_console, handle)) =
      IsolateRuntime::new(options, |runtime| {
        let [dispatch, set_handler, create_kv, wire_console] = prepare(runtime, "")?;
        Ok((
          dispatch,
          set_handler,
          create_kv,
          wire_console,
          runtime.v8_isolate().thread_safe_handle(),
        ))
      })?;
    let array_buffers = budget.expect("a budget for a limited isolate");
    array_buffers.watch(handle.clone());
    Ok(Self {
      rt,
      loader,
      entry: EntryPoints {
        dispatch,
        set_handler,
        create_kv,
        wire_console,
      },
      handle,
      array_buffers,
    })
  }
}

/// Takes this thread's spare isolate (if it suits `memory_mb`) and schedules
/// a new one to be made once the thread is free.
fn take_spare(memory_mb: u64) -> Option<SpareIsolate> {
  if memory_mb != SPARE_MEMORY_MB {
    return None;
  }
  let spare = SPARES.with(|s| s.borrow_mut().pop());
  if tokio::runtime::Handle::try_current().is_ok() && !REFILL_SCHEDULED.with(|r| r.replace(true)) {
    tokio::task::spawn_local(async {
      // Let the request that took the spare go first.
      tokio::time::sleep(Duration::from_millis(1)).await;
      REFILL_SCHEDULED.with(|r| r.set(false));
      prewarm_spare_isolate();
    });
  }
  spare
}

/// Sets up the C allocator for isolates coming and going; call once, at the
/// start of the process, before any thread is spawned.
///
/// An isolate mallocs about 1 MiB of its own (V8's stub caches, string
/// table and isolate object, deno_core's op tables), in blocks of up to
/// ~130 KiB. With glibc's defaults, dropping an isolate trims that memory
/// back to the kernel (the top of the heap is free again) and the blocks
/// over 128 KiB are mmapped, so each new isolate faults all of it in again,
/// zeroed page by page: 61 of the 149 page faults of creating an isolate
/// (bench/isolates). Keeping up to 8 MiB free at the top of each arena, and
/// serving blocks under 1 MiB from the arenas, reuses that memory instead.
pub fn tune_allocator() {
  #[cfg(all(target_os = "linux", target_env = "gnu"))]
  // SAFETY: mallopt only changes glibc's tunables.
  unsafe {
    libc::mallopt(libc::M_TRIM_THRESHOLD, 8 << 20);
    libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
  }
}

/// Keeps one isolate alive for the rest of the process, never used.
///
/// V8 shares the read-only heap among the isolates alive and frees it with
/// the last of them; an isolate made when none is alive deserializes it
/// again (about 0.4 ms) and frees it again when it goes. Without an anchor
/// that is every request with `isolation = "request"` (its isolate is gone
/// before the thread's next spare is made), and a thread whose workers were
/// all evicted. Call once, before any other isolate is made on this thread.
pub fn anchor_read_only_heap() -> anyhow::Result<()> {
  exit_left_entered();
  let (mut runtime, entry_points) = new_isolate(Rc::new(ScriptLoader::new("/".into())), "")?;
  drop(entry_points);
  // SAFETY: `new_isolate` left it entered, and it is the thread's current
  // isolate: nothing was entered after it.
  unsafe { runtime.v8_isolate().exit() };
  // Never dropped, so never the current isolate again.
  std::mem::forget(runtime);
  Ok(())
}

/// Makes sure this thread has a spare isolate ready.
pub fn prewarm_spare_isolate() {
  if SPARES.with(|s| !s.borrow().is_empty()) {
    return;
  }
  match SpareIsolate::create(SPARE_MEMORY_MB) {
    Ok(spare) => SPARES.with(|s| s.borrow_mut().push(spare)),
    Err(error) => tracing::warn!("could not make a spare isolate: {error:#}"),
  }
}

fn runtime_options(
  loader: Rc<ScriptLoader>,
  max_heap_bytes: Option<usize>,
) -> (RuntimeOptions, Option<Arc<ArrayBufferBudget>>) {
  let (budget, create_params) = match max_heap_bytes {
    Some(max) => {
      let (budget, allocator) = ArrayBufferBudget::allocator(max);
      let params = v8::CreateParams::default()
        .heap_limits(0, max)
        .array_buffer_allocator(allocator);
      (Some(budget), Some(params))
    }
    None => (None, None),
  };
  let options = RuntimeOptions {
    module_loader: Some(loader),
    startup_snapshot: Some(runtime_snapshots::RUNTIME_SNAPSHOT),
    // The snapshot was built with exactly these extensions: its op bindings
    // are valid as they are (saves ~0.3 ms per isolate).
    skip_op_registration: true,
    extensions: runtime_ext::extensions(),
    create_params,
    // Where an ArrayBuffer of a transfer list (postMessage, structuredClone)
    // waits for its receiver: without one deno_core neither moves nor
    // detaches it, and deno_web's postMessage fails on it. The isolate's
    // own, dropped with it.
    shared_array_buffer_store: Some(Default::default()),
    ..Default::default()
  };
  (options, budget)
}

/// A fresh isolate from the startup snapshot with the global scope ready for
/// a script (engine internals scrubbed), plus the engine's entry points into
/// it: `[dispatchFetch, setHandler]`. The isolate is left entered, as
/// `JsRuntime::new` leaves it (one isolate per thread at a time).
pub fn new_isolate(
  loader: Rc<ScriptLoader>,
  script_name: &str,
) -> anyhow::Result<(JsRuntime, [v8::Global<v8::Function>; 2])> {
  let mut runtime = JsRuntime::try_new(runtime_options(loader, None).0)?;
  let [dispatch, set_handler, _create_kv, _wire_console] = prepare(&mut runtime, script_name)?;
  Ok((runtime, [dispatch, set_handler]))
}

fn prepare(
  runtime: &mut JsRuntime,
  script_name: &str,
) -> anyhow::Result<[v8::Global<v8::Function>; 4]> {
  {
    let state = runtime.op_state();
    let mut state = state.borrow_mut();
    state.put(ScriptName(script_name.to_string()));
    state.put(SharedResponses::default());
  }
  bootstrap(runtime)
}

/// The response slots `prepare` put in the isolate's `OpState`.
fn shared_responses(runtime: &mut JsRuntime) -> SharedResponses {
  runtime
    .op_state()
    .borrow()
    .borrow::<SharedResponses>()
    .clone()
}

/// Calls one of the engine's entry points into the isolate with no
/// arguments.
fn call_entry_point(runtime: &mut JsRuntime, function: &v8::Global<v8::Function>) {
  deno_core::scope!(scope, runtime);
  let function = v8::Local::new(scope, function);
  let undefined = v8::undefined(scope);
  v8::tc_scope!(let scope, scope);
  function.call(scope, undefined.into(), &[]);
  if let Some(exception) = scope.exception() {
    tracing::error!(
      "engine entry point failed: {}",
      exception.to_rust_string_lossy(scope)
    );
  }
}

/// Calls the snapshot's bootstrap, which scrubs engine internals from the
/// global scope and hands back `[dispatchFetch, setHandler,
/// createKvNamespace, wireConsoleToInspector]`.
fn bootstrap(runtime: &mut JsRuntime) -> anyhow::Result<[v8::Global<v8::Function>; 4]> {
  deno_core::scope!(scope, runtime);
  let context = scope.get_current_context();
  let global = context.global(scope);
  let key = v8::String::new(scope, "__runtimeBootstrap").unwrap();
  let bootstrap = global
    .get(scope, key.into())
    .and_then(|f| v8::Local::<v8::Function>::try_from(f).ok())
    .ok_or_else(|| anyhow!("snapshot has no bootstrap function"))?;
  let undefined = v8::undefined(scope);
  let result = bootstrap
    .call(scope, undefined.into(), &[])
    .and_then(|r| v8::Local::<v8::Array>::try_from(r).ok())
    .ok_or_else(|| anyhow!("bootstrap failed"))?;
  let get = |i: u32| -> anyhow::Result<v8::Global<v8::Function>> {
    let f = result
      .get_index(scope, i)
      .and_then(|f| v8::Local::<v8::Function>::try_from(f).ok())
      .ok_or_else(|| anyhow!("bootstrap returned no function {i}"))?;
    Ok(v8::Global::new(scope, f))
  };
  Ok([get(0)?, get(1)?, get(2)?, get(3)?])
}

/// Evaluates a loaded module, driving the event loop until its top-level
/// code (including top-level `await`) is done, under the worker's start-up
/// budget: every turn of JavaScript is a CPU slice drawing on what is left of
/// `startup` (not on the per-request limit, which starts with the first
/// event), and a module whose evaluation can never finish (nothing pending)
/// is an error, not a hang.
async fn evaluate_with_limits(
  runtime: &mut JsRuntime,
  module_id: deno_core::ModuleId,
  cpu: &CpuSlot,
  startup: Duration,
  poison: &Poison,
  clock: Option<&IsolateClock>,
) -> anyhow::Result<Duration> {
  let handle = runtime.v8_isolate().thread_safe_handle();
  let spent = Cell::new(Duration::ZERO);
  // One slice of start-up JavaScript: `run` under what is left of the
  // budget, the CPU it took added to what start-up has spent.
  let slice = |run: &mut dyn FnMut()| -> Option<anyhow::Error> {
    let left = startup.saturating_sub(spent.get());
    if let Some(clock) = clock {
      clock.tick();
    }
    let before = cpu.thread_cpu();
    let fired = {
      let slice = cpu.begin(&handle, left);
      run();
      slice.fired()
    };
    spent.set(spent.get() + cpu.thread_cpu().saturating_sub(before));
    // Over budget between two samples of the watchdog counts too: the slice
    // ended on its own, but start-up may not go on.
    if fired || spent.get() > startup {
      return Some(anyhow!(
        "exceeded its start-up CPU time limit of {} ms (limits.startup_ms)",
        startup.as_millis()
      ));
    }
    poison.0.take().map(|reason| anyhow!("{reason}"))
  };
  let mut evaluation = None;
  if let Some(error) = slice(&mut || {
    // Unconstrained: the evaluation's result arrives through a channel, and
    // once the task has used up tokio's cooperative budget (many workers
    // loaded in one task) that channel would read as pending even though
    // the module is done, which looks exactly like a module that never
    // finishes.
    evaluation = Some(Box::pin(tokio::task::unconstrained(
      runtime.mod_evaluate(module_id),
    )));
  }) {
    return Err(error);
  }
  let mut evaluation = evaluation.expect("evaluation started");
  poll_fn(|cx| {
    let mut event_loop = Poll::Pending;
    if let Some(error) = slice(&mut || {
      event_loop = runtime.poll_event_loop(cx, PollEventLoopOptions::default());
    }) {
      return Poll::Ready(Err(error));
    }
    if let Poll::Ready(result) = evaluation.as_mut().poll(cx) {
      return Poll::Ready(result.map(|()| spent.get()).map_err(anyhow::Error::from));
    }
    match event_loop {
      Poll::Ready(Err(error)) => Poll::Ready(Err(error.into())),
      Poll::Ready(Ok(())) => Poll::Ready(Err(anyhow!(
        "never finished: it awaits something that can never settle"
      ))),
      Poll::Pending => Poll::Pending,
    }
  })
  .await
}

/// A cheap look at the main module's source: does it seem to export a
/// default (module syntax)? Only decides whether bindings are globals
/// during top-level evaluation; the exports decide after it.
fn looks_like_module_syntax(script: &Path) -> bool {
  let Ok(source) = std::fs::read_to_string(script) else {
    return false;
  };
  let bytes = source.as_bytes();
  let word_at = |i: usize, word: &str| {
    source[i..].starts_with(word)
      && (i == 0 || !is_ident(bytes[i - 1]))
      && bytes.get(i + word.len()).is_none_or(|&b| !is_ident(b))
  };
  source.match_indices("default").any(|(i, _)| {
    if !word_at(i, "default") {
      return false;
    }
    let before = source[..i].trim_end();
    before.ends_with("export") || before.ends_with(" as")
  })
}

fn is_ident(b: u8) -> bool {
  b.is_ascii_alphanumeric() || b == b'_' || b == b'$'
}

/// Whether an instantiated module exports `default`: module syntax.
fn exports_default(runtime: &mut JsRuntime, namespace: &v8::Global<v8::Object>) -> bool {
  deno_core::scope!(scope, runtime);
  let namespace = v8::Local::new(scope, namespace);
  let Some(names) = namespace.get_own_property_names(scope, Default::default()) else {
    return false;
  };
  (0..names.length()).any(|i| {
    names
      .get_index(scope, i)
      .is_some_and(|n| n.to_rust_string_lossy(scope) == "default")
  })
}

/// A worker's bindings as JavaScript values, by name: its vars and
/// secrets as strings, its KV namespaces as `KVNamespace` objects (made by
/// the snapshot's `createKvNamespace` from their index in the worker's
/// [`KvBindings`]).
type BindingValues = Vec<(String, v8::Global<v8::Value>)>;

fn binding_values(
  runtime: &mut JsRuntime,
  config: &WorkerConfig,
  create_kv: &v8::Global<v8::Function>,
) -> anyhow::Result<BindingValues> {
  deno_core::scope!(scope, runtime);
  let mut values =
    Vec::with_capacity(config.bindings.len() + config.json_bindings.len() + config.kv.len());
  for (key, value) in &config.bindings {
    let v = v8::String::new(scope, value).unwrap();
    values.push((
      key.clone(),
      v8::Global::new(scope, v8::Local::<v8::Value>::from(v)),
    ));
  }
  for (key, json) in &config.json_bindings {
    let text = v8::String::new(scope, json).unwrap();
    let value =
      v8::json::parse(scope, text).ok_or_else(|| anyhow!("binding {key}: {json} is not JSON"))?;
    values.push((key.clone(), v8::Global::new(scope, value)));
  }
  let create_kv = v8::Local::new(scope, create_kv);
  let undefined = v8::undefined(scope);
  for (i, (name, _)) in config.kv.iter().enumerate() {
    let index = v8::Integer::new_from_unsigned(scope, i as u32);
    let object = create_kv
      .call(scope, undefined.into(), &[index.into()])
      .ok_or_else(|| anyhow!("KV binding {name}: could not be made"))?;
    values.push((name.clone(), v8::Global::new(scope, object)));
  }
  Ok(values)
}

fn bindings_object<'s>(
  scope: &mut v8::PinScope<'s, '_>,
  bindings: &BindingValues,
) -> v8::Local<'s, v8::Object> {
  let env = v8::Object::new(scope);
  for (key, value) in bindings {
    let k = v8::String::new(scope, key).unwrap();
    let v = v8::Local::new(scope, value);
    env.set(scope, k.into(), v);
  }
  env
}

/// Defines (or, with `define` false, deletes) the bindings as globals.
fn define_globals(runtime: &mut JsRuntime, bindings: &BindingValues, define: bool) {
  if bindings.is_empty() {
    return;
  }
  deno_core::scope!(scope, runtime);
  let global = scope.get_current_context().global(scope);
  for (key, value) in bindings {
    let k = v8::String::new(scope, key).unwrap();
    if define {
      let v = v8::Local::new(scope, value);
      global.set(scope, k.into(), v);
    } else {
      global.delete(scope, k.into());
    }
  }
}

fn set_handler_call(
  runtime: &mut JsRuntime,
  set_handler: &v8::Global<v8::Function>,
  namespace: &v8::Global<v8::Object>,
  bindings: &BindingValues,
  module_syntax: bool,
  subrequests: u32,
) -> bool {
  deno_core::scope!(scope, runtime);
  let set_handler = v8::Local::new(scope, set_handler);
  let namespace = v8::Local::new(scope, namespace);
  let env = if module_syntax {
    bindings_object(scope, bindings)
  } else {
    v8::Object::new(scope)
  };
  let limits = v8::Object::new(scope);
  let key = v8::String::new(scope, "subrequests").unwrap();
  let value = v8::Integer::new_from_unsigned(scope, subrequests);
  limits.set(scope, key.into(), value.into());
  let undefined = v8::undefined(scope);
  set_handler
    .call(
      scope,
      undefined.into(),
      &[namespace.into(), env.into(), limits.into()],
    )
    .is_some_and(|v| v.is_true())
}
