//! `bench/isolates`: creates isolates from the startup snapshot, one after
//! another on one thread, and reports creation time percentiles. The last
//! line of output is one JSON object.

use std::rc::Rc;
use std::time::Instant;

use runtime::loader::ScriptLoader;
use runtime::worker::new_isolate;

fn percentile(sorted: &[u128], p: f64) -> u128 {
  let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
  sorted[i]
}

fn main() {
  let count: usize = std::env::args()
    .nth(1)
    .and_then(|n| n.parse().ok())
    .unwrap_or(1000);
  let rt = tokio::runtime::Builder::new_current_thread()
    .enable_all()
    .build()
    .unwrap();
  let _guard = rt.enter();
  if let Ok(flags) = std::env::var("BENCH_V8_FLAGS") {
    deno_core::v8::V8::set_flags_from_string(&flags);
  }
  // The first isolate pays for V8's platform start-up; it is not counted.
  drop(new_isolate(Rc::new(ScriptLoader::new("/".into())), "warmup").unwrap());
  let mut times = Vec::with_capacity(count);
  for _ in 0..count {
    let start = Instant::now();
    let isolate = new_isolate(Rc::new(ScriptLoader::new("/".into())), "bench").unwrap();
    times.push(start.elapsed().as_micros());
    drop(isolate);
  }
  times.sort_unstable();
  if std::env::var_os("BENCH_PHASES").is_some() {
    let mut bare = Vec::new();
    for _ in 0..count {
      let start = Instant::now();
      let rt = deno_core::JsRuntime::new(deno_core::RuntimeOptions {
        startup_snapshot: Some(runtime_snapshots::RUNTIME_SNAPSHOT),
        extensions: runtime_ext::extensions(),
        ..Default::default()
      });
      bare.push(start.elapsed().as_micros());
      drop(rt);
    }
    bare.sort_unstable();
    println!("bare JsRuntime::new p50: {} us", percentile(&bare, 0.5));
    let mut raw = Vec::new();
    for _ in 0..count {
      let start = Instant::now();
      let mut isolate = deno_core::v8::Isolate::new(Default::default());
      {
        deno_core::v8::scope!(let scope, &mut isolate);
        let _ctx = deno_core::v8::Context::new(scope, Default::default());
      }
      raw.push(start.elapsed().as_micros());
      drop(isolate);
    }
    raw.sort_unstable();
    println!("raw v8 isolate+context p50: {} us", percentile(&raw, 0.5));
  }
  let p50 = percentile(&times, 0.5);
  let p99 = percentile(&times, 0.99);
  println!("isolates created: {count}");
  println!("creation p50: {p50} us, p99: {p99} us");
  println!("{{\"isolates\": {count}, \"isolate_p50_us\": {p50}, \"isolate_p99_us\": {p99}}}");
}
