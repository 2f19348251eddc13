//! The CPU-time limit: a watchdog thread samples the CPU clock of every
//! isolate thread and terminates JavaScript that has run past its budget
//! without yielding.
//!
//! The request path pays nothing but two atomic increments per slice of
//! JavaScript: the watchdog, not the isolate thread, reads the clocks
//! (`CLOCK_THREAD_CPUTIME_ID` of the other thread, through
//! `pthread_getcpuclockid`), so a limit is enforced within one tick of it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::Duration;

use deno_core::v8;

/// How often the watchdog samples the clocks.
const TICK: Duration = Duration::from_millis(2);
/// Ticks with no JavaScript at all (about 50 ms) after which it parks.
const QUIET_TICKS_BEFORE_PARKING: u32 = 25;

/// One isolate thread as the watchdog sees it.
pub struct CpuSlot {
  clock: libc::clockid_t,
  /// Odd while JavaScript runs; each slice gets a new odd number.
  generation: AtomicU64,
  budget_ns: AtomicU64,
  isolate: Mutex<Option<v8::IsolateHandle>>,
  fired: AtomicBool,
}

/// Registry of the slots the watchdog thread samples.
struct Watchdog {
  slots: Mutex<Vec<Weak<CpuSlot>>>,
  /// Set while the watchdog is parked (or about to park): a slice that
  /// begins then wakes it through `wake`, under `park`.
  parked: AtomicBool,
  park: Mutex<()>,
  wake: Condvar,
}

fn watchdog() -> &'static Watchdog {
  static WATCHDOG: OnceLock<&'static Watchdog> = OnceLock::new();
  WATCHDOG.get_or_init(|| {
    let dog: &'static Watchdog = Box::leak(Box::new(Watchdog {
      slots: Mutex::new(Vec::new()),
      parked: AtomicBool::new(false),
      park: Mutex::new(()),
      wake: Condvar::new(),
    }));
    std::thread::Builder::new()
      .name("cpu-watchdog".into())
      .spawn(move || dog.run())
      .expect("spawning the CPU watchdog");
    dog
  })
}

/// The calling thread's CPU clock, readable from other threads.
pub fn current_thread_cpu_clock() -> libc::clockid_t {
  let mut clock: libc::clockid_t = 0;
  // SAFETY: pthread_self() is always valid for the calling thread.
  let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
  assert_eq!(rc, 0, "pthread_getcpuclockid failed");
  clock
}

/// Nanoseconds on `clock` (a thread's CPU clock, or a system clock such as
/// `CLOCK_MONOTONIC_COARSE`); none if the clock is gone (a thread that ended).
pub fn clock_ns(clock: libc::clockid_t) -> Option<u64> {
  let mut ts = libc::timespec {
    tv_sec: 0,
    tv_nsec: 0,
  };
  // SAFETY: `ts` is a valid out-pointer; a stale clock id only yields EINVAL.
  let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
  (rc == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

impl Watchdog {
  fn run(&self) {
    // Per slot: (generation seen at the last tick, CPU clock then, CPU used by
    // the slice so far).
    let mut seen: Vec<(Weak<CpuSlot>, u64, u64, u64)> = Vec::new();
    let mut quiet_ticks = 0;
    loop {
      if quiet_ticks >= QUIET_TICKS_BEFORE_PARKING {
        self.park_until_a_slice_begins(&seen);
        quiet_ticks = 0;
      }
      std::thread::sleep(TICK);
      {
        let mut slots = self.slots.lock().unwrap();
        slots.retain(|s| s.strong_count() > 0);
        seen.retain(|(s, ..)| s.strong_count() > 0);
        for slot in slots.iter() {
          if !seen.iter().any(|(s, ..)| s.ptr_eq(slot)) {
            seen.push((slot.clone(), 0, 0, 0));
          }
        }
      }
      quiet_ticks += 1;
      for (weak, last_generation, last_cpu, used) in seen.iter_mut() {
        let Some(slot) = weak.upgrade() else { continue };
        let generation = slot.generation.load(Ordering::Acquire);
        if generation != *last_generation || generation % 2 == 1 {
          quiet_ticks = 0;
        }
        let Some(now) = clock_ns(slot.clock) else {
          continue;
        };
        if generation % 2 == 1 && generation == *last_generation {
          *used += now.saturating_sub(*last_cpu);
          if *used > slot.budget_ns.load(Ordering::Relaxed) {
            // Under the lock the slice cannot end or change under us.
            let isolate = slot.isolate.lock().unwrap();
            if slot.generation.load(Ordering::Acquire) == generation
              && !slot.fired.swap(true, Ordering::AcqRel)
            {
              if let Some(isolate) = isolate.as_ref() {
                isolate.terminate_execution();
              }
            }
          }
        } else {
          // A new slice (or none): start counting from here.
          *used = 0;
        }
        *last_generation = generation;
        *last_cpu = now;
      }
    }
  }

  /// Parks while no slot's generation moves from what the last tick saw.
  /// Paired with `CpuSlot::begin` (Dekker style, both sequentially
  /// consistent): it bumps a generation, then reads `parked`; this sets
  /// `parked`, then reads the generations; one of them sees the other.
  fn park_until_a_slice_begins(&self, seen: &[(Weak<CpuSlot>, u64, u64, u64)]) {
    let mut guard = self.park.lock().unwrap();
    self.parked.store(true, Ordering::SeqCst);
    let moved = || {
      seen.iter().any(|(weak, last_generation, ..)| {
        weak
          .upgrade()
          .is_some_and(|slot| slot.generation.load(Ordering::SeqCst) != *last_generation)
      })
    };
    // New threads register new slots; their first slice wakes us as well.
    while !moved() {
      guard = self.wake.wait(guard).unwrap();
      if !self.parked.load(Ordering::SeqCst) {
        break;
      }
    }
    self.parked.store(false, Ordering::SeqCst);
  }

  fn wake_if_parked(&self) {
    if self.parked.load(Ordering::SeqCst) {
      let _guard = self.park.lock().unwrap();
      self.parked.store(false, Ordering::SeqCst);
      self.wake.notify_one();
    }
  }
}

impl CpuSlot {
  /// Registers the calling thread with the watchdog.
  pub fn for_current_thread() -> Arc<CpuSlot> {
    let clock = current_thread_cpu_clock();
    let slot = Arc::new(CpuSlot {
      clock,
      generation: AtomicU64::new(0),
      budget_ns: AtomicU64::new(u64::MAX),
      isolate: Mutex::new(None),
      fired: AtomicBool::new(false),
    });
    watchdog().slots.lock().unwrap().push(Arc::downgrade(&slot));
    slot
  }

  /// CPU time the registered thread has used so far (read on that thread).
  pub fn thread_cpu(&self) -> Duration {
    Duration::from_nanos(clock_ns(self.clock).unwrap_or(0))
  }

  /// JavaScript of `isolate` starts running on this thread; it may use
  /// `budget` of CPU before the watchdog terminates it.
  pub fn begin(&self, isolate: &v8::IsolateHandle, budget: Duration) -> SliceGuard<'_> {
    let mut current = self.isolate.lock().unwrap();
    *current = Some(isolate.clone());
    self.budget_ns.store(
      budget.as_nanos().min(u64::MAX as u128) as u64,
      Ordering::Relaxed,
    );
    self.fired.store(false, Ordering::Release);
    self.generation.fetch_add(1, Ordering::SeqCst);
    drop(current);
    watchdog().wake_if_parked();
    SliceGuard { slot: self }
  }
}

/// Ends the slice when dropped; tells whether the watchdog fired during it.
pub struct SliceGuard<'a> {
  slot: &'a CpuSlot,
}

impl SliceGuard<'_> {
  pub fn fired(&self) -> bool {
    self.slot.fired.load(Ordering::Acquire)
  }
}

impl Drop for SliceGuard<'_> {
  fn drop(&mut self) {
    let mut current = self.slot.isolate.lock().unwrap();
    self.slot.generation.fetch_add(1, Ordering::AcqRel);
    *current = None;
  }
}

/// ArrayBuffer memory of one isolate, counted against its memory limit: an
/// allocation past the budget fails, stops the script and marks the isolate
/// for recycling, as running out of heap does.
pub struct ArrayBufferBudget {
  limit: usize,
  used: std::sync::atomic::AtomicUsize,
  exceeded: AtomicBool,
  isolate: OnceLock<v8::IsolateHandle>,
}

impl ArrayBufferBudget {
  /// A V8 allocator drawing on a new budget of `limit` bytes.
  pub fn allocator(limit: usize) -> (Arc<Self>, v8::UniqueRef<v8::Allocator>) {
    let budget = Arc::new(Self {
      limit,
      used: Default::default(),
      exceeded: AtomicBool::new(false),
      isolate: OnceLock::new(),
    });
    let handle = Arc::into_raw(budget.clone());
    // SAFETY: `handle` is a leaked Arc that the vtable's `drop` releases.
    let allocator = unsafe { v8::new_rust_allocator(handle, &BUDGET_VTABLE) };
    (budget, allocator)
  }

  /// The isolate to stop when the budget is exceeded.
  pub fn watch(&self, isolate: v8::IsolateHandle) {
    let _ = self.isolate.set(isolate);
  }

  pub fn exceeded(&self) -> bool {
    self.exceeded.load(Ordering::Acquire)
  }

  /// Bytes of ArrayBuffer memory held now.
  pub fn used(&self) -> usize {
    self.used.load(Ordering::Acquire)
  }

  fn reserve(&self, len: usize) -> bool {
    let used = self.used.fetch_add(len, Ordering::AcqRel) + len;
    if used <= self.limit {
      return true;
    }
    self.used.fetch_sub(len, Ordering::AcqRel);
    if !self.exceeded.swap(true, Ordering::AcqRel) {
      if let Some(isolate) = self.isolate.get() {
        isolate.terminate_execution();
      }
    }
    false
  }
}

static BUDGET_VTABLE: v8::RustAllocatorVtable<ArrayBufferBudget> = v8::RustAllocatorVtable {
  allocate: budget_allocate,
  allocate_uninitialized: budget_allocate_uninitialized,
  free: budget_free,
  drop: budget_drop,
};

unsafe extern "C" fn budget_allocate(
  budget: &ArrayBufferBudget,
  len: usize,
) -> *mut std::ffi::c_void {
  if !budget.reserve(len) {
    return std::ptr::null_mut();
  }
  // SAFETY: plain C allocation, released in `budget_free`.
  unsafe { libc::calloc(len.max(1), 1) }
}

unsafe extern "C" fn budget_allocate_uninitialized(
  budget: &ArrayBufferBudget,
  len: usize,
) -> *mut std::ffi::c_void {
  if !budget.reserve(len) {
    return std::ptr::null_mut();
  }
  // SAFETY: plain C allocation, released in `budget_free`.
  unsafe { libc::malloc(len.max(1)) }
}

unsafe extern "C" fn budget_free(
  budget: &ArrayBufferBudget,
  data: *mut std::ffi::c_void,
  len: usize,
) {
  budget.used.fetch_sub(len, Ordering::AcqRel);
  // SAFETY: `data` came from `budget_allocate*`.
  unsafe { libc::free(data) }
}

unsafe extern "C" fn budget_drop(budget: *const ArrayBufferBudget) {
  // SAFETY: the pointer is the Arc leaked in `allocator`.
  drop(unsafe { Arc::from_raw(budget) });
}
