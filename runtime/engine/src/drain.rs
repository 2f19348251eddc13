//! Graceful shutdown of one server thread's connections: every connection is
//! watched, and once the drain starts each is asked to finish the request it
//! is serving and close, and the drain waits for the last to go.
//!
//! hyper-util's `GracefulShutdown` does the same across threads, through a
//! `tokio::sync::watch` channel that every connection polls on each of its
//! polls, that is once or twice per request. A server thread shares nothing
//! with the others, so here that check is a flag read.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use slab::Slab;

/// The connections of one thread.
#[derive(Default)]
pub struct Drain(Rc<DrainState>);

#[derive(Default)]
struct DrainState {
  draining: Cell<bool>,
  /// Each watched connection's task, once it has been polled: the drain
  /// wakes it so that it hears of the drain.
  connections: RefCell<Slab<Option<Waker>>>,
  /// The task waiting in [`Drain::drain`] for the last connection to end.
  drained: RefCell<Option<Waker>>,
}

impl Drain {
  /// Counts a connection in from the moment it is accepted; the drain
  /// waits for it until the watcher is dropped.
  pub fn watcher(&self) -> Watcher {
    let key = self.0.connections.borrow_mut().insert(None);
    Watcher {
      state: self.0.clone(),
      key,
    }
  }

  /// Asks every connection, those accepted later included, to finish the
  /// request in flight and close, and waits until all have ended.
  pub async fn drain(&self) {
    self.0.draining.set(true);
    for (_, task) in self.0.connections.borrow_mut().iter_mut() {
      if let Some(task) = task.take() {
        task.wake();
      }
    }
    poll_fn(|cx| {
      if self.0.connections.borrow().is_empty() {
        return Poll::Ready(());
      }
      *self.0.drained.borrow_mut() = Some(cx.waker().clone());
      Poll::Pending
    })
    .await
  }
}

/// One connection's place in a [`Drain`].
pub struct Watcher {
  state: Rc<DrainState>,
  key: usize,
}

impl Watcher {
  /// Serves `connection` until it ends, asking it to finish (`shutdown`:
  /// its `graceful_shutdown`) once the drain starts.
  pub fn watch<C: Future>(self, connection: C, shutdown: fn(Pin<&mut C>)) -> Watched<C> {
    Watched {
      connection: Box::pin(connection),
      shutdown,
      watcher: self,
      closing: false,
    }
  }

  /// Resolves once the drain starts (what a WebSocket pump, which outlives
  /// its HTTP connection, waits on to close with 1001).
  pub async fn draining(&self) {
    poll_fn(|cx| {
      if self.state.draining.get() {
        return Poll::Ready(());
      }
      let mut connections = self.state.connections.borrow_mut();
      connections[self.key] = Some(cx.waker().clone());
      Poll::Pending
    })
    .await
  }
}

impl Drop for Watcher {
  fn drop(&mut self) {
    let mut connections = self.state.connections.borrow_mut();
    connections.remove(self.key);
    if connections.is_empty() {
      if let Some(drained) = self.state.drained.borrow_mut().take() {
        drained.wake();
      }
    }
  }
}

/// A connection served under a [`Drain`].
pub struct Watched<C> {
  connection: Pin<Box<C>>,
  shutdown: fn(Pin<&mut C>),
  watcher: Watcher,
  /// `graceful_shutdown` was called.
  closing: bool,
}

impl<C: Future> Future for Watched<C> {
  type Output = C::Output;

  fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
    let this = &mut *self;
    if !this.closing {
      let state = &this.watcher.state;
      if state.draining.get() {
        this.closing = true;
        (this.shutdown)(this.connection.as_mut());
      } else {
        let mut connections = state.connections.borrow_mut();
        let task = &mut connections[this.watcher.key];
        if !task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
          *task = Some(cx.waker().clone());
        }
      }
    }
    this.connection.as_mut().poll(cx)
  }
}
