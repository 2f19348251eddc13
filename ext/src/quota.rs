//! Per-worker quotas: what one tenant may hold at once, counted across the
//! process (every server thread's isolate of the worker shares one count),
//! so that one tenant's burst cannot take what the others need: requests in
//! flight, open WebSockets, fetches waiting for their response, and the
//! bytes of response bodies still waiting to be written to slow clients.
//!
//! A quota that is full refuses with a clear error and a log line naming
//! the worker and the limit; nothing queues without bound and nothing
//! crashes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use deno_core::OpState;

use crate::console::ScriptName;

/// The limits, from the worker's `limits` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaLimits {
  /// Requests in flight (dispatched, response not yet sent whole) before
  /// new ones get a 503 (`limits.concurrent_requests`).
  pub concurrent_requests: usize,
  /// Open WebSockets, server and client ends (`limits.websockets`).
  pub websockets: usize,
  /// `fetch()` calls waiting for their response head
  /// (`limits.subrequests_in_flight`).
  pub subrequests_in_flight: usize,
  /// Bytes of response bodies handed to the server and not yet written to
  /// their clients' sockets (`limits.pending_response_bytes`).
  pub pending_response_bytes: usize,
}

impl Default for QuotaLimits {
  fn default() -> Self {
    Self {
      concurrent_requests: 1_000,
      websockets: 20_000,
      subrequests_in_flight: 256,
      pending_response_bytes: 256 << 20,
    }
  }
}

/// What a quota counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
  Requests,
  WebSockets,
  Subrequests,
  ResponseBytes,
}

impl Quota {
  pub const ALL: [Quota; 4] = [
    Quota::Requests,
    Quota::WebSockets,
    Quota::Subrequests,
    Quota::ResponseBytes,
  ];

  /// The config key of its limit.
  pub fn key(self) -> &'static str {
    match self {
      Quota::Requests => "limits.concurrent_requests",
      Quota::WebSockets => "limits.websockets",
      Quota::Subrequests => "limits.subrequests_in_flight",
      Quota::ResponseBytes => "limits.pending_response_bytes",
    }
  }

  fn what(self) -> &'static str {
    match self {
      Quota::Requests => "requests in flight",
      Quota::WebSockets => "open WebSockets",
      Quota::Subrequests => "fetch() calls in flight",
      Quota::ResponseBytes => "response bytes waiting for slow clients",
    }
  }
}

/// One worker's counts; shared (`Arc`) by its config and its isolates'
/// `OpState`s.
#[derive(Debug, Default)]
pub struct WorkerQuotas {
  pub limits: QuotaLimits,
  requests: AtomicUsize,
  websockets: AtomicUsize,
  subrequests: AtomicUsize,
  response_bytes: AtomicUsize,
  /// Refusals so far, by quota (`Quota::ALL` order), for `/metrics`.
  refusals: [AtomicUsize; 4],
}

impl WorkerQuotas {
  pub fn new(limits: QuotaLimits) -> Arc<Self> {
    Arc::new(Self {
      limits,
      ..Default::default()
    })
  }

  fn slot(&self, quota: Quota) -> (&AtomicUsize, usize) {
    match quota {
      Quota::Requests => (&self.requests, self.limits.concurrent_requests),
      Quota::WebSockets => (&self.websockets, self.limits.websockets),
      Quota::Subrequests => (&self.subrequests, self.limits.subrequests_in_flight),
      Quota::ResponseBytes => (&self.response_bytes, self.limits.pending_response_bytes),
    }
  }

  /// Takes one unit of `quota`, held until the permit is dropped; `Err`
  /// says why not, for the script's error and the log.
  pub fn acquire(self: &Arc<Self>, quota: Quota) -> Result<QuotaPermit, String> {
    self.acquire_units(quota, 1)
  }

  /// Takes `units` of `quota` at once (bytes, for `ResponseBytes`).
  pub fn acquire_units(
    self: &Arc<Self>,
    quota: Quota,
    units: usize,
  ) -> Result<QuotaPermit, String> {
    let (count, limit) = self.slot(quota);
    let taken = count.fetch_add(units, Ordering::AcqRel);
    if taken.saturating_add(units) > limit {
      count.fetch_sub(units, Ordering::AcqRel);
      self.refusals[quota as usize].fetch_add(1, Ordering::Relaxed);
      return Err(format!(
        "too many {}: this worker's limit is {limit} ({})",
        quota.what(),
        quota.key()
      ));
    }
    Ok(QuotaPermit {
      quotas: self.clone(),
      quota,
      units,
    })
  }

  /// How many times `quota` refused so far.
  pub fn refusals(&self, quota: Quota) -> usize {
    self.refusals[quota as usize].load(Ordering::Relaxed)
  }

  /// How many units of `quota` are held now.
  pub fn held(&self, quota: Quota) -> usize {
    self.slot(quota).0.load(Ordering::Acquire)
  }
}

/// Units of a quota, given back when dropped.
#[derive(Debug)]
pub struct QuotaPermit {
  quotas: Arc<WorkerQuotas>,
  quota: Quota,
  units: usize,
}

impl Drop for QuotaPermit {
  fn drop(&mut self) {
    self
      .quotas
      .slot(self.quota)
      .0
      .fetch_sub(self.units, Ordering::AcqRel);
  }
}

/// Takes one unit of `quota` from the quotas of the isolate's worker (an
/// isolate without them, such as the WPT runner's, has no limit); a refusal
/// is logged with the worker's name and comes back as the script's error.
pub fn acquire_in(state: &OpState, quota: Quota) -> Result<Option<QuotaPermit>, String> {
  let Some(quotas) = state.try_borrow::<Arc<WorkerQuotas>>() else {
    return Ok(None);
  };
  quotas.acquire(quota).map(Some).inspect_err(|message| {
    let worker = state
      .try_borrow::<ScriptName>()
      .map_or("?", |name| name.0.as_str());
    tracing::warn!(worker = %worker, "quota: {message}");
  })
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn a_full_quota_refuses_and_a_dropped_permit_makes_room() {
    let quotas = WorkerQuotas::new(QuotaLimits {
      websockets: 2,
      ..Default::default()
    });
    let a = quotas.acquire(Quota::WebSockets).unwrap();
    let _b = quotas.acquire(Quota::WebSockets).unwrap();
    let error = quotas.acquire(Quota::WebSockets).unwrap_err();
    assert_eq!(
      error,
      "too many open WebSockets: this worker's limit is 2 (limits.websockets)"
    );
    assert_eq!(quotas.held(Quota::WebSockets), 2);
    assert_eq!(quotas.refusals(Quota::WebSockets), 1);
    assert_eq!(quotas.refusals(Quota::Requests), 0);
    drop(a);
    assert_eq!(quotas.held(Quota::WebSockets), 1);
    assert!(quotas.acquire(Quota::WebSockets).is_ok());
    // The other quotas are counted apart.
    assert_eq!(quotas.held(Quota::Requests), 0);
  }

  #[test]
  fn bytes_are_taken_and_given_back_by_the_amount() {
    let quotas = WorkerQuotas::new(QuotaLimits {
      pending_response_bytes: 1000,
      ..Default::default()
    });
    let a = quotas.acquire_units(Quota::ResponseBytes, 600).unwrap();
    let error = quotas.acquire_units(Quota::ResponseBytes, 401).unwrap_err();
    assert!(
      error.ends_with("limit is 1000 (limits.pending_response_bytes)"),
      "{error}"
    );
    let b = quotas.acquire_units(Quota::ResponseBytes, 400).unwrap();
    assert_eq!(quotas.held(Quota::ResponseBytes), 1000);
    drop(a);
    drop(b);
    assert_eq!(quotas.held(Quota::ResponseBytes), 0);
  }
}
