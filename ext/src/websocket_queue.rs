//! The queues between a WebSocket's pump and its isolate (and between the
//! pump's reader and writer): a channel that allocates nothing until a
//! message waits in it. tokio's mpsc allocates a block of 32 slots per
//! channel up front, about 1.5 KiB per channel and three channels per
//! socket: most of what an idle socket held.
//!
//! One receiver, any number of senders; at most one sender waits for room
//! at a time (the pump's reader is the only one that does).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

struct State<T> {
  items: VecDeque<T>,
  /// Past this many waiting items, `send` and `reserve` wait.
  capacity: usize,
  senders: usize,
  receiver_alive: bool,
  receiver: Option<Waker>,
  sender: Option<Waker>,
}

type Shared<T> = Arc<Mutex<State<T>>>;

pub struct Sender<T>(Shared<T>);
pub struct Receiver<T>(Shared<T>);

/// A queue whose `send` waits while `capacity` items are waiting.
pub fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
  let shared = Arc::new(Mutex::new(State {
    items: VecDeque::new(),
    capacity: capacity.max(1),
    senders: 1,
    receiver_alive: true,
    receiver: None,
    sender: None,
  }));
  (Sender(shared.clone()), Receiver(shared))
}

/// A queue that never makes a sender wait (`push` always has room).
pub fn unbounded<T>() -> (Sender<T>, Receiver<T>) {
  bounded(usize::MAX)
}

impl<T> Sender<T> {
  /// Queues `item` whatever the capacity; hands it back if the receiver is
  /// gone.
  pub fn push(&self, item: T) -> Result<(), T> {
    let mut state = self.0.lock().unwrap();
    if !state.receiver_alive {
      return Err(item);
    }
    state.items.push_back(item);
    if let Some(waker) = state.receiver.take() {
      waker.wake();
    }
    Ok(())
  }

  /// Waits until there is room (or the receiver is gone: `Err`).
  pub async fn reserve(&self) -> Result<(), ()> {
    poll_fn(|cx| {
      let mut state = self.0.lock().unwrap();
      if !state.receiver_alive {
        Poll::Ready(Err(()))
      } else if state.items.len() < state.capacity {
        Poll::Ready(Ok(()))
      } else {
        state.sender = Some(cx.waker().clone());
        Poll::Pending
      }
    })
    .await
  }

  /// Waits for room, then queues `item`.
  pub async fn send(&self, item: T) -> Result<(), T> {
    if self.reserve().await.is_err() {
      return Err(item);
    }
    self.push(item)
  }
}

impl<T> Clone for Sender<T> {
  fn clone(&self) -> Self {
    self.0.lock().unwrap().senders += 1;
    Self(self.0.clone())
  }
}

impl<T> Drop for Sender<T> {
  fn drop(&mut self) {
    let mut state = self.0.lock().unwrap();
    state.senders -= 1;
    if state.senders == 0 {
      if let Some(waker) = state.receiver.take() {
        waker.wake();
      }
    }
  }
}

impl<T> Receiver<T> {
  /// The next item, or `None` once every sender is gone and nothing waits.
  /// Cancel-safe: an item is taken only when it is returned.
  pub async fn recv(&mut self) -> Option<T> {
    poll_fn(|cx| {
      let mut state = self.0.lock().unwrap();
      match state.items.pop_front() {
        Some(item) => {
          if let Some(waker) = state.sender.take() {
            waker.wake();
          }
          Poll::Ready(Some(item))
        }
        None if state.senders == 0 => Poll::Ready(None),
        None => {
          state.receiver = Some(cx.waker().clone());
          Poll::Pending
        }
      }
    })
    .await
  }

  /// The next item if one is waiting.
  pub fn try_recv(&mut self) -> Option<T> {
    let mut state = self.0.lock().unwrap();
    let item = state.items.pop_front();
    if item.is_some() {
      if let Some(waker) = state.sender.take() {
        waker.wake();
      }
    }
    item
  }
}

impl<T> Drop for Receiver<T> {
  fn drop(&mut self) {
    let mut state = self.0.lock().unwrap();
    state.receiver_alive = false;
    // What waits is dropped with the queue's last handle; a waiting sender
    // learns that nothing will take it.
    if let Some(waker) = state.sender.take() {
      waker.wake();
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[tokio::test]
  async fn items_arrive_in_order_and_the_end_is_seen_once_every_sender_is_gone() {
    let (tx, mut rx) = unbounded();
    let tx2 = tx.clone();
    tx.push(1).unwrap();
    tx2.push(2).unwrap();
    drop(tx);
    assert_eq!(rx.recv().await, Some(1));
    assert_eq!(rx.try_recv(), Some(2));
    assert_eq!(rx.try_recv(), None);
    let ended = tokio::spawn(async move { rx.recv().await });
    tokio::task::yield_now().await;
    drop(tx2);
    assert_eq!(ended.await.unwrap(), None);
  }

  #[tokio::test]
  async fn a_full_queue_makes_its_sender_wait_until_an_item_is_taken() {
    let (tx, mut rx) = bounded(1);
    tx.send("a").await.unwrap();
    let second = tokio::spawn(async move {
      tx.send("b").await.unwrap();
      tx
    });
    tokio::task::yield_now().await;
    assert!(!second.is_finished(), "no room for a second item");
    assert_eq!(rx.recv().await, Some("a"));
    let tx = second.await.unwrap();
    assert_eq!(rx.recv().await, Some("b"));
    drop(rx);
    assert!(tx.reserve().await.is_err(), "the receiver is gone");
    assert_eq!(tx.push("c"), Err("c"));
  }
}
