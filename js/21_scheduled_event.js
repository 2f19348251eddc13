// Scheduled (cron) events: what a worker's `scheduled` handler is given, in
// either syntax (`export default { scheduled(controller, env, ctx) }` or
// `addEventListener("scheduled", (event) => ...)`), and when a run is over:
// when the handler's promise and every promise given to waitUntil settled.
import { primordials } from "ext:core/mod.js";
import { event } from "ext:runtime/00_web.js";

const {
  ArrayPrototypePush,
  ArrayPrototypeSlice,
  PromisePrototypeThen,
  PromiseResolve,
  SafePromiseAll,
  Symbol,
  SymbolToStringTag,
  TypeError,
} = primordials;
const { Event } = event;

const illegalConstructor = Symbol("illegalConstructor");
const _cron = Symbol("[[cron]]");
const _scheduledTime = Symbol("[[scheduledTime]]");
const _run = Symbol("[[run]]");

// One run: its waitUntil promises, and whether noRetry() was called.
class ScheduledRun {
  waits = [];
  noRetry = false;

  waitUntil(promise) {
    ArrayPrototypePush(this.waits, PromiseResolve(promise));
  }

  // Settles when the handler's result and every waitUntil promise have,
  // including those added while waiting; rejects with the first rejection.
  async settled(result) {
    await result;
    let seen = 0;
    while (seen < this.waits.length) {
      const pending = ArrayPrototypeSlice(this.waits, seen);
      seen = this.waits.length;
      await SafePromiseAll(pending);
    }
  }
}

class ScheduledController {
  [_cron];
  [_scheduledTime];
  [_run];

  constructor(key, cron, scheduledTime, run) {
    if (key !== illegalConstructor) {
      throw new TypeError("Illegal constructor");
    }
    this[_cron] = cron;
    this[_scheduledTime] = scheduledTime;
    this[_run] = run;
  }

  get cron() {
    return this[_cron];
  }

  get scheduledTime() {
    return this[_scheduledTime];
  }

  // Accepted as on Workers; a failed run is never retried here.
  noRetry() {
    this[_run].noRetry = true;
  }

  get [SymbolToStringTag]() {
    return "ScheduledController";
  }
}

class ScheduledEvent extends Event {
  [_cron];
  [_scheduledTime];
  [_run];

  constructor(key, cron, scheduledTime, run) {
    if (key !== illegalConstructor) {
      throw new TypeError("Illegal constructor");
    }
    super("scheduled");
    this[_cron] = cron;
    this[_scheduledTime] = scheduledTime;
    this[_run] = run;
  }

  get cron() {
    return this[_cron];
  }

  get scheduledTime() {
    return this[_scheduledTime];
  }

  noRetry() {
    this[_run].noRetry = true;
  }

  waitUntil(promise) {
    this[_run].waitUntil(promise);
  }

  get [SymbolToStringTag]() {
    return "ScheduledEvent";
  }
}

// The `ctx` of a module-syntax scheduled handler.
class ScheduledContext {
  [_run];

  constructor(key, run) {
    if (key !== illegalConstructor) {
      throw new TypeError("Illegal constructor");
    }
    this[_run] = run;
  }

  waitUntil(promise) {
    this[_run].waitUntil(promise);
  }

  get [SymbolToStringTag]() {
    return "ExecutionContext";
  }
}

// Runs one scheduled event. `moduleHandler` is the module's default export
// (or null for service-worker syntax); `dispatchToListeners(event)` runs the
// "scheduled" listeners and throws what one of them threw. Calls `done()`
// or `failed(error)` once the run is over.
function runScheduled(moduleHandler, env, dispatchToListeners, cron, time, done, failed) {
  const run = new ScheduledRun();
  let result;
  try {
    if (moduleHandler !== null) {
      if (typeof moduleHandler.scheduled !== "function") {
        throw new TypeError(
          "No scheduled handler: export default { scheduled(controller, env, ctx) }",
        );
      }
      result = moduleHandler.scheduled(
        new ScheduledController(illegalConstructor, cron, time, run),
        env,
        new ScheduledContext(illegalConstructor, run),
      );
    } else {
      dispatchToListeners(new ScheduledEvent(illegalConstructor, cron, time, run));
    }
  } catch (error) {
    failed(error);
    return;
  }
  PromisePrototypeThen(run.settled(result), done, failed);
}

export { runScheduled, ScheduledController, ScheduledEvent };
