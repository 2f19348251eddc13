//! An HTTP body read as a deno_core resource reads it: chunk by chunk, at
//! most `limit` bytes at a time, as the bytes arrive. Shared by the body of
//! an incoming request and the body of a `fetch()` response.

use std::cell::RefCell;
use std::pin::Pin;
use std::task::Poll;

use bytes::Bytes;
use deno_core::BufView;
use http_body::{Body, SizeHint};

pub struct BodyReader<B> {
  body: RefCell<Option<B>>,
  leftover: RefCell<Bytes>,
}

impl<B: Body<Data = Bytes> + Unpin> BodyReader<B> {
  pub fn new(body: B) -> Self {
    Self {
      body: RefCell::new(Some(body)),
      leftover: RefCell::new(Bytes::new()),
    }
  }

  pub fn size_hint(&self) -> SizeHint {
    self
      .body
      .borrow()
      .as_ref()
      .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
  }

  /// The next bytes, at most `limit`; empty at the end of the body. The body
  /// is dropped once it ended or failed.
  pub async fn next_chunk(&self, limit: usize) -> Result<BufView, B::Error> {
    loop {
      {
        let mut leftover = self.leftover.borrow_mut();
        if !leftover.is_empty() {
          let n = limit.min(leftover.len());
          return Ok(BufView::from(leftover.split_to(n)));
        }
      }
      let frame = std::future::poll_fn(|cx| match &mut *self.body.borrow_mut() {
        Some(body) => Pin::new(body).poll_frame(cx),
        None => Poll::Ready(None),
      })
      .await;
      match frame {
        None => {
          self.close();
          return Ok(BufView::empty());
        }
        Some(Err(error)) => {
          self.close();
          return Err(error);
        }
        // Trailers are dropped: the Fetch API has no place for them.
        Some(Ok(frame)) => {
          if let Ok(data) = frame.into_data() {
            *self.leftover.borrow_mut() = data;
          }
        }
      }
    }
  }

  /// Drops the body (and with it the connection, if it was not read to its
  /// end).
  pub fn close(&self) {
    self.body.borrow_mut().take();
  }
}
