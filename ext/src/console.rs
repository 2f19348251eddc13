//! Where a script's `console.*` output goes: the process log, tagged with the
//! script that wrote it.

use deno_core::{op2, OpState};

/// The name a script's log lines are tagged with (its file name).
#[derive(Clone)]
pub struct ScriptName(pub String);

/// `level`: 0 debug, 1 info (`log`, `info`), 2 warn, 3 error.
#[op2(fast)]
pub fn op_log(state: &mut OpState, #[smi] level: u32, #[string] message: &str) {
  // `worker`, as on the engine's own lines about it.
  let worker = state
    .try_borrow::<ScriptName>()
    .map(|s| s.0.as_str())
    .unwrap_or("script");
  let message = message.strip_suffix('\n').unwrap_or(message);
  match level {
    0 => tracing::debug!(target: "console", worker, "{message}"),
    1 => tracing::info!(target: "console", worker, "{message}"),
    2 => tracing::warn!(target: "console", worker, "{message}"),
    _ => tracing::error!(target: "console", worker, "{message}"),
  }
}
