//! A timer for hyper's header-read timeout that costs next to nothing on
//! the request path.
//!
//! hyper arms the header-read timeout anew for every request head it waits
//! for; with tokio's timer that is a timer-wheel entry made and cleared per
//! request, about a twentieth of a hello-world request's CPU. The timeout
//! only has to be roughly right (a client that has not sent its head within
//! 10 s is dropped, at 10 or 11 s), so a sleep here is a deadline plus a
//! slot in a thread-local list, and one sweeper task per thread wakes the
//! expired ones once per `SWEEP`.
//!
//! A sleep belongs to the thread that made it: hyper connections never leave
//! their thread in this server (shared-nothing threads).
//!
//! For the same reason the timer's clock is coarse too: hyper asks it for
//! the time once per request head, and a first poll compares against it, so
//! both read the time the sweeper last noted (at most one `SWEEP` old)
//! instead of reading the clock, about 1% of a hello-world request's CPU.
//! A deadline may then come up to one `SWEEP` early, as it may come one
//! late.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use slab::Slab;

/// How often expired sleeps are looked for: the timeout's resolution.
const SWEEP: Duration = Duration::from_millis(500);

thread_local! {
  /// Sleeps that were polled before their deadline: who to wake, when.
  static WAITING: RefCell<Slab<(Instant, Waker)>> = const { RefCell::new(Slab::new()) };
  /// The time as the sweeper last noted it; none before it first ran.
  static NOW: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The time at most one `SWEEP` ago on a thread that runs [`sweep`], else
/// the time now.
fn coarse_now() -> Instant {
  NOW.with(Cell::get).unwrap_or_else(Instant::now)
}

/// hyper's `Timer` for HTTP/1 connections; run [`sweep`] on every thread
/// that serves them.
#[derive(Clone, Copy, Debug, Default)]
pub struct CoarseTimer;

impl hyper::rt::Timer for CoarseTimer {
  fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
    self.sleep_until(coarse_now() + duration)
  }

  fn now(&self) -> Instant {
    coarse_now()
  }

  fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
    Box::pin(CoarseSleep {
      deadline,
      slot: None,
    })
  }

  fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
    *sleep = self.sleep_until(new_deadline);
  }
}

struct CoarseSleep {
  deadline: Instant,
  /// Its entry in `WAITING`, once polled.
  slot: Option<usize>,
}

impl CoarseSleep {
  fn forget(&mut self) {
    if let Some(slot) = self.slot.take() {
      WAITING.with(|w| {
        w.borrow_mut().try_remove(slot);
      });
    }
  }
}

impl Future for CoarseSleep {
  type Output = ();

  fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
    if coarse_now() >= self.deadline {
      self.forget();
      return Poll::Ready(());
    }
    let deadline = self.deadline;
    let slot = self.slot;
    let slot = WAITING.with(|w| {
      let mut waiting = w.borrow_mut();
      match slot.and_then(|s| waiting.get_mut(s).map(|entry| (s, entry))) {
        Some((s, (_, waker))) => {
          if !waker.will_wake(cx.waker()) {
            *waker = cx.waker().clone();
          }
          s
        }
        None => waiting.insert((deadline, cx.waker().clone())),
      }
    });
    self.slot = Some(slot);
    Poll::Pending
  }
}

impl Drop for CoarseSleep {
  fn drop(&mut self) {
    self.forget();
  }
}

impl hyper::rt::Sleep for CoarseSleep {}

/// Wakes this thread's sleeps whose deadline passed (each then completes
/// when its connection polls it); runs for as long as the thread serves.
pub async fn sweep() {
  let mut tick = tokio::time::interval(SWEEP);
  tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
  loop {
    tick.tick().await;
    let now = Instant::now();
    NOW.with(|n| n.set(Some(now)));
    let expired: Vec<Waker> = WAITING.with(|w| {
      w.borrow()
        .iter()
        .filter(|(_, (deadline, _))| *deadline <= now)
        .map(|(_, (_, waker))| waker.clone())
        .collect()
    });
    // Woken outside the borrow: a woken task may poll (and drop) its sleep.
    for waker in expired {
      waker.wake();
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use hyper::rt::Timer;

  #[tokio::test(flavor = "current_thread")]
  async fn a_sleep_fires_after_its_deadline_and_a_dropped_one_leaves_nothing_behind() {
    let local = tokio::task::LocalSet::new();
    local
      .run_until(async {
        tokio::task::spawn_local(sweep());
        let start = Instant::now();
        let dropped = CoarseTimer.sleep(Duration::from_millis(100));
        let mut dropped = dropped;
        // Polled once (registered), then dropped: its slot goes with it.
        assert!(futures_poll_once(&mut dropped).is_pending());
        drop(dropped);
        CoarseTimer.sleep(Duration::from_millis(300)).await;
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(300), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        assert_eq!(WAITING.with(|w| w.borrow().len()), 0);
      })
      .await;
  }

  #[tokio::test(flavor = "current_thread")]
  async fn the_timer_clock_is_the_sweepers_note_and_never_older_than_a_sweep() {
    let local = tokio::task::LocalSet::new();
    local
      .run_until(async {
        // No sweeper yet: the clock is read.
        let before = Instant::now();
        assert!(CoarseTimer.now() >= before);
        tokio::task::spawn_local(sweep());
        while NOW.with(Cell::get).is_none() {
          tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let noted = CoarseTimer.now();
        // Noted once, the time stands still between sweeps...
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(CoarseTimer.now(), noted);
        // ...and moves on with each of them.
        for _ in 0..3 {
          tokio::time::sleep(SWEEP).await;
          let now = CoarseTimer.now();
          assert!(now > noted);
          assert!(Instant::now().duration_since(now) <= SWEEP + Duration::from_secs(1));
        }
      })
      .await;
  }

  fn futures_poll_once(sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>) -> Poll<()> {
    let waker = Waker::noop();
    sleep.as_mut().poll(&mut Context::from_waker(waker))
  }
}
