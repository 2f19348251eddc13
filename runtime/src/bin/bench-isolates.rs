//! `bench/isolates`: what isolates cost, measured in-process on one thread.
//!
//! - `isolate_p50_us`, `isolate_p99_us`: creating an isolate from the
//!   startup snapshot with the global scope ready for a script, while
//!   another isolate is alive, as in a server (which keeps one for good,
//!   `anchor_read_only_heap`): V8 then shares the read-only heap it
//!   deserialized for the first one, which it would free with the last
//!   isolate of the process. `BENCH_ALONE=1` measures with no other isolate
//!   alive (each creation deserializes the read-only heap again, ~0.4 ms).
//!   `isolate_cpu_p50_us`: the same creations in this thread's CPU time,
//!   which other work on shared cores does not inflate as it does wall time.
//! - `context_p50_us`, `context_p99_us`, `context_cpu_p50_us`: what
//!   `isolation = "request"` pays per request before the script runs: a
//!   fresh realm (a new context from the snapshot) in a warm isolate
//!   (`JsRuntime::reset_main_realm`, patches/README.md).
//! - `cold_first_request_p50_us`: a request to a worker that is not warm,
//!   from dispatch to its response: isolate, module load and evaluation, and
//!   the handler.
//! - `rss_per_isolate_kib`: resident memory per warm hello-world worker, with
//!   N of them alive (N = the first argument, default 1000);
//!   `heap_committed_per_isolate_kib`: the V8 heap pages each has committed
//!   (with pointer compression, what it takes of the process's 4 GiB cage).
//!
//! The last line of output is one JSON object with those keys.
//!
//! `BENCH_LAYERS=1` instead measures where creation time goes: isolates
//! from snapshots made here of ever more of the runtime (deno_core alone;
//! plus the ops of deno_webidl, deno_web and deno_crypto; plus their
//! JavaScript; all of ours), with each snapshot's size and heap.

use std::rc::Rc;
use std::time::Instant;

use runtime_engine::config::{Isolation, WorkerConfig, WorkerLimits};
use runtime_engine::loader::ScriptLoader;
use runtime_engine::pool::IsolatePool;
use runtime_engine::worker::{new_isolate, IncomingRequest, WorkerContext};
use runtime_ext::http::HandlerOutcome;
use tokio::sync::oneshot;

fn percentile(sorted: &[u128], p: f64) -> u128 {
  let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
  sorted[i]
}

/// CPU time of the calling thread.
fn thread_cpu_us() -> u128 {
  runtime_engine::limits::clock_ns(libc::CLOCK_THREAD_CPUTIME_ID).unwrap_or(0) as u128 / 1000
}

fn rss_kib() -> u64 {
  let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
  status
    .lines()
    .find_map(|l| l.strip_prefix("VmRSS:"))
    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    .unwrap_or(0)
}

fn hello_script() -> std::path::PathBuf {
  let dir = std::env::temp_dir().join(format!("bench-isolates-{}", std::process::id()));
  std::fs::create_dir_all(&dir).unwrap();
  let path = dir.join("hello.js");
  std::fs::write(
    &path,
    "export default { fetch() { return new Response(\"Hello, world!\"); } };\n",
  )
  .unwrap();
  path
}

fn worker_config(name: String, main: &std::path::Path) -> WorkerConfig {
  WorkerConfig {
    name,
    main: main.to_path_buf(),
    routes: Vec::new(),
    bindings: Vec::new(),
    json_bindings: Vec::new(),
    kv: Vec::new(),
    isolation: Isolation::Isolate,
    limits: WorkerLimits::default(),
    crons: Vec::new(),
    cache: None,
    outbound: std::sync::Arc::new(runtime_ext::outbound::OutboundPolicy::any()),
    coarse_time: false,
    dev: None,
    inspector: None,
    quotas: runtime_ext::quota::WorkerQuotas::new(Default::default()),
  }
}

/// Sends one GET to worker `index` of `pool` and waits for its response.
async fn request(pool: &IsolatePool, index: usize) {
  let (respond, response) = oneshot::channel();
  pool.dispatch(
    index,
    IncomingRequest {
      method: http::Method::GET,
      url: "http://bench.local/".into(),
      headers: http::HeaderMap::new(),
      body: None,
      respond,
      scheduled: None,
    },
  );
  match response.await {
    Ok(HandlerOutcome::Response(r)) => assert_eq!(r.status(), 200),
    Ok(_) => panic!("hello worker failed"),
    Err(_) => panic!("hello worker dropped the request"),
  }
}

/// The snapshot layers `BENCH_LAYERS` compares: each a list of extensions
/// (made anew for every isolate, as deno_core requires) and a name.
fn layer_extensions(layer: usize) -> Vec<deno_core::Extension> {
  let mut extensions = runtime_ext::extensions();
  if layer == 3 {
    return extensions;
  }
  // Our own extension goes; for layer 2 a stand-in loads what our
  // 00_web.js loads of deno_web and deno_crypto, and nothing else.
  let ours = extensions.pop().expect("the runtime extension");
  if layer == 0 {
    return Vec::new();
  }
  if layer == 2 {
    let web = ours
      .esm_files
      .iter()
      .find(|f| f.specifier == "ext:runtime/00_web.js")
      .and_then(|f| f.load().ok())
      .expect("00_web.js");
    let mut entry = String::from("import { core } from \"ext:core/mod.js\";\n");
    for piece in web.as_str().split("core.loadExtScript(").skip(1) {
      let specifier = piece.split('"').nth(1).expect("a quoted specifier");
      entry.push_str(&format!("core.loadExtScript({specifier:?});\n"));
    }
    let files: &'static [deno_core::ExtensionFileSource] =
      Box::leak(Box::new([deno_core::ExtensionFileSource::new_computed(
        "ext:layer/main.js",
        entry.into(),
      )]));
    extensions.push(deno_core::Extension {
      name: "layer",
      deps: &["deno_webidl", "deno_web", "deno_crypto"],
      esm_files: std::borrow::Cow::Borrowed(files),
      esm_entry_point: Some("ext:layer/main.js"),
      ..Default::default()
    });
  }
  extensions
}

fn creation_by_layer() {
  const LAYERS: [&str; 4] = [
    "deno_core alone",
    "+ ops of deno_webidl, deno_web, deno_crypto",
    "+ their JavaScript (what js/00_web.js loads)",
    "+ ours (the runtime's snapshot)",
  ];
  for (layer, name) in LAYERS.iter().enumerate() {
    let snapshot = deno_core::JsRuntimeForSnapshot::new(deno_core::RuntimeOptions {
      extensions: layer_extensions(layer),
      ..Default::default()
    })
    .snapshot();
    let snapshot: &'static [u8] = Box::leak(snapshot);
    let new_runtime = || {
      deno_core::JsRuntime::new(deno_core::RuntimeOptions {
        startup_snapshot: Some(snapshot),
        skip_op_registration: true,
        extensions: layer_extensions(layer),
        ..Default::default()
      })
    };
    // Measured as bench/isolates measures: another isolate alive meanwhile.
    let mut first = new_runtime();
    let heap_kib = first.v8_isolate().get_heap_statistics().used_heap_size() / 1024;
    let mut times = Vec::new();
    for _ in 0..300 {
      let start = Instant::now();
      let runtime = new_runtime();
      times.push(start.elapsed().as_micros());
      drop(runtime);
    }
    times.sort_unstable();
    drop(first);
    println!(
      "{name}: snapshot {} KiB, heap {heap_kib} KiB, creation p50 {} us",
      snapshot.len() / 1024,
      percentile(&times, 0.5)
    );
  }
}

/// BENCH_SPACES=1: what a fresh isolate's V8 heap holds, space by space
/// (committed, used and physical KiB), on stderr.
fn print_heap_spaces(isolate: &mut deno_core::v8::Isolate) {
  for i in 0..isolate.number_of_heap_spaces() {
    let Some(space) = isolate.get_heap_space_statistics(i) else {
      continue;
    };
    if space.space_size() == 0 {
      continue;
    }
    eprintln!(
      "heap space {}: committed {} KiB, used {} KiB, physical {} KiB",
      space.space_name().to_string_lossy(),
      space.space_size() / 1024,
      space.space_used_size() / 1024,
      space.physical_space_size() / 1024
    );
  }
}

fn main() {
  // As the server does (src/main.rs).
  runtime_engine::worker::tune_allocator();
  let count: usize = std::env::args()
    .nth(1)
    .and_then(|n| n.parse().ok())
    .unwrap_or(1000);
  if let Ok(flags) = std::env::var("BENCH_V8_FLAGS") {
    // Experiments only: V8 flags to try against these figures.
    deno_core::v8::V8::set_flags_from_string(&flags);
  }
  let rt = tokio::runtime::Builder::new_current_thread()
    .enable_all()
    .build()
    .unwrap();
  let local = tokio::task::LocalSet::new();
  if std::env::var_os("BENCH_LAYERS").is_some() {
    let _guard = rt.enter();
    creation_by_layer();
    return;
  }
  local.block_on(&rt, async move {
    // The first isolate pays for V8's platform start-up; it is not counted.
    // As in the server (`runtime serve`), it stays alive for good, so the
    // read-only heap is deserialized once; BENCH_ALONE drops it at once.
    if std::env::var_os("BENCH_ALONE").is_some() {
      drop(new_isolate(Rc::new(ScriptLoader::new("/".into())), "first").unwrap());
    } else {
      runtime_engine::worker::anchor_read_only_heap().unwrap();
    }

    let mut created = Vec::with_capacity(count);
    let mut created_cpu = Vec::with_capacity(count);
    for _ in 0..count {
      let start = Instant::now();
      let cpu = thread_cpu_us();
      let mut isolate = new_isolate(Rc::new(ScriptLoader::new("/".into())), "bench").unwrap();
      if created.is_empty() && std::env::var_os("BENCH_SPACES").is_some() {
        print_heap_spaces(isolate.0.v8_isolate());
      }
      created_cpu.push(thread_cpu_us() - cpu);
      created.push(start.elapsed().as_micros());
      drop(isolate);
    }
    created.sort_unstable();
    created_cpu.sort_unstable();

    // A fresh realm (context) from the snapshot in a warm isolate, as
    // `isolation = "request"` gives each request after its isolate's first.
    let (mut isolate, entry_points) =
      new_isolate(Rc::new(ScriptLoader::new("/".into())), "bench").unwrap();
    drop(entry_points);
    let mut realms = Vec::with_capacity(count);
    let mut realms_cpu = Vec::with_capacity(count);
    for _ in 0..count {
      let start = Instant::now();
      let cpu = thread_cpu_us();
      isolate.reset_main_realm().unwrap();
      realms_cpu.push(thread_cpu_us() - cpu);
      realms.push(start.elapsed().as_micros());
    }
    drop(isolate);
    realms.sort_unstable();
    realms_cpu.sort_unstable();
    let (context_p50, context_p99, context_cpu_p50) = (
      realms[count / 2],
      realms[count * 99 / 100],
      realms_cpu[count / 2],
    );

    let script = hello_script();
    let ctx = WorkerContext::for_current_thread();

    // Cold first requests: a pool that keeps one worker, alternating between
    // two, so every request finds its worker cold.
    let configs: Rc<[WorkerConfig]> = vec![
      worker_config("a".into(), &script),
      worker_config("b".into(), &script),
    ]
    .into();
    let pool = IsolatePool::new(configs, ctx.clone(), 1, Default::default());
    let rounds = (count / 4).max(20);
    let mut cold = Vec::with_capacity(rounds);
    for i in 0..rounds {
      // Cold starts are sporadic: the thread's spare isolate is ready by then.
      tokio::time::sleep(std::time::Duration::from_millis(10)).await;
      let start = Instant::now();
      request(&pool, i % 2).await;
      cold.push(start.elapsed().as_micros());
    }
    cold.sort_unstable();
    drop(pool);

    // Request isolation: every request in a fresh realm (the first in a
    // fresh isolate).
    let isolated: Rc<[WorkerConfig]> = vec![WorkerConfig {
      isolation: Isolation::Request,
      ..worker_config("isolated".into(), &script)
    }]
    .into();
    let pool = IsolatePool::new(isolated, ctx.clone(), 1, Default::default());
    let mut per_request = Vec::with_capacity(rounds);
    for _ in 0..rounds {
      tokio::time::sleep(std::time::Duration::from_millis(10)).await;
      let start = Instant::now();
      request(&pool, 0).await;
      per_request.push(start.elapsed().as_micros());
    }
    per_request.sort_unstable();
    drop(pool);
    // Let the per-request isolates finish and drop.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;

    // Memory per warm worker.
    let configs: Rc<[WorkerConfig]> = (0..count)
      .map(|i| worker_config(format!("w{i}"), &script))
      .collect::<Vec<_>>()
      .into();
    let before = rss_kib();
    let pool = IsolatePool::new(configs, ctx.clone(), count, Default::default());
    for i in 0..count {
      request(&pool, i).await;
    }
    let after = rss_kib();
    let per_isolate = after.saturating_sub(before) / count as u64;
    // What each takes of the pointer cage (committed heap pages).
    let heap_per_isolate = pool.memory().heap_committed as u64 / 1024 / count as u64;
    drop(pool);

    let isolate_p50 = percentile(&created, 0.5);
    let isolate_p99 = percentile(&created, 0.99);
    let isolate_cpu_p50 = percentile(&created_cpu, 0.5);
    let cold_p50 = percentile(&cold, 0.5);
    let request_isolate_p50 = percentile(&per_request, 0.5);
    println!("isolate creation from the snapshot ({count}): p50 {isolate_p50} us, p99 {isolate_p99} us (CPU time: p50 {isolate_cpu_p50} us)");
    println!("fresh realm in a warm isolate ({count}): p50 {context_p50} us, p99 {context_p99} us (CPU time: p50 {context_cpu_p50} us)");
    println!("cold worker, first request end to end ({rounds}): p50 {cold_p50} us");
    println!(
      "isolation = \"request\", whole request in a fresh realm ({rounds}): p50 {request_isolate_p50} us"
    );
    println!("RSS per warm hello worker ({count} alive): {per_isolate} KiB; V8 heap committed: {heap_per_isolate} KiB");
    println!(
      "{{\"isolates\": {count}, \"isolate_p50_us\": {isolate_p50}, \"isolate_p99_us\": {isolate_p99}, \"isolate_cpu_p50_us\": {isolate_cpu_p50}, \"context_p50_us\": {context_p50}, \"context_p99_us\": {context_p99}, \"context_cpu_p50_us\": {context_cpu_p50}, \"request_isolated_p50_us\": {request_isolate_p50}, \"cold_first_request_p50_us\": {cold_p50}, \"rss_per_isolate_kib\": {per_isolate}, \"heap_committed_per_isolate_kib\": {heap_per_isolate}}}"
    );
  });
}
