//! A worker: one user script loaded into one isolate created from the
//! startup snapshot, and the loop that feeds it requests while driving its
//! event loop. Many requests run concurrently inside one worker.

use std::future::poll_fn;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::task::Poll;

use anyhow::{anyhow, Context as _};
use deno_core::{v8, JsRuntime, ModuleSpecifier, PollEventLoopOptions, RuntimeOptions};
use http::HeaderMap;
use runtime_ext::console::ScriptName;
use runtime_ext::http::{HandlerOutcome, PendingResponses, RequestBody, RequestBodyResource};
use tokio::sync::{mpsc, oneshot};

use crate::loader::ScriptLoader;

/// A request on its way into a worker.
pub struct IncomingRequest {
  pub method: http::Method,
  /// Absolute URL, as `request.url` shows it.
  pub url: String,
  pub headers: HeaderMap,
  pub body: Option<RequestBody>,
  pub respond: oneshot::Sender<HandlerOutcome>,
}

/// Why a response could not come: nothing left in the isolate can produce it.
pub const NEVER_RESPONDS: &str = "The script will never generate a response: its fetch handler's promise did not settle and nothing it waits on is pending.";

pub struct Worker {
  runtime: JsRuntime,
  dispatch: v8::Global<v8::Function>,
  name: String,
}

impl Worker {
  /// Creates an isolate from the snapshot, loads `script` and its imports as
  /// ES modules, evaluates them, and finds the fetch handler.
  pub async fn load(script: &Path) -> anyhow::Result<Worker> {
    let script = std::path::absolute(script)
      .with_context(|| format!("cannot resolve {}", script.display()))?;
    if !script.is_file() {
      return Err(anyhow!("script not found: {}", script.display()));
    }
    let root: PathBuf = script.parent().map(Path::to_path_buf).unwrap_or_default();
    let name = script
      .file_name()
      .map(|n| n.to_string_lossy().into_owned())
      .unwrap_or_default();
    let loader = Rc::new(ScriptLoader::new(root));
    let (mut runtime, [dispatch, set_handler]) = new_isolate(loader.clone(), &name)?;

    let specifier = ModuleSpecifier::from_file_path(&script)
      .map_err(|_| anyhow!("invalid script path {}", script.display()))?;
    let module_id = runtime.load_main_es_module(&specifier).await?;
    let evaluation = runtime.mod_evaluate(module_id);
    runtime
      .with_event_loop_future(evaluation, PollEventLoopOptions::default())
      .await?;
    loader.seal();

    let namespace = runtime.get_module_namespace(module_id)?;
    let has_handler = {
      deno_core::scope!(scope, runtime);
      let set_handler = v8::Local::new(scope, &set_handler);
      let namespace = v8::Local::new(scope, &namespace);
      let env = v8::Object::new(scope);
      let undefined = v8::undefined(scope);
      set_handler
        .call(scope, undefined.into(), &[namespace.into(), env.into()])
        .is_some_and(|v| v.is_true())
    };
    if !has_handler {
      return Err(anyhow!(
        "{}: no fetch handler: export default {{ fetch(request, env, ctx) }} or call addEventListener(\"fetch\", ...)",
        script.display()
      ));
    }
    Ok(Worker {
      runtime,
      dispatch,
      name,
    })
  }

  pub fn name(&self) -> &str {
    &self.name
  }

  /// Hands one request to the script. Its response arrives through the
  /// request's `respond` slot once the handler produced it.
  fn dispatch(&mut self, request: IncomingRequest) {
    let IncomingRequest {
      method,
      url,
      headers,
      body,
      respond,
    } = request;
    let state = self.runtime.op_state();
    let id = state
      .borrow_mut()
      .borrow_mut::<PendingResponses>()
      .insert(respond);
    let body_rid = body.map(|body| {
      state
        .borrow_mut()
        .resource_table
        .add(RequestBodyResource::new(body))
    });
    drop(state);

    deno_core::scope!(scope, self.runtime);
    let dispatch = v8::Local::new(scope, &self.dispatch);
    let id_value = v8::Integer::new_from_unsigned(scope, id).into();
    let method = v8::String::new(scope, method.as_str()).unwrap().into();
    let url = v8::String::new(scope, &url).unwrap().into();
    let header_values: Vec<v8::Local<v8::Value>> = headers
      .iter()
      .flat_map(|(name, value)| {
        [
          v8::String::new_from_one_byte(scope, name.as_str().as_bytes(), v8::NewStringType::Normal)
            .unwrap()
            .into(),
          v8::String::new_from_one_byte(scope, value.as_bytes(), v8::NewStringType::Normal)
            .unwrap()
            .into(),
        ]
      })
      .collect();
    let headers = v8::Array::new_with_elements(scope, &header_values).into();
    let body = match body_rid {
      Some(rid) => v8::Integer::new_from_unsigned(scope, rid).into(),
      None => v8::undefined(scope).into(),
    };
    v8::tc_scope!(let scope, scope);
    let undefined = v8::undefined(scope).into();
    dispatch.call(scope, undefined, &[id_value, method, url, headers, body]);
    if let Some(exception) = scope.exception() {
      let message = exception.to_rust_string_lossy(scope);
      let state = JsRuntime::op_state_from(scope);
      let slot = state.borrow_mut().borrow_mut::<PendingResponses>().take(id);
      if let Some(slot) = slot {
        let _ = slot.send(HandlerOutcome::Error(message));
      }
    }
  }

  /// Serves requests from `requests` until it is closed and every request
  /// and all work left in the isolate (timers, `waitUntil`) is done.
  pub async fn run(mut self, mut requests: mpsc::UnboundedReceiver<IncomingRequest>) {
    let mut closed = false;
    poll_fn(|cx| loop {
      while !closed {
        match requests.poll_recv(cx) {
          Poll::Ready(Some(request)) => self.dispatch(request),
          Poll::Ready(None) => closed = true,
          Poll::Pending => break,
        }
      }
      match self
        .runtime
        .poll_event_loop(cx, PollEventLoopOptions::default())
      {
        Poll::Pending => return Poll::Pending,
        Poll::Ready(Ok(())) => {
          // Idle: nothing pending can ever settle a handler still waiting.
          let state = self.runtime.op_state();
          let failed = state
            .borrow_mut()
            .borrow_mut::<PendingResponses>()
            .fail_all(NEVER_RESPONDS);
          if failed > 0 {
            continue;
          }
          return if closed {
            Poll::Ready(())
          } else {
            Poll::Pending
          };
        }
        Poll::Ready(Err(error)) => {
          tracing::error!(script = %self.name, "uncaught error: {error}");
          if closed {
            return Poll::Ready(());
          }
        }
      }
    })
    .await
  }
}

/// A fresh isolate from the startup snapshot with the global scope ready for
/// a script (engine internals scrubbed), plus the engine's entry points into
/// it: `[dispatchFetch, setHandler]`.
pub fn new_isolate(
  loader: Rc<ScriptLoader>,
  script_name: &str,
) -> anyhow::Result<(JsRuntime, [v8::Global<v8::Function>; 2])> {
  let mut runtime = JsRuntime::try_new(RuntimeOptions {
    module_loader: Some(loader),
    startup_snapshot: Some(runtime_snapshots::RUNTIME_SNAPSHOT),
    // The snapshot was built with exactly these extensions: its op bindings
    // are valid as they are (saves ~0.3 ms per isolate).
    skip_op_registration: true,
    extensions: runtime_ext::extensions(),
    ..Default::default()
  })?;
  {
    let state = runtime.op_state();
    let mut state = state.borrow_mut();
    state.put(ScriptName(script_name.to_string()));
    state.put(PendingResponses::default());
  }
  let entry_points = bootstrap(&mut runtime)?;
  Ok((runtime, entry_points))
}

/// Calls the snapshot's bootstrap, which scrubs engine internals from the
/// global scope and hands back `[dispatchFetch, setHandler]`.
fn bootstrap(runtime: &mut JsRuntime) -> anyhow::Result<[v8::Global<v8::Function>; 2]> {
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
  Ok([get(0)?, get(1)?])
}
