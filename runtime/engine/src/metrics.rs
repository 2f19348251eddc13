//! What `--admin`'s `/metrics` reports. Counters are kept per server thread
//! and written only by that thread, so an update on the request path is a
//! plain load and store of an uncontended cache line (no lock, no atomic
//! read-modify-write); a scrape sums the threads and encodes the result in
//! Prometheus' text format with prometheus-client.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use runtime_ext::quota::{Quota, WorkerQuotas};

/// Upper bounds of the latency histogram's buckets, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// The same bounds in microseconds, for the request path (no floats).
const LATENCY_BUCKETS_US: [u64; 14] = [
  500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
  2_500_000, 5_000_000, 10_000_000,
];

/// How a request ended, for the counters and the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Outcome {
  /// The handler answered (whatever the status).
  #[default]
  Ok,
  /// The handler threw or rejected (a 500).
  Exception,
  /// A limit stopped the worker's isolate (CPU, memory, start-up: a 503).
  Limit,
}

impl Outcome {
  pub fn as_str(self) -> &'static str {
    match self {
      Outcome::Ok => "ok",
      Outcome::Exception => "exception",
      Outcome::Limit => "limit",
    }
  }
}

/// Adds to a counter only its own thread writes.
fn bump(counter: &AtomicU64, by: u64) {
  counter.store(counter.load(Ordering::Relaxed) + by, Ordering::Relaxed);
}

fn read(counter: &AtomicU64) -> u64 {
  counter.load(Ordering::Relaxed)
}

/// One worker's counters on one thread.
#[derive(Default)]
struct WorkerCounters {
  /// Responses by status class: 1xx to 5xx.
  by_status: [AtomicU64; 5],
  /// Requests by the first bucket their time to response head fits in; the
  /// last slot is +Inf.
  latency: [AtomicU64; LATENCY_BUCKETS.len() + 1],
  latency_sum_ns: AtomicU64,
  exceptions: AtomicU64,
  limit_stops: AtomicU64,
}

/// One server thread's counters and gauges.
pub struct ThreadMetrics {
  /// The thread's CPU clock, read by the scrape from the admin thread.
  cpu_clock: libc::clockid_t,
  workers: Box<[WorkerCounters]>,
  isolates_created: AtomicU64,
  isolates_evicted: AtomicU64,
  spare_misses: AtomicU64,
  realms_reset: AtomicU64,
  /// Gauges the thread refreshes on a tick (they need its isolates).
  isolates_alive: AtomicU64,
  heap_used_bytes: AtomicU64,
  heap_committed_bytes: AtomicU64,
}

impl ThreadMetrics {
  /// Counts a response of worker `worker` (an index of the config).
  pub fn record(&self, worker: usize, status: u16, latency: Duration, outcome: Outcome) {
    let Some(counters) = self.workers.get(worker) else {
      return;
    };
    let class = usize::from(status / 100).clamp(1, 5) - 1;
    bump(&counters.by_status[class], 1);
    let ns = latency.as_nanos() as u64;
    // Most requests stop at the first bucket or two.
    let bucket = LATENCY_BUCKETS_US
      .iter()
      .position(|&le| ns <= le * 1_000)
      .unwrap_or(LATENCY_BUCKETS_US.len());
    bump(&counters.latency[bucket], 1);
    bump(&counters.latency_sum_ns, ns);
    match outcome {
      Outcome::Ok => {}
      Outcome::Exception => bump(&counters.exceptions, 1),
      Outcome::Limit => bump(&counters.limit_stops, 1),
    }
  }

  /// The thread's isolates as last measured: how many, and their memory.
  pub fn set_isolates(&self, alive: usize, heap_used: usize, heap_committed: usize) {
    self.isolates_alive.store(alive as u64, Ordering::Relaxed);
    self
      .heap_used_bytes
      .store(heap_used as u64, Ordering::Relaxed);
    self
      .heap_committed_bytes
      .store(heap_committed as u64, Ordering::Relaxed);
  }
}

/// Events counted where no `ThreadMetrics` is at hand (the isolate code),
/// through the thread's own.
#[derive(Debug, Clone, Copy)]
pub enum Event {
  IsolateCreated,
  IsolateEvicted,
  /// A new worker found no spare isolate ready and waited for one.
  SpareMiss,
  /// `isolation = "request"`: an isolate was given a fresh realm for the
  /// next request instead of being dropped.
  RealmReset,
}

thread_local! {
  static CURRENT: RefCell<Option<Arc<ThreadMetrics>>> = const { RefCell::new(None) };
}

/// Counts `event` for this thread (nothing on a thread that is not a
/// server thread, such as start-up validation's).
pub fn count(event: Event) {
  CURRENT.with(|current| {
    if let Some(metrics) = &*current.borrow() {
      bump(
        match event {
          Event::IsolateCreated => &metrics.isolates_created,
          Event::IsolateEvicted => &metrics.isolates_evicted,
          Event::SpareMiss => &metrics.spare_misses,
          Event::RealmReset => &metrics.realms_reset,
        },
        1,
      );
    }
  });
}

/// The process's metrics: the worker names (labels) and every server
/// thread's counters; also the readiness `/readyz` reports.
pub struct Metrics {
  workers: Vec<String>,
  /// Each worker's quotas (their refusals are counted there).
  quotas: Vec<Arc<WorkerQuotas>>,
  threads: Mutex<Vec<(usize, Arc<ThreadMetrics>)>>,
  ready: AtomicBool,
}

impl std::fmt::Debug for Metrics {
  fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    f.debug_struct("Metrics")
      .field("workers", &self.workers)
      .finish_non_exhaustive()
  }
}

impl Metrics {
  /// `workers`: each worker's name and quotas, in config order.
  pub fn new(workers: Vec<(String, Arc<WorkerQuotas>)>) -> Arc<Self> {
    let (workers, quotas) = workers.into_iter().unzip();
    Arc::new(Self {
      workers,
      quotas,
      threads: Mutex::new(Vec::new()),
      ready: AtomicBool::new(false),
    })
  }

  /// Counters for the calling server thread (`index` labels its CPU time);
  /// also what [`count`] reaches on it.
  pub fn register_thread(&self, index: usize) -> Arc<ThreadMetrics> {
    let thread = Arc::new(ThreadMetrics {
      cpu_clock: crate::limits::current_thread_cpu_clock(),
      workers: self
        .workers
        .iter()
        .map(|_| WorkerCounters::default())
        .collect(),
      isolates_created: AtomicU64::new(0),
      isolates_evicted: AtomicU64::new(0),
      spare_misses: AtomicU64::new(0),
      realms_reset: AtomicU64::new(0),
      isolates_alive: AtomicU64::new(0),
      heap_used_bytes: AtomicU64::new(0),
      heap_committed_bytes: AtomicU64::new(0),
    });
    self.threads.lock().unwrap().push((index, thread.clone()));
    CURRENT.with(|current| *current.borrow_mut() = Some(thread.clone()));
    thread
  }

  /// Every worker loaded and every thread listening (or, `false`, shutting
  /// down).
  pub fn set_ready(&self, ready: bool) {
    self.ready.store(ready, Ordering::Release);
  }

  pub fn is_ready(&self) -> bool {
    self.ready.load(Ordering::Acquire)
  }

  /// The Prometheus text exposition of everything above.
  pub fn encode(self: &Arc<Self>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(self.clone()));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
      .expect("writing to a String");
    out
  }
}

type Labels = Vec<(&'static str, String)>;

impl Collector for Metrics {
  fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let threads = self.threads.lock().unwrap().clone();
    let sum = |f: &dyn Fn(&ThreadMetrics) -> u64| threads.iter().map(|(_, t)| f(t)).sum::<u64>();
    let per_worker = |w: usize, f: &dyn Fn(&WorkerCounters) -> u64| {
      threads.iter().map(|(_, t)| f(&t.workers[w])).sum::<u64>()
    };

    let mut family = encoder.encode_descriptor(
      "runtime_requests",
      "Responses by worker and status class.",
      None,
      MetricType::Counter,
    )?;
    for (w, name) in self.workers.iter().enumerate() {
      for class in 0..5 {
        let labels: Labels = vec![
          ("worker", name.clone()),
          ("status", format!("{}xx", class + 1)),
        ];
        ConstCounter::new(per_worker(w, &|c| read(&c.by_status[class])))
          .encode(family.encode_family(&labels)?)?;
      }
    }

    let mut family = encoder.encode_descriptor(
      "runtime_request_duration_seconds",
      "Time from a request's head to its response's head, by worker.",
      None,
      MetricType::Histogram,
    )?;
    for (w, name) in self.workers.iter().enumerate() {
      // Per-bucket counts: the encoder makes them cumulative.
      let mut count = 0;
      let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len() + 1);
      for (i, le) in LATENCY_BUCKETS
        .iter()
        .copied()
        .chain([f64::INFINITY])
        .enumerate()
      {
        let in_bucket = per_worker(w, &|c| read(&c.latency[i]));
        count += in_bucket;
        buckets.push((le, in_bucket));
      }
      let sum_seconds = per_worker(w, &|c| read(&c.latency_sum_ns)) as f64 / 1e9;
      let labels: Labels = vec![("worker", name.clone())];
      family.encode_family(&labels)?.encode_histogram::<Labels>(
        sum_seconds,
        count,
        &buckets,
        None,
      )?;
    }

    for (metric, help, field) in [
      (
        "runtime_exceptions",
        "Requests whose handler threw or rejected (500), by worker.",
        (|c: &WorkerCounters| read(&c.exceptions)) as fn(&WorkerCounters) -> u64,
      ),
      (
        "runtime_limit_terminations",
        "Requests that a CPU, memory or start-up limit stopped (503), by worker.",
        |c: &WorkerCounters| read(&c.limit_stops),
      ),
    ] {
      let mut family = encoder.encode_descriptor(metric, help, None, MetricType::Counter)?;
      for (w, name) in self.workers.iter().enumerate() {
        let labels: Labels = vec![("worker", name.clone())];
        ConstCounter::new(per_worker(w, &|c| field(c))).encode(family.encode_family(&labels)?)?;
      }
    }

    let mut family = encoder.encode_descriptor(
      "runtime_quota_refusals",
      "Refusals of a worker's quotas (limits.concurrent_requests, websockets, subrequests_in_flight, pending_response_bytes).",
      None,
      MetricType::Counter,
    )?;
    for (name, quotas) in self.workers.iter().zip(&self.quotas) {
      for quota in Quota::ALL {
        let key = quota.key().trim_start_matches("limits.");
        let labels: Labels = vec![("worker", name.clone()), ("quota", key.to_string())];
        ConstCounter::new(quotas.refusals(quota) as u64).encode(family.encode_family(&labels)?)?;
      }
    }

    let mut family = encoder.encode_descriptor(
      "runtime_thread_cpu_seconds",
      "CPU time of each server thread (its isolates and its share of the server).",
      None,
      MetricType::Counter,
    )?;
    for (index, thread) in &threads {
      if let Some(ns) = crate::limits::clock_ns(thread.cpu_clock) {
        let labels: Labels = vec![("thread", index.to_string())];
        ConstCounter::new(ns as f64 / 1e9).encode(family.encode_family(&labels)?)?;
      }
    }

    for (metric, help, value) in [
      (
        "runtime_isolates_created",
        "Isolates made for workers.",
        sum(&|t| read(&t.isolates_created)),
      ),
      (
        "runtime_isolates_evicted",
        "Warm isolates evicted (least recently used, over max_isolates or the memory budget).",
        sum(&|t| read(&t.isolates_evicted)),
      ),
      (
        "runtime_spare_isolate_misses",
        "New workers that found no spare isolate ready and waited for one to be made.",
        sum(&|t| read(&t.spare_misses)),
      ),
      (
        "runtime_realms_reset",
        "Isolated requests' isolates given a fresh realm from the snapshot for the next request (isolation = \"request\").",
        sum(&|t| read(&t.realms_reset)),
      ),
    ] {
      ConstCounter::new(value).encode(encoder.encode_descriptor(
        metric,
        help,
        None,
        MetricType::Counter,
      )?)?;
    }
    for (metric, help, value) in [
      (
        "runtime_isolates_alive",
        "Warm isolates, as last measured (every second).",
        sum(&|t| read(&t.isolates_alive)),
      ),
      (
        "runtime_heap_used_bytes",
        "V8 heap and ArrayBuffer bytes used by the warm isolates, as last measured.",
        sum(&|t| read(&t.heap_used_bytes)),
      ),
      (
        "runtime_heap_committed_bytes",
        "V8 heap pages committed by the warm isolates, as last measured.",
        sum(&|t| read(&t.heap_committed_bytes)),
      ),
    ] {
      ConstGauge::new(value as i64).encode(encoder.encode_descriptor(
        metric,
        help,
        None,
        MetricType::Gauge,
      )?)?;
    }
    Ok(())
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn the_two_bucket_tables_agree() {
    for (s, us) in LATENCY_BUCKETS.iter().zip(LATENCY_BUCKETS_US) {
      assert_eq!((s * 1e6).round() as u64, us);
    }
  }

  #[test]
  fn counters_of_every_thread_are_summed_per_worker() {
    let quotas = || WorkerQuotas::new(Default::default());
    let metrics = Metrics::new(vec![("a".into(), quotas()), ("b".into(), quotas())]);
    let one = metrics.register_thread(0);
    let two = std::thread::scope(|s| {
      s.spawn(|| metrics.register_thread(1))
        .join()
        .expect("thread")
    });
    one.record(0, 200, Duration::from_micros(300), Outcome::Ok);
    two.record(0, 204, Duration::from_millis(3), Outcome::Ok);
    two.record(1, 503, Duration::from_millis(60), Outcome::Limit);
    count(Event::IsolateCreated);
    let text = metrics.encode();
    assert!(
      text.contains("runtime_requests_total{worker=\"a\",status=\"2xx\"} 2\n"),
      "{text}"
    );
    assert!(
      text.contains("runtime_requests_total{worker=\"b\",status=\"5xx\"} 1\n"),
      "{text}"
    );
    assert!(
      text.contains("runtime_request_duration_seconds_bucket{le=\"0.0005\",worker=\"a\"} 1\n")
        || text.contains("runtime_request_duration_seconds_bucket{worker=\"a\",le=\"0.0005\"} 1\n"),
      "{text}"
    );
    assert!(
      text.contains("runtime_request_duration_seconds_count{worker=\"a\"} 2\n"),
      "{text}"
    );
    assert!(
      text.contains("runtime_limit_terminations_total{worker=\"b\"} 1\n"),
      "{text}"
    );
    assert!(
      text.contains("runtime_isolates_created_total 1\n"),
      "{text}"
    );
    assert!(
      text.contains("runtime_quota_refusals_total{worker=\"b\",quota=\"websockets\"} 0\n"),
      "{text}"
    );
  }
}
