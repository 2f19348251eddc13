//! The warm workers of one server thread: created lazily from the snapshot
//! on a worker's first request, kept warm, and evicted least recently used
//! past the thread's share of `max_isolates`. An evicted or limit-stopped
//! worker comes back on its next request.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use runtime_ext::http::HandlerOutcome;
use rustc_hash::FxHashMap;
use tokio::sync::mpsc;

use crate::config::{Isolation, WorkerConfig};
use crate::worker::{
  FreshRealm, IncomingRequest, IsolateMemory, SharedWorker, Worker, WorkerContext,
};

/// What one thread's warm isolates may hold, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryBudget {
  /// Its share of `[engine] max_memory_mb`: used V8 heap plus ArrayBuffers.
  pub total: Option<usize>,
  /// Its share of the pointer cage: V8 heap pages committed (every isolate
  /// of the process allocates them from one 4 GiB cage; ArrayBuffers live
  /// outside it).
  pub heap: Option<usize>,
}

pub struct IsolatePool {
  workers: Rc<[WorkerConfig]>,
  ctx: WorkerContext,
  max_live: usize,
  memory_budget: MemoryBudget,
  /// Warm workers by index (FxHash: SipHash cost ~150 instructions per
  /// request here, and the keys are our own small integers).
  live: RefCell<FxHashMap<usize, LiveWorker>>,
  clock: Cell<u64>,
  running: Rc<Cell<usize>>,
  /// `isolation = "request"`: per worker, isolates whose last request is
  /// done, each with a fresh realm waiting for the next one.
  parked: Rc<ParkedWorkers>,
}

/// Parked isolates per worker. The realms an isolate replaced are garbage in
/// its old generation until V8's next full collection, which it puts off
/// until the heap has grown by tens of MiB (forcing one costs more: a
/// memory-reducing collection also flushes bytecode that every realm then
/// compiles again), so each parked isolate may hold 20-30 MiB: a worker
/// with many requests at once keeps this many, not one per request.
const PARKED_PER_WORKER: usize = 4;

/// Isolates of workers with `isolation = "request"` that served a request
/// and wait with a fresh realm for the next, by worker index: as many per
/// worker as its requests ran at once (a request's response leaves before
/// its isolate is parked, so the next one on the same connection takes
/// another) up to PARKED_PER_WORKER, and no more in all than the thread's
/// share of `max_isolates`. Past those, an isolate is dropped as before.
struct ParkedWorkers {
  workers: RefCell<FxHashMap<usize, Vec<FreshRealm>>>,
  count: Cell<usize>,
  max: usize,
}

impl ParkedWorkers {
  fn take(&self, index: usize) -> Option<FreshRealm> {
    let fresh = self.workers.borrow_mut().get_mut(&index)?.pop()?;
    self.count.set(self.count.get() - 1);
    Some(fresh)
  }

  /// Whether another isolate of worker `index` would be kept.
  fn has_room(&self, index: usize) -> bool {
    self.count.get() < self.max
      && self
        .workers
        .borrow()
        .get(&index)
        .is_none_or(|parked| parked.len() < PARKED_PER_WORKER)
  }

  fn park(&self, index: usize, fresh: FreshRealm) {
    if self.has_room(index) {
      self
        .workers
        .borrow_mut()
        .entry(index)
        .or_default()
        .push(fresh);
      self.count.set(self.count.get() + 1);
    }
  }
}

struct LiveWorker {
  /// Requests for the worker's task (while it loads, or is busy).
  requests: mpsc::UnboundedSender<IncomingRequest>,
  shared: Rc<SharedWorker>,
  last_used: u64,
  /// Its memory when last measured (it may be busy when measured again).
  memory: IsolateMemory,
  /// Under `runtime dev`, the version it was started for.
  generation: u64,
}

impl IsolatePool {
  pub fn new(
    workers: Rc<[WorkerConfig]>,
    ctx: WorkerContext,
    max_live: usize,
    memory_budget: MemoryBudget,
  ) -> Self {
    Self {
      workers,
      ctx,
      max_live: max_live.max(1),
      memory_budget,
      live: RefCell::new(FxHashMap::default()),
      clock: Cell::new(0),
      running: Rc::new(Cell::new(0)),
      parked: Rc::new(ParkedWorkers {
        workers: RefCell::default(),
        count: Cell::new(0),
        max: max_live.max(1),
      }),
    }
  }

  pub fn worker(&self, index: usize) -> &WorkerConfig {
    &self.workers[index]
  }

  /// Warm workers on this thread.
  pub fn live_count(&self) -> usize {
    self.live.borrow().len()
  }

  /// Worker tasks still running on this thread (warm, evicted but
  /// finishing, or serving one isolated request).
  pub fn running(&self) -> usize {
    self.running.get()
  }

  /// Closes every warm worker: each finishes its requests in flight and its
  /// `waitUntil` work, then stops.
  pub fn close_all(&self) {
    for (_, worker) in self.live.borrow_mut().drain() {
      worker.shared.let_go();
    }
  }

  fn spawn(
    &self,
    index: usize,
    shared: Rc<SharedWorker>,
    requests: mpsc::UnboundedReceiver<IncomingRequest>,
  ) {
    let running = RunningGuard::new(self.running.clone());
    // Under `runtime dev`, the config as last reloaded.
    let config = match self.workers[index]
      .dev
      .as_ref()
      .and_then(|dev| dev.config())
    {
      Some(reloaded) => (*reloaded).clone(),
      None => self.workers[index].clone(),
    };
    let ctx = self.ctx.clone();
    // An isolated request's isolate is reused in a fresh realm, but not
    // under `runtime dev` (versions) or an inspector (one context each).
    let reuse = (config.isolation == Isolation::Request
      && config.dev.is_none()
      && config.inspector.is_none())
    .then(|| Reuse {
      parked: self.parked.clone(),
      index,
      fresh: self.parked.take(index),
    });
    tokio::task::spawn_local(async move {
      let _running = running;
      run_worker(config, ctx, shared, requests, reuse).await;
    });
  }

  /// Starts worker `index` now, so its first request does not wait.
  pub fn prewarm(&self, index: usize) {
    if self.workers[index].isolation == Isolation::Isolate {
      let (tx, rx) = mpsc::unbounded_channel();
      self.start(index, tx, rx);
    }
  }

  /// Hands `request` to worker `index`, starting it if it is not warm.
  pub fn dispatch(&self, index: usize, request: IncomingRequest) {
    let config = &self.workers[index];
    if config.isolation == Isolation::Request {
      // A fresh isolate for this request alone; it ends when the request
      // and its waitUntil work are done.
      let (tx, rx) = mpsc::unbounded_channel();
      let _ = tx.send(request);
      self.spawn(index, Rc::default(), rx);
      return;
    }
    let now = self.clock.get() + 1;
    self.clock.set(now);
    let generation = config.dev.as_ref().map_or(0, |dev| dev.generation());
    let warm = {
      let mut live = self.live.borrow_mut();
      match live.get_mut(&index) {
        Some(worker) if !worker.shared.is_stopped() && worker.generation == generation => {
          worker.last_used = now;
          Some(worker.shared.clone())
        }
        // `runtime dev` loaded a new version: the old one finishes what it
        // has in flight.
        Some(worker) if !worker.shared.is_stopped() => {
          worker.shared.let_go();
          live.remove(&index);
          None
        }
        // The worker stopped (a limit, or it failed to start).
        Some(_) => {
          live.remove(&index);
          None
        }
        None => None,
      }
    };
    // The map is not borrowed while the handler runs.
    let request = match warm {
      Some(shared) => {
        let Some(request) = shared.try_dispatch(request) else {
          return;
        };
        // Loading, or its task is using the isolate: the task takes it.
        let mut live = self.live.borrow_mut();
        match live.get(&index).map(|w| w.requests.clone()) {
          Some(requests) => match requests.send(request) {
            Ok(()) => return,
            Err(mpsc::error::SendError(request)) => {
              live.remove(&index);
              request
            }
          },
          None => request,
        }
      }
      None => request,
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let _ = tx.send(request);
    self.start(index, tx, rx);
  }

  fn start(
    &self,
    index: usize,
    tx: mpsc::UnboundedSender<IncomingRequest>,
    rx: mpsc::UnboundedReceiver<IncomingRequest>,
  ) {
    let now = self.clock.get() + 1;
    self.clock.set(now);
    let shared = Rc::new(SharedWorker::default());
    let mut live = self.live.borrow_mut();
    live.insert(
      index,
      LiveWorker {
        requests: tx,
        shared: shared.clone(),
        last_used: now,
        memory: IsolateMemory::default(),
        generation: self.workers[index]
          .dev
          .as_ref()
          .map_or(0, |dev| dev.generation()),
      },
    );
    drop(live);
    self.spawn(index, shared, rx);
    let mut live = self.live.borrow_mut();
    while live.len() > self.max_live {
      // Workers holding WebSockets go last.
      let Some((&oldest, _)) = live
        .iter()
        .filter(|(&i, _)| i != index)
        .min_by_key(|(_, w)| (w.shared.open_sockets() > 0, w.last_used))
      else {
        break;
      };
      // Closing its channel lets the worker finish what it has in flight;
      // then its isolate is dropped.
      if let Some(evicted) = live.remove(&oldest) {
        evicted.shared.let_go();
        crate::metrics::count(crate::metrics::Event::IsolateEvicted);
      }
      tracing::debug!(worker = %self.workers[oldest].name, "evicted (least recently used)");
    }
  }
}

impl IsolatePool {
  /// What this thread's warm workers hold now, in sum (those in use as last
  /// measured).
  pub fn memory(&self) -> IsolateMemory {
    let mut live = self.live.borrow_mut();
    live
      .values_mut()
      .fold(IsolateMemory::default(), |sum, worker| {
        if let Some(memory) = worker.shared.memory() {
          worker.memory = memory;
        }
        IsolateMemory {
          total: sum.total + worker.memory.total,
          heap_committed: sum.heap_committed + worker.memory.heap_committed,
        }
      })
  }

  /// Keeps the warm workers' memory within the thread's budgets (V8 heaps
  /// and ArrayBuffers within `max_memory_mb`, heap pages within the cage):
  /// past either, the least recently used are evicted (they finish what
  /// they have in flight, then their isolates are dropped). The most
  /// recently used one always stays.
  pub fn enforce_memory_budget(&self) {
    let budget = self.memory_budget;
    if budget.total.is_none() && budget.heap.is_none() {
      return;
    }
    let mut live = self.live.borrow_mut();
    let mut usage: Vec<(usize, u64, IsolateMemory, bool)> = live
      .iter_mut()
      .map(|(&index, worker)| {
        if let Some(memory) = worker.shared.memory() {
          worker.memory = memory;
        }
        (
          index,
          worker.last_used,
          worker.memory,
          worker.shared.open_sockets() > 0,
        )
      })
      .collect();
    let mut total: usize = usage.iter().map(|(_, _, m, _)| m.total).sum();
    let mut heap: usize = usage.iter().map(|(_, _, m, _)| m.heap_committed).sum();
    let over = |total: usize, heap: usize| {
      if budget.total.is_some_and(|b| total > b) {
        Some(("max_memory_mb", total, budget.total.unwrap_or(0)))
      } else if budget.heap.is_some_and(|b| heap > b) {
        Some(("the heap cage", heap, budget.heap.unwrap_or(0)))
      } else {
        None
      }
    };
    if over(total, heap).is_none() {
      return;
    }
    // Least recently used first, those holding WebSockets last.
    usage.sort_by_key(|&(_, last_used, _, sockets)| (sockets, last_used));
    for (index, _, memory, _) in usage {
      let Some((what, held, share)) = over(total, heap) else {
        break;
      };
      if live.len() <= 1 {
        break;
      }
      if let Some(evicted) = live.remove(&index) {
        evicted.shared.let_go();
        crate::metrics::count(crate::metrics::Event::IsolateEvicted);
      }
      tracing::info!(
        worker = %self.workers[index].name,
        "evicted (least recently used): warm isolates held {} MiB, over this thread's {} MiB share of {what}",
        held >> 20,
        share >> 20
      );
      total -= memory.total;
      heap -= memory.heap_committed;
    }
  }
}

/// An isolated request's worker: the one parked for it, if any, and where
/// its isolate goes once the request is done.
struct Reuse {
  parked: Rc<ParkedWorkers>,
  index: usize,
  fresh: Option<FreshRealm>,
}

/// Loads a worker (into the fresh realm parked for it, if any) and serves
/// `requests` until the channel closes or a limit stops it; with `reuse`,
/// then gives its isolate a fresh realm and parks it.
async fn run_worker(
  config: WorkerConfig,
  ctx: WorkerContext,
  shared: Rc<SharedWorker>,
  mut requests: mpsc::UnboundedReceiver<IncomingRequest>,
  mut reuse: Option<Reuse>,
) {
  let loaded = match reuse.as_mut().and_then(|r| r.fresh.take()) {
    Some(fresh) => fresh.load(&config).await,
    None => Worker::load(&config, &ctx).await,
  };
  match loaded {
    Ok(worker) => {
      shared.install(worker);
      let served = Worker::serve(&shared, requests).await;
      if let (Some(worker), Some(reuse)) = (served, reuse) {
        if !reuse.parked.has_room(reuse.index) {
          return;
        }
        match worker.into_fresh_realm() {
          Ok(fresh) => reuse.parked.park(reuse.index, fresh),
          Err(error) => {
            tracing::debug!(worker = %config.name, "isolate not reused: {error:#}");
          }
        }
      }
    }
    Err(error) => {
      tracing::error!(worker = %config.name, "failed to start: {error:#}");
      shared.stop();
      requests.close();
      while let Ok(request) = requests.try_recv() {
        let _ = request.respond.send(HandlerOutcome::Unavailable(format!(
          "worker {:?} failed to start",
          config.name
        )));
      }
    }
  }
}

/// Counts a worker task while it lives.
struct RunningGuard(Rc<Cell<usize>>);

impl RunningGuard {
  fn new(count: Rc<Cell<usize>>) -> Self {
    count.set(count.get() + 1);
    Self(count)
  }
}

impl Drop for RunningGuard {
  fn drop(&mut self) {
    self.0.set(self.0.get() - 1);
  }
}
