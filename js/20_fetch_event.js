// How a request from the engine reaches the script's fetch handler, in
// either syntax (service worker `addEventListener("fetch")` or a module's
// `export default { fetch }`), and how its Response goes back.
import { core, primordials } from "ext:core/mod.js";
import { event, streams, url as urlNs, webidl } from "ext:runtime/00_web.js";
import { readableStreamForRid } from "ext:runtime/08_streams.js";
import { newServerRequest } from "ext:runtime/13_request.js";
import { extractResponseParts, Response } from "ext:runtime/14_response.js";
import { runScheduled } from "ext:runtime/21_scheduled_event.js";
import { takeForResponse } from "ext:runtime/58_websocket.js";

const {
  op_log,
  op_respond,
  op_respond_error,
  op_respond_stream,
  op_respond_websocket,
} = core.ops;
const {
  FunctionPrototypeCall,
  ObjectPrototypeIsPrototypeOf,
  PromisePrototypeThen,
  PromiseResolve,
  Symbol,
  SymbolToStringTag,
  TypeError,
} = primordials;
const { Event, EventTarget, listenerCount } = event;
const EventTargetPrototypeDispatchEvent = (target, ev) =>
  FunctionPrototypeCall(EventTarget.prototype.dispatchEvent, target, ev);
const {
  ReadableStreamPrototype,
  getReadableStreamResourceBacking,
  resourceForReadableStream,
} = streams;

const _request = Symbol("[[request]]");
const _response = Symbol("[[response]]");
const _respondWithCalled = Symbol("[[respondWithCalled]]");
const _waitUntil = Symbol("[[waitUntil]]");
const illegalConstructor = Symbol("illegalConstructor");

// Work handed to waitUntil keeps running after the response is sent: the
// isolate's event loop keeps it alive. A rejection is logged, never fatal.
function keepAlive(promise) {
  PromisePrototypeThen(PromiseResolve(promise), undefined, (error) => {
    reportToLog("waitUntil() promise rejected", error);
  });
}

function reportToLog(what, error) {
  op_log(3, `${what}: ${error?.stack ?? String(error)}`);
}

class FetchEvent extends Event {
  [_request];
  [_response] = undefined;
  [_respondWithCalled] = false;

  constructor(key, request) {
    if (key !== illegalConstructor) {
      throw new TypeError("Illegal constructor");
    }
    super("fetch", { cancelable: true });
    this[_request] = request;
  }

  get request() {
    return this[_request];
  }

  respondWith(response) {
    if (this[_respondWithCalled]) {
      throw new DOMExceptionLike("respondWith() was already called");
    }
    this[_respondWithCalled] = true;
    this[_response] = response;
    this.preventDefault();
  }

  waitUntil(promise) {
    keepAlive(promise);
  }

  // Accepted for Workers compatibility; there is no origin to fall back to.
  passThroughOnException() {}

  get [SymbolToStringTag]() {
    return "FetchEvent";
  }
}

function DOMExceptionLike(message) {
  return new globalThis.DOMException(message, "InvalidStateError");
}

// The `ctx` argument of a module-syntax handler.
class ExecutionContext {
  constructor(key) {
    if (key !== illegalConstructor) {
      throw new TypeError("Illegal constructor");
    }
  }

  waitUntil(promise) {
    keepAlive(promise);
  }

  passThroughOnException() {}

  get [SymbolToStringTag]() {
    return "ExecutionContext";
  }
}

// The script's handler, fixed once its module has been evaluated.
let moduleHandler = null;
let env = {};
let subrequestLimit = 50;

// What one request may still do: carried through its promise chains as the
// isolate's async context, so `fetch()` knows whose subrequest it makes.
class RequestContext {
  subrequests = 0;
  limit;
  constructor(limit) {
    this.limit = limit;
  }
}

function currentRequestContext() {
  const context = core.getAsyncContext();
  return context instanceof RequestContext ? context : undefined;
}

// Called by the engine after the user's module was evaluated. Returns false
// when the script has no handler at all (neither fetch nor scheduled).
function setHandler(namespace, bindings, limits) {
  env = bindings ?? {};
  subrequestLimit = limits?.subrequests ?? subrequestLimit;
  const exported = namespace?.default;
  if (
    exported != null &&
    (typeof exported.fetch === "function" ||
      typeof exported.scheduled === "function")
  ) {
    moduleHandler = exported;
    return true;
  }
  return listenerCount(globalThis, "fetch") > 0 ||
    listenerCount(globalThis, "scheduled") > 0;
}

// An exception thrown by a fetch listener is reported by EventTarget's
// dispatch, not thrown to us; the global scope hands it here while a fetch
// event is being dispatched so the request fails with that error.
let listenerError = null;
let dispatching = false;

function captureListenerError(error) {
  if (!dispatching) return false;
  listenerError ??= { error };
  return true;
}

function respond(id, value) {
  let parts;
  try {
    parts = extractResponseParts(value);
  } catch (error) {
    op_respond_error(id, error?.stack ?? String(error));
    return;
  }
  const { status, headers, body, webSocket } = parts;
  if (webSocket !== null) {
    let bindPeer;
    try {
      bindPeer = takeForResponse(webSocket);
    } catch (error) {
      op_respond_error(id, error?.stack ?? String(error));
      return;
    }
    let rid;
    try {
      rid = op_respond_websocket(id, headers);
    } catch (error) {
      // Refused (the worker's limits.websockets): a 500 with the error.
      op_respond_error(id, error?.stack ?? String(error));
      return;
    }
    bindPeer(rid);
    return;
  }
  if (
    body !== null && typeof body === "object" &&
    ObjectPrototypeIsPrototypeOf(ReadableStreamPrototype, body)
  ) {
    // A body that is a Rust resource already (a request body passed
    // through) is handed over as is; any other stream is pumped by Rust.
    const backing = getReadableStreamResourceBacking(body);
    const rid = backing != null && !body.locked
      ? backing.rid
      : resourceForReadableStream(body);
    op_respond_stream(id, status, headers, rid);
  } else if (headers.length === 2 && headers[0] === "content-type") {
    // Most responses: their Content-Type is all the header list holds.
    op_respond(id, status, body, headers[1], undefined);
  } else {
    op_respond(id, status, body, undefined, headers);
  }
}

function fail(id, error) {
  op_respond_error(id, error?.stack ?? String(error));
}

// Entry point from the engine for one request, or for one scheduled event
// (then `cron` and `scheduledTime` are given, and the run's outcome is the
// response: 200 once it is over, or its error).
function dispatchFetch(id, method, url, headers, bodyRid, cron, scheduledTime) {
  const previousContext = core.getAsyncContext();
  core.setAsyncContext(new RequestContext(subrequestLimit));
  try {
    if (cron === undefined) {
      runHandler(id, method, url, headers, bodyRid);
    } else {
      runScheduled(
        moduleHandler,
        env,
        dispatchScheduledListeners,
        cron,
        scheduledTime,
        () => respond(id, new Response("Ran scheduled event")),
        (error) => fail(id, error),
      );
    }
  } finally {
    core.setAsyncContext(previousContext);
  }
}

function dispatchScheduledListeners(event) {
  if (listenerCount(globalThis, "scheduled") === 0) {
    throw new TypeError(
      'No scheduled handler: addEventListener("scheduled", ...) or export default { scheduled }',
    );
  }
  dispatching = true;
  listenerError = null;
  try {
    EventTargetPrototypeDispatchEvent(globalThis, event);
  } finally {
    dispatching = false;
  }
  if (listenerError !== null) throw listenerError.error;
}

function runHandler(id, method, url, headers, bodyRid) {
  const body = bodyRid === undefined ? null : readableStreamForRid(bodyRid);
  let result;
  try {
    const request = newServerRequest(method, url, headers, body, id);
    if (moduleHandler !== null) {
      if (typeof moduleHandler.fetch !== "function") {
        throw new TypeError(
          "No fetch handler: this worker exports only a scheduled handler",
        );
      }
      result = moduleHandler.fetch(
        request,
        env,
        new ExecutionContext(illegalConstructor),
      );
    } else {
      const event = new FetchEvent(illegalConstructor, request);
      if (listenerCount(globalThis, "fetch") === 0) {
        throw new TypeError(
          'No fetch handler: this worker listens only for "scheduled" events',
        );
      }
      dispatching = true;
      listenerError = null;
      try {
        EventTargetPrototypeDispatchEvent(globalThis, event);
      } finally {
        dispatching = false;
      }
      if (listenerError !== null) throw listenerError.error;
      if (!event[_respondWithCalled]) {
        throw new TypeError(
          "No response: the fetch event listener did not call event.respondWith()",
        );
      }
      result = event[_response];
    }
  } catch (error) {
    fail(id, error);
    return;
  }
  if (result !== null && typeof result?.then === "function") {
    PromisePrototypeThen(
      PromiseResolve(result),
      (response) => respond(id, response),
      (error) => fail(id, error),
    );
  } else {
    respond(id, result);
  }
}

// Build time only: runs the request path once on engine-made objects, so the
// functions it uses are compiled into the startup snapshot; otherwise every
// isolate compiles them lazily on its first request. Nothing it creates is
// kept, and no op is called (there is no request to answer at build time).
function warmUpRequestPath() {
  const request = newServerRequest(
    "GET",
    "http://warm.up/path?query=1",
    "host:warm.up\naccept:*/*",
    null,
    undefined,
  );
  // What nearly every handler or router reads and sets.
  request.method;
  request.headers.get("accept");
  const url = new urlNs.URL(request.url);
  url.pathname;
  url.searchParams.get("query");
  const event = new FetchEvent(illegalConstructor, request);
  const response = new Response("warm", {
    headers: { "content-type": "text/plain" },
  });
  response.headers.set("x-warm", "1");
  event.respondWith(response);
  event.waitUntil(PromiseResolve());
  extractResponseParts(event[_response]);
  extractResponseParts(Response.json({ warm: true }));
  // What the engine calls once a script is loaded, in both syntaxes (no
  // default export: then the fetch listeners count).
  setHandler({}, undefined, undefined);
  setHandler({ default: { fetch: () => new Response("warm") } }, {}, {});
  // The whole way in and out for a module-syntax handler, the op included:
  // request 0 is nobody's, its response goes nowhere.
  try {
    dispatchFetch(0, "GET", "http://warm.up/", "host:warm.up", undefined);
  } finally {
    moduleHandler = null;
    env = {};
  }
}

webidl.configureInterface?.(FetchEvent);

export {
  captureListenerError,
  currentRequestContext,
  dispatchFetch,
  ExecutionContext,
  FetchEvent,
  reportToLog,
  setHandler,
  warmUpRequestPath,
};
