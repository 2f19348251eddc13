//! Cron triggers: at each time one of a worker's `crons` fires, its
//! `scheduled` handler runs, as an event dispatched like a request (the same
//! pool, isolate and limits, with `limits.scheduled_cpu_ms` for CPU). Runs
//! are logged with their outcome and duration; a run still going when the
//! next one is due makes that one skipped, never overlapping.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use runtime_ext::http::HandlerOutcome;
use tokio::sync::oneshot;

use crate::config::CronTrigger;
use crate::worker::{IncomingRequest, ScheduledEvent};

/// The engine's side of one scheduled event: what to dispatch to the worker,
/// and where its outcome comes back.
pub fn event_request(
  cron: &str,
  scheduled_time_ms: f64,
) -> (IncomingRequest, oneshot::Receiver<HandlerOutcome>) {
  let (respond, outcome) = oneshot::channel();
  let request = IncomingRequest {
    method: http::Method::GET,
    url: "http://scheduled.invalid/".to_string(),
    headers: http::HeaderMap::new(),
    body: None,
    respond,
    scheduled: Some(ScheduledEvent {
      cron: cron.to_string(),
      scheduled_time_ms,
    }),
  };
  (request, outcome)
}

/// How a run ended, for the log and for `/__scheduled`: `Ok` or the error
/// (with its JavaScript stack).
pub async fn outcome_of(outcome: oneshot::Receiver<HandlerOutcome>) -> Result<(), String> {
  match outcome.await {
    Ok(HandlerOutcome::Response(_)) => Ok(()),
    Ok(HandlerOutcome::Error(error)) => Err(error),
    Ok(HandlerOutcome::Unavailable(reason)) => Err(reason),
    Err(_) => Err("the worker went away before the run ended".to_string()),
  }
}

/// Fires `triggers` of the worker named `worker` until the task is dropped,
/// handing each event to `dispatch`.
pub async fn run_triggers(
  worker: String,
  triggers: Vec<CronTrigger>,
  dispatch: impl Fn(IncomingRequest),
) {
  let running = Rc::new(Cell::new(false));
  // Never the same time twice, even if a timer wakes a little early.
  let mut last_due: Option<chrono::DateTime<chrono::Utc>> = None;
  loop {
    let now = chrono::Utc::now().max(last_due.unwrap_or_default());
    let Some((due, trigger)) = triggers
      .iter()
      .filter_map(|t| t.next_after(now).map(|at| (at, t)))
      .min_by_key(|(at, _)| *at)
    else {
      tracing::warn!(%worker, "no cron trigger fires again");
      return;
    };
    let wait = (due - chrono::Utc::now())
      .to_std()
      .unwrap_or(Duration::ZERO);
    tokio::time::sleep(wait).await;
    last_due = Some(due);
    if running.get() {
      tracing::warn!(
        %worker,
        cron = %trigger.expression,
        "scheduled run skipped: the previous run is still going"
      );
      continue;
    }
    let (request, outcome) = event_request(&trigger.expression, due.timestamp_millis() as f64);
    running.set(true);
    let started = Instant::now();
    dispatch(request);
    let running = running.clone();
    let (worker, cron) = (worker.clone(), trigger.expression.clone());
    tokio::task::spawn_local(async move {
      let result = outcome_of(outcome).await;
      running.set(false);
      let ms = started.elapsed().as_secs_f64() * 1000.0;
      match result {
        Ok(()) => tracing::info!(%worker, %cron, "scheduled run ok in {ms:.1} ms"),
        Err(error) => {
          tracing::error!(%worker, %cron, "scheduled run failed after {ms:.1} ms: {error}")
        }
      }
    });
  }
}
