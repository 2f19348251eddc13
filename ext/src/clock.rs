//! The clocks a script reads: `Date.now()` (and `new Date()`) and
//! `performance.now()`.
//!
//! With coarse time on (a worker of a config file, by default), both return
//! the time of the last I/O event the isolate saw, as Workers does: the
//! engine calls [`IsolateClock::tick`] before each turn of the isolate (a
//! request arriving, a fetch completing, a timer firing), and the clock does
//! not move while JavaScript runs. A script can then not time its own code,
//! or another tenant's, finely enough for Spectre-class attacks, while
//! timers, `setTimeout` ordering and `performance.timeOrigin` keep working.
//!
//! `performance.now()` goes through deno_web's `op_now`, replaced by the one
//! here (see `crate::replace_web_ops`); `Date` is wrapped in JavaScript (`js/03_date.js`)
//! to read `op_date_now`, since V8 reads the system clock itself.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use deno_core::{op2, OpState};
use deno_web::StartTime;

/// An isolate's frozen clock; in its `OpState` when coarse time is on.
#[derive(Debug)]
pub struct IsolateClock {
  /// The monotonic time of the last tick (for `performance.now()`).
  instant: Cell<Instant>,
  /// The wall-clock time of the last tick, in whole ms since the epoch.
  epoch_ms: Cell<f64>,
}

impl IsolateClock {
  /// A clock showing the time now; `tick` moves it on.
  pub fn new() -> Rc<Self> {
    let clock = Rc::new(Self {
      instant: Cell::new(Instant::now()),
      epoch_ms: Cell::new(0.0),
    });
    clock.tick();
    clock
  }

  /// Sets the clock to now: called by the engine at each I/O event, before
  /// JavaScript runs.
  pub fn tick(&self) {
    self.instant.set(Instant::now());
    self.epoch_ms.set(wall_ms());
  }
}

fn wall_ms() -> f64 {
  SystemTime::now()
    .duration_since(UNIX_EPOCH)
    .map_or(0.0, |d| d.as_millis() as f64)
}

/// Writes `duration` as deno_web's JavaScript reads it: seconds and
/// nanoseconds, two u32 in native order.
fn expose_time(duration: Duration, out: &mut [u8]) {
  if out.len() >= 8 {
    out[0..4].copy_from_slice(&(duration.as_secs() as u32).to_ne_bytes());
    out[4..8].copy_from_slice(&duration.subsec_nanos().to_ne_bytes());
  }
}

/// `performance.now()`: time since the isolate started; with coarse time,
/// as of the last tick and in whole milliseconds.
#[op2(fast)]
pub fn op_now(state: &mut OpState, #[buffer] buf: &mut [u8]) {
  let start = **state.borrow::<StartTime>();
  let elapsed = match state.try_borrow::<Rc<IsolateClock>>() {
    Some(clock) => {
      let elapsed = clock.instant.get().saturating_duration_since(start);
      Duration::from_millis(elapsed.as_millis() as u64)
    }
    None => start.elapsed(),
  };
  expose_time(elapsed, buf);
}

/// `Date.now()`: ms since the epoch; with coarse time, as of the last tick.
#[op2(fast)]
pub fn op_date_now(state: &mut OpState) -> f64 {
  match state.try_borrow::<Rc<IsolateClock>>() {
    Some(clock) => clock.epoch_ms.get(),
    None => wall_ms(),
  }
}
