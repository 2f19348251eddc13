//! One test in one isolate: `runtime wpt --single ID`, run by the runner as a
//! child process. The isolate comes from the same startup snapshot `serve`
//! uses; the runner adds the worker wrapper's globals (`GLOBAL`, `location`),
//! loads `testharness.js`, the `// META: script=` files and the test, then
//! drives the event loop until the harness completes or the time is up.
//!
//! Results go to stdout as they happen, one JSON object a line (see
//! [`Line`]), so the parent keeps whatever was reported even if this process
//! has to be killed or crashes.

use std::future::poll_fn;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use deno_core::{v8, JsRuntime, PollEventLoopOptions};
use serde_json::json;

use crate::tests::{resolve_url_path, TestCase};
use runtime_engine::loader::ScriptLoader;

/// The pending exception of a TryCatch scope, as text.
macro_rules! exception_text {
  ($scope:expr) => {
    match $scope.exception() {
      Some(e) => describe($scope, e),
      None => "execution terminated".to_string(),
    }
  };
}

/// A line the child prints.
pub mod line {
  /// A subtest's result: `{"kind":"result","name":..,"status":N,"message":..}`.
  pub const RESULT: &str = "result";
  /// The harness completed: `{"kind":"complete","status":N,"message":..}`.
  pub const COMPLETE: &str = "complete";
  /// The runner could not finish the file: `{"kind":"error","message":..}`.
  pub const ERROR: &str = "error";
}

const HARNESS_GLUE: &str = include_str!("harness.js");

/// Per-isolate state the native callbacks reach through the `OpState`.
struct WptState {
  wpt_dir: PathBuf,
  /// wptserve's http origin.
  server: String,
  complete: bool,
}

fn emit(value: serde_json::Value) {
  let mut out = std::io::stdout().lock();
  let _ = writeln!(out, "{value}");
  let _ = out.flush();
}

fn emit_error(message: impl Into<String>) {
  emit(json!({"kind": line::ERROR, "message": message.into()}));
}

/// Runs `test` and prints its results. `origin` is the test's origin as
/// `location` shows it (`http://localhost:PORT`), `server` wptserve's http
/// origin (for `.sub.` scripts), `timeout` the harness timeout.
pub async fn run_single(
  wpt_dir: &Path,
  test: &TestCase,
  origin: &str,
  server: &str,
  timeout: Duration,
) -> anyhow::Result<()> {
  let loader = Rc::new(ScriptLoader::new(wpt_dir.to_path_buf()));
  loader.seal();
  let (mut runtime, _) = runtime_engine::worker::new_isolate(loader, &test.id)?;
  runtime.op_state().borrow_mut().put(WptState {
    wpt_dir: wpt_dir.to_path_buf(),
    server: server.to_string(),
    complete: false,
  });

  // The glue, then testharness.js, then the hooks.
  let href = format!("{origin}/{}{}", test.path, test.variant);
  if let Ok(location) = deno_core::url::Url::parse(&href) {
    runtime
      .op_state()
      .borrow_mut()
      .put(runtime_ext::Location(location));
  }
  let glue = runtime
    .execute_script("[wpt runner]", HARNESS_GLUE)
    .map_err(|e| anyhow!("runner glue: {e}"))?;
  let install = {
    deno_core::scope!(scope, runtime);
    let glue = v8::Local::new(scope, glue);
    let glue = v8::Local::<v8::Function>::try_from(glue).map_err(|_| anyhow!("glue"))?;
    let config = json!({
      "href": href,
      "title": test.meta.title,
      "importScripts": test.is_worker_js(),
    })
    .to_string();
    let config = v8::String::new(scope, &config).unwrap();
    let config = v8::json::parse(scope, config).ok_or_else(|| anyhow!("config"))?;
    let report = v8::Function::new(scope, report_callback).unwrap();
    let load = v8::Function::new(scope, load_callback).unwrap();
    let undefined = v8::undefined(scope).into();
    v8::tc_scope!(let scope, scope);
    let install = glue
      .call(scope, undefined, &[config, report.into(), load.into()])
      .and_then(|f| v8::Local::<v8::Function>::try_from(f).ok())
      .ok_or_else(|| anyhow!("runner glue failed: {}", exception_text!(scope)))?;
    v8::Global::new(scope, install)
  };
  let harness = read_script(wpt_dir, server, "/resources/testharness.js")?;
  if let Err(exception) = run_script(&mut runtime, "/resources/testharness.js", &harness) {
    deno_core::scope!(scope, runtime);
    let exception = v8::Local::new(scope, exception);
    return Err(anyhow!("testharness.js: {}", describe(scope, exception)));
  }
  let hooks = {
    deno_core::scope!(scope, runtime);
    let install = v8::Local::new(scope, install);
    let undefined = v8::undefined(scope).into();
    v8::tc_scope!(let scope, scope);
    let hooks = install
      .call(scope, undefined, &[])
      .and_then(|o| v8::Local::<v8::Object>::try_from(o).ok())
      .ok_or_else(|| anyhow!("hooking testharness.js failed: {}", exception_text!(scope)))?;
    let get = |scope: &mut v8::PinScope, name: &str| {
      let key = v8::String::new(scope, name).unwrap();
      hooks
        .get(scope, key.into())
        .and_then(|f| v8::Local::<v8::Function>::try_from(f).ok())
        .map(|f| v8::Global::new(scope, f))
        .ok_or_else(|| anyhow!("no hook {name}"))
    };
    Hooks {
      finish: get(scope, "finish")?,
      timeout: get(scope, "timeout")?,
      error: get(scope, "error")?,
    }
  };

  // The META scripts in order, then the test itself. A script that throws
  // stops the rest, as in a worker importing them; the harness hears of it
  // through an error event.
  let mut scripts: Vec<String> = test
    .meta
    .scripts
    .iter()
    .map(|s| resolve_url_path(&test.path, s))
    .collect();
  scripts.push(format!("/{}", test.path));
  for path in &scripts {
    let code = match read_script(wpt_dir, server, path) {
      Ok(code) => code,
      Err(e) => {
        emit_error(format!("cannot load {path}: {e:#}"));
        return Ok(());
      }
    };
    if let Err(exception) = run_script(&mut runtime, path, &code) {
      call_hook(&mut runtime, &hooks.error, Some(&exception));
      break;
    }
  }
  call_hook(&mut runtime, &hooks.finish, None);

  // Drive the event loop until the harness completes. If nothing is left to
  // run (a promise nobody will settle) or time is up, end it as the harness
  // timeout would, and give it a moment to report.
  let deadline = tokio::time::Instant::now() + timeout;
  let mut timed_out = false;
  loop {
    let limit = if timed_out {
      tokio::time::Instant::now() + Duration::from_secs(2)
    } else {
      deadline
    };
    let outcome = tokio::time::timeout_at(limit, drive(&mut runtime)).await;
    match outcome {
      Ok(Drive::Complete) => break,
      Ok(Drive::Error(e)) => {
        emit_error(format!("uncaught error in the event loop: {e}"));
        break;
      }
      Ok(Drive::Idle) | Err(_) if timed_out => {
        emit_error(format!(
          "the harness did not complete within {}s",
          timeout.as_secs()
        ));
        break;
      }
      Ok(Drive::Idle) | Err(_) => {
        timed_out = true;
        call_hook(&mut runtime, &hooks.timeout, None);
      }
    }
  }
  Ok(())
}

struct Hooks {
  finish: v8::Global<v8::Function>,
  timeout: v8::Global<v8::Function>,
  error: v8::Global<v8::Function>,
}

enum Drive {
  Complete,
  Idle,
  Error(String),
}

fn is_complete(runtime: &mut JsRuntime) -> bool {
  runtime.op_state().borrow().borrow::<WptState>().complete
}

/// Polls the event loop until the harness completed, nothing is left to do,
/// or the loop fails.
async fn drive(runtime: &mut JsRuntime) -> Drive {
  poll_fn(|cx| {
    if is_complete(runtime) {
      return Poll::Ready(Drive::Complete);
    }
    let poll = runtime.poll_event_loop(cx, PollEventLoopOptions::default());
    if is_complete(runtime) {
      return Poll::Ready(Drive::Complete);
    }
    match poll {
      Poll::Pending => Poll::Pending,
      Poll::Ready(Ok(())) => Poll::Ready(Drive::Idle),
      Poll::Ready(Err(e)) => Poll::Ready(Drive::Error(e.to_string())),
    }
  })
  .await
}

fn call_hook(
  runtime: &mut JsRuntime,
  hook: &v8::Global<v8::Function>,
  arg: Option<&v8::Global<v8::Value>>,
) {
  deno_core::scope!(scope, runtime);
  let hook = v8::Local::new(scope, hook);
  let undefined = v8::undefined(scope).into();
  let args: Vec<v8::Local<v8::Value>> = arg.map(|a| v8::Local::new(scope, a)).into_iter().collect();
  v8::tc_scope!(let scope, scope);
  if hook.call(scope, undefined, &args).is_none() {
    let message = exception_text!(scope);
    emit_error(format!("runner hook failed: {message}"));
  }
}

fn describe(scope: &mut v8::PinScope, value: v8::Local<v8::Value>) -> String {
  if let Ok(object) = v8::Local::<v8::Object>::try_from(value) {
    let key = v8::String::new(scope, "stack").unwrap();
    if let Some(stack) = object.get(scope, key.into()) {
      if stack.is_string() {
        return stack.to_rust_string_lossy(scope);
      }
    }
  }
  value.to_rust_string_lossy(scope)
}

/// Runs `code` as a classic script named `name` in the global scope. On a
/// throw, returns the exception.
fn run_script(
  runtime: &mut JsRuntime,
  name: &str,
  code: &str,
) -> Result<(), v8::Global<v8::Value>> {
  deno_core::scope!(scope, runtime);
  v8::tc_scope!(let scope, scope);
  match compile_and_run(scope, name, code) {
    Some(()) => Ok(()),
    None => {
      let exception = scope.exception().unwrap_or_else(|| {
        v8::String::new(scope, "execution terminated")
          .unwrap()
          .into()
      });
      Err(v8::Global::new(scope, exception))
    }
  }
}

fn compile_and_run(scope: &mut v8::PinScope, name: &str, code: &str) -> Option<()> {
  let source = v8::String::new(scope, code)?;
  let name = v8::String::new(scope, name)?;
  let origin = v8::ScriptOrigin::new(
    scope,
    name.into(),
    0,
    0,
    false,
    0,
    None,
    false,
    false,
    false,
    None,
  );
  let script = v8::Script::compile(scope, source, Some(&origin))?;
  script.run(scope).map(|_| ())
}

/// Files that are symlinks in web-platform-tests, and their targets.
const SYMLINKS: &[(&str, &str)] = &[(
  "/resources/WebIDLParser.js",
  "resources/webidl2/lib/webidl2.js",
)];

/// Reads a WPT file by its root-relative URL path. `.sub.` files are fetched
/// from wptserve, which fills in `{{host}}`, `{{ports[http][0]}}`... as in a
/// full WPT setup.
fn read_script(wpt_dir: &Path, origin: &str, path: &str) -> anyhow::Result<String> {
  let path = path.split(['?', '#']).next().unwrap_or(path);
  let file_name = path.rsplit('/').next().unwrap_or(path);
  if file_name.contains(".sub.") {
    return http_get(origin, path);
  }
  let relative = path.trim_start_matches('/');
  if relative.split('/').any(|part| part == "..") {
    return Err(anyhow!("path escapes the WPT directory: {path}"));
  }
  let mut file = wpt_dir.join(relative);
  if !file.exists() {
    // Symlinks in WPT that a copy may have lost.
    if let Some((_, target)) = SYMLINKS.iter().find(|(link, _)| *link == path) {
      file = wpt_dir.join(target);
    }
  }
  std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))
}

/// A plain HTTP/1.0 GET to the runner's wptserve on loopback.
fn http_get(origin: &str, path: &str) -> anyhow::Result<String> {
  let authority = origin
    .strip_prefix("http://")
    .ok_or_else(|| anyhow!("not an http origin: {origin}"))?;
  let port = authority.rsplit(':').next().unwrap_or("80");
  let mut stream = std::net::TcpStream::connect(format!("127.0.0.1:{port}"))
    .with_context(|| format!("wptserve is not running at {origin} (needed for {path})"))?;
  stream.set_read_timeout(Some(Duration::from_secs(10)))?;
  write!(
    stream,
    "GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
  )?;
  let mut response = Vec::new();
  stream.read_to_end(&mut response)?;
  let response = String::from_utf8_lossy(&response);
  let (head, body) = response
    .split_once("\r\n\r\n")
    .ok_or_else(|| anyhow!("malformed response for {path}"))?;
  let status = head.split_whitespace().nth(1).unwrap_or("");
  if status != "200" {
    return Err(anyhow!("GET {path}: HTTP {status}"));
  }
  Ok(body.to_string())
}

/// `report(kind, name, status, message)`, called by the glue's harness
/// callbacks.
fn report_callback(
  scope: &mut v8::PinScope,
  args: v8::FunctionCallbackArguments,
  _rv: v8::ReturnValue<v8::Value>,
) {
  let kind = args.get(0).int32_value(scope).unwrap_or(0);
  let name = args.get(1).to_rust_string_lossy(scope);
  let status = args.get(2).int32_value(scope).unwrap_or(-1);
  let message = args.get(3);
  let message = if message.is_null_or_undefined() {
    serde_json::Value::Null
  } else {
    let mut text = message.to_rust_string_lossy(scope);
    truncate(&mut text, 2000);
    serde_json::Value::String(text)
  };
  if kind == 1 {
    let state = JsRuntime::op_state_from(scope);
    state.borrow_mut().borrow_mut::<WptState>().complete = true;
    emit(json!({"kind": line::COMPLETE, "status": status, "message": message}));
  } else {
    emit(json!({"kind": line::RESULT, "name": name, "status": status, "message": message}));
  }
}

/// `load(path)`: runs a WPT file as a classic script, for `importScripts`.
/// Its exceptions propagate to the caller.
fn load_callback(
  scope: &mut v8::PinScope,
  args: v8::FunctionCallbackArguments,
  _rv: v8::ReturnValue<v8::Value>,
) {
  let path = args.get(0).to_rust_string_lossy(scope);
  let (dir, origin) = {
    let state = JsRuntime::op_state_from(scope);
    let state = state.borrow();
    let state = state.borrow::<WptState>();
    (state.wpt_dir.clone(), state.server.clone())
  };
  match read_script(&dir, &origin, &path) {
    Ok(code) => {
      // No TryCatch here: an exception thrown by the script propagates.
      let _ = compile_and_run(scope, &path, &code);
    }
    Err(e) => {
      let message = v8::String::new(scope, &format!("importScripts: {e:#}")).unwrap();
      let exception = v8::Exception::type_error(scope, message);
      scope.throw_exception(exception);
    }
  }
}

fn truncate(text: &mut String, max: usize) {
  if text.len() > max {
    let mut end = max;
    while !text.is_char_boundary(end) {
      end -= 1;
    }
    text.truncate(end);
    text.push('…');
  }
}
