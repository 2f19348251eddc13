// The global scope a script sees: the WinterTC (ECMA-429) Minimum Common Web
// Platform API, Workers' `addEventListener("fetch")`, and nothing of the
// engine (no `Deno`, no ops: the engine removes those before user code runs).
import { core, primordials } from "ext:core/mod.js";
import * as web from "ext:runtime/00_web.js";
import { Headers } from "ext:runtime/10_headers.js";
import { FormData } from "ext:runtime/12_formdata.js";
import { Request } from "ext:runtime/13_request.js";
import { Response } from "ext:runtime/14_response.js";
import {
  captureListenerError,
  ExecutionContext,
  FetchEvent,
  reportToLog,
} from "ext:runtime/20_fetch_event.js";
import {
  ScheduledController,
  ScheduledEvent,
} from "ext:runtime/21_scheduled_event.js";
import { fetch } from "ext:runtime/30_fetch.js";
import { getCrypto } from "ext:runtime/40_crypto.js";
import { Cache, caches, CacheStorage } from "ext:runtime/55_cache.js";
import { WebSocket, WebSocketPair } from "ext:runtime/58_websocket.js";
import { HTMLRewriter } from "ext:runtime/60_html_rewriter.js";

const {
  ArrayPrototypeIndexOf,
  ObjectDefineProperties,
  ObjectDefineProperty,
  ObjectFreeze,
  Promise,
  PromiseReject,
  ObjectPrototypeIsPrototypeOf,
  ObjectSetPrototypeOf,
  Symbol,
  SymbolToStringTag,
  TypeError,
} = primordials;
const { op_log } = core.ops;
const { event, streams, webidl } = web;
const { DOMException } = web.domException;

const illegalConstructor = Symbol("illegalConstructor");

// WorkerGlobalScope, as HTML defines it, carries the attributes of the
// WindowOrWorkerGlobalScope mixin; of those, `performance` (hr-time) is an
// accessor of its prototype, where idlharness looks for it, and so are
// WebCrypto's `crypto` and the Fetch standard's fetch(). The rest stay own
// properties of the global object.
class WorkerGlobalScope extends event.EventTarget {
  constructor(key) {
    if (key !== illegalConstructor) throw new TypeError("Illegal constructor");
    super();
  }

  get performance() {
    assertGlobal(this);
    return web.performance.performance;
  }

  // [Replaceable]
  set performance(value) {
    ObjectDefineProperty(assertGlobal(this), "performance", {
      __proto__: null,
      value,
      writable: true,
      enumerable: true,
      configurable: true,
    });
  }

  // WebCrypto's [SameObject] readonly attribute: minted on first use, never
  // at snapshot time (deno_crypto's objects live on the C++ heap).
  get crypto() {
    assertGlobal(this);
    return getCrypto();
  }

  get [SymbolToStringTag]() {
    return "WorkerGlobalScope";
  }
}

// WebIDL attributes are enumerable.
for (const name of ["performance", "crypto"]) {
  ObjectDefineProperty(WorkerGlobalScope.prototype, name, {
    __proto__: null,
    enumerable: true,
  });
}
// fetch() (the Fetch standard's partial WindowOrWorkerGlobalScope) is an
// operation of the prototype too: idlharness looks for it there. A script
// that assigns `globalThis.fetch` shadows it, as in a browser's worker.
ObjectDefineProperty(WorkerGlobalScope.prototype, "fetch", {
  __proto__: null,
  value: fetch,
  writable: true,
  enumerable: true,
  configurable: true,
});

// The `this` of an attribute of the global scope: undefined or null stand
// for the global object (WebIDL), anything else that is not it is an error.
function assertGlobal(self) {
  self ??= globalThis;
  if (!ObjectPrototypeIsPrototypeOf(WorkerGlobalScope.prototype, self)) {
    throw new TypeError("Illegal invocation");
  }
  return self;
}

class ServiceWorkerGlobalScope extends WorkerGlobalScope {
  constructor(key) {
    if (key !== illegalConstructor) throw new TypeError("Illegal constructor");
    super(key);
  }

  // deno_web reports an uncaught exception (from a listener, a timer, a
  // microtask) by dispatching an ErrorEvent here and, if nobody cancelled
  // it, asking deno_core to terminate the isolate. A server isolate must
  // survive its scripts' mistakes: log the error and claim it handled.
  dispatchEvent(ev) {
    const notCancelled = super.dispatchEvent(ev);
    if (
      notCancelled && ev.type === "error" &&
      ObjectPrototypeIsPrototypeOf(event.ErrorEvent.prototype, ev)
    ) {
      if (!captureListenerError(ev.error)) {
        reportToLog("Uncaught", ev.error);
      }
      return false;
    }
    return notCancelled;
  }

  get [SymbolToStringTag]() {
    return "ServiceWorkerGlobalScope";
  }
}

class Navigator {
  constructor(key) {
    if (key !== illegalConstructor) throw new TypeError("Illegal constructor");
  }

  get userAgent() {
    return "runtime/0.1";
  }

  get hardwareConcurrency() {
    return 1;
  }

  get language() {
    return "en-US";
  }

  get languages() {
    return languages;
  }

  get [SymbolToStringTag]() {
    return "Navigator";
  }
}
const languages = ObjectFreeze(["en-US"]);
// Called as plain functions: deno_web's timers refuse another `this`.
const { clearTimeout, setTimeout } = web.timers;
const navigator = new Navigator(illegalConstructor);

// Workers' `scheduler` (the Prioritized Task Scheduling API's `wait`): a
// promise that settles after `delay` ms, or rejects when `signal` aborts.
class Scheduler {
  constructor(key) {
    if (key !== illegalConstructor) throw new TypeError("Illegal constructor");
  }

  wait(delay = 0, options = undefined) {
    const signal = options?.signal;
    if (signal !== undefined && signal !== null) {
      if (!ObjectPrototypeIsPrototypeOf(web.abortSignal.AbortSignalPrototype, signal)) {
        return PromiseReject(
          new TypeError("scheduler.wait: options.signal must be an AbortSignal"),
        );
      }
      if (signal.aborted) return PromiseReject(signal.reason);
    }
    return new Promise((resolve, reject) => {
      let onAbort;
      const id = setTimeout(() => {
        if (onAbort) signal.removeEventListener("abort", onAbort);
        resolve();
      }, delay);
      if (signal) {
        onAbort = () => {
          clearTimeout(id);
          reject(signal.reason);
        };
        signal.addEventListener("abort", onAbort, { once: true });
      }
    });
  }

  get [SymbolToStringTag]() {
    return "Scheduler";
  }
}
const scheduler = new Scheduler(illegalConstructor);

// Interfaces: non-enumerable, writable, configurable (WebIDL).
const nonEnumerable = (value) => ({
  __proto__: null,
  value,
  enumerable: false,
  writable: true,
  configurable: true,
});
// Operations and attributes of the global scope: enumerable.
const enumerable = (value) => ({
  __proto__: null,
  value,
  enumerable: true,
  writable: true,
  configurable: true,
});
const getter = (get) => ({
  __proto__: null,
  get,
  enumerable: true,
  configurable: true,
});

// structuredClone, with what deno_web's lacks: anything in the transfer
// list that cannot be transferred, or is there twice, is a DataCloneError
// (not a TypeError from deep inside). Its ArrayBuffers are moved and
// detached by deno_core's serializer, through the isolate's
// shared_array_buffer_store (see worker.rs).
function structuredClone(value, options = undefined) {
  const prefix = "Failed to execute 'structuredClone'";
  webidl.requiredArguments(arguments.length, 1, prefix);
  if (options === undefined) {
    return web.messagePort.structuredClone(value);
  }
  const { transfer } = webidl.converters.StructuredSerializeOptions(
    options,
    prefix,
    "Argument 2",
  );
  for (let i = 0; i < transfer.length; i++) {
    const item = transfer[i];
    if (ArrayPrototypeIndexOf(transfer, item) !== i) {
      throw new DOMException(
        "The transfer list contains an object twice",
        "DataCloneError",
      );
    }
    if (core.isArrayBuffer(item)) continue;
    const type = item[core.hostObjectBrand];
    if (
      type === undefined || core.getTransferableResource(type) === undefined
    ) {
      throw new DOMException("Value not transferable", "DataCloneError");
    }
  }
  return web.messagePort.structuredClone(value, { transfer });
}

// Fetch's interfaces are not serializable: deno_web's structuredClone
// throws a DataCloneError for objects so marked.
for (const Interface of [FormData, Headers, Request, Response]) {
  web.messagePort.markNotSerializable(Interface.prototype);
}

const printer = (message, level) => op_log(level === 4 ? 3 : level, message);

const globalScope = {
  // deno_web
  AbortController: nonEnumerable(web.abortSignal.AbortController),
  AbortSignal: nonEnumerable(web.abortSignal.AbortSignal),
  Blob: nonEnumerable(web.file.Blob),
  ByteLengthQueuingStrategy: nonEnumerable(streams.ByteLengthQueuingStrategy),
  CompressionStream: nonEnumerable(web.compression.CompressionStream),
  CloseEvent: nonEnumerable(event.CloseEvent),
  CountQueuingStrategy: nonEnumerable(streams.CountQueuingStrategy),
  CustomEvent: nonEnumerable(event.CustomEvent),
  DecompressionStream: nonEnumerable(web.compression.DecompressionStream),
  DOMException: nonEnumerable(web.domException.DOMException),
  ErrorEvent: nonEnumerable(event.ErrorEvent),
  Event: nonEnumerable(event.Event),
  EventTarget: nonEnumerable(event.EventTarget),
  File: nonEnumerable(web.file.File),
  FileReader: nonEnumerable(web.fileReader.FileReader),
  MessageChannel: nonEnumerable(web.messagePort.MessageChannel),
  MessageEvent: nonEnumerable(event.MessageEvent),
  MessagePort: nonEnumerable(web.messagePort.MessagePort),
  Performance: nonEnumerable(web.performance.Performance),
  PerformanceEntry: nonEnumerable(web.performance.PerformanceEntry),
  PerformanceMark: nonEnumerable(web.performance.PerformanceMark),
  PerformanceMeasure: nonEnumerable(web.performance.PerformanceMeasure),
  PromiseRejectionEvent: nonEnumerable(event.PromiseRejectionEvent),
  QuotaExceededError: nonEnumerable(web.domException.QuotaExceededError),
  ReadableByteStreamController: nonEnumerable(
    streams.ReadableByteStreamController,
  ),
  ReadableStream: nonEnumerable(streams.ReadableStream),
  ReadableStreamBYOBReader: nonEnumerable(streams.ReadableStreamBYOBReader),
  ReadableStreamBYOBRequest: nonEnumerable(streams.ReadableStreamBYOBRequest),
  ReadableStreamDefaultController: nonEnumerable(
    streams.ReadableStreamDefaultController,
  ),
  ReadableStreamDefaultReader: nonEnumerable(
    streams.ReadableStreamDefaultReader,
  ),
  TextDecoder: nonEnumerable(web.encoding.TextDecoder),
  TextDecoderStream: nonEnumerable(web.encoding.TextDecoderStream),
  TextEncoder: nonEnumerable(web.encoding.TextEncoder),
  TextEncoderStream: nonEnumerable(web.encoding.TextEncoderStream),
  TransformStream: nonEnumerable(streams.TransformStream),
  TransformStreamDefaultController: nonEnumerable(
    streams.TransformStreamDefaultController,
  ),
  URL: nonEnumerable(web.url.URL),
  URLPattern: nonEnumerable(web.urlPattern.URLPattern),
  URLSearchParams: nonEnumerable(web.url.URLSearchParams),
  WritableStream: nonEnumerable(streams.WritableStream),
  WritableStreamDefaultController: nonEnumerable(
    streams.WritableStreamDefaultController,
  ),
  WritableStreamDefaultWriter: nonEnumerable(
    streams.WritableStreamDefaultWriter,
  ),
  // deno_crypto (`crypto` itself is an attribute of WorkerGlobalScope).
  Crypto: nonEnumerable(web.crypto.Crypto),
  CryptoKey: nonEnumerable(web.crypto.CryptoKey),
  SubtleCrypto: nonEnumerable(web.crypto.SubtleCrypto),
  // ours
  Cache: nonEnumerable(Cache),
  CacheStorage: nonEnumerable(CacheStorage),
  ExecutionContext: nonEnumerable(ExecutionContext),
  FetchEvent: nonEnumerable(FetchEvent),
  FormData: nonEnumerable(FormData),
  Headers: nonEnumerable(Headers),
  HTMLRewriter: nonEnumerable(HTMLRewriter),
  Navigator: nonEnumerable(Navigator),
  Request: nonEnumerable(Request),
  ScheduledController: nonEnumerable(ScheduledController),
  ScheduledEvent: nonEnumerable(ScheduledEvent),
  Response: nonEnumerable(Response),
  ServiceWorkerGlobalScope: nonEnumerable(ServiceWorkerGlobalScope),
  WebSocket: nonEnumerable(WebSocket),
  WebSocketPair: nonEnumerable(WebSocketPair),
  WorkerGlobalScope: nonEnumerable(WorkerGlobalScope),
  // functions and attributes
  atob: enumerable(web.base64.atob),
  btoa: enumerable(web.base64.btoa),
  caches: getter(() => caches),
  clearInterval: enumerable(web.timers.clearInterval),
  clearTimeout: enumerable(web.timers.clearTimeout),
  console: nonEnumerable(new web.consoleNs.Console(printer)),
  navigator: getter(() => navigator),
  scheduler: getter(() => scheduler),
  reportError: enumerable(event.reportError),
  setInterval: enumerable(web.timers.setInterval),
  setTimeout: enumerable(web.timers.setTimeout),
  structuredClone: enumerable(structuredClone),
};

function onUnhandledRejection(promise, reason) {
  const rejection = new event.PromiseRejectionEvent("unhandledrejection", {
    cancelable: true,
    promise,
    reason,
  });
  try {
    globalThis.dispatchEvent(rejection);
  } catch {
    // A throwing listener is reported by dispatchEvent itself.
  }
  if (!rejection.defaultPrevented) {
    reportToLog("Unhandled promise rejection", reason);
  }
  return true;
}

// A rejection reported as unhandled got a handler after all.
function onRejectionHandled(promise, reason) {
  const handled = new event.PromiseRejectionEvent("rejectionhandled", {
    promise,
    reason,
  });
  try {
    globalThis.dispatchEvent(handled);
  } catch {
    // A throwing listener is reported by dispatchEvent itself.
  }
}

// Errors that ops raise as DOMExceptions (crypto, base64, encoding...) are
// named "DOMException<Name>" on the Rust side; build the real thing here.
// Every name of the DOMException names table (WebIDL), so that an op error
// of any of them reaches scripts as a DOMException of that name.
const DOM_EXCEPTION_OP_ERRORS = [
  "AbortError",
  "ConstraintError",
  "DataCloneError",
  "DataError",
  "EncodingError",
  "HierarchyRequestError",
  "IndexSizeError",
  "InUseAttributeError",
  "InvalidAccessError",
  "InvalidCharacterError",
  "InvalidModificationError",
  "InvalidNodeTypeError",
  "InvalidStateError",
  "NamespaceError",
  "NetworkError",
  "NoModificationAllowedError",
  "NotAllowedError",
  "NotFoundError",
  "NotReadableError",
  "NotSupportedError",
  "OperationError",
  "OptOutError",
  "QuotaExceededError",
  "ReadOnlyError",
  "SecurityError",
  "SyntaxError",
  "TimeoutError",
  "TransactionInactiveError",
  "TypeMismatchError",
  "UnknownError",
  "URLMismatchError",
  "VersionError",
  "WrongDocumentError",
];

function registerDomExceptionErrors() {
  const { DOMException, QuotaExceededError } = web.domException;
  for (const name of DOM_EXCEPTION_OP_ERRORS) {
    core.registerErrorBuilder(
      `DOMException${name}`,
      // QuotaExceededError is its own DOMException subclass now (WebIDL):
      // getRandomValues over 65536 bytes throws one.
      name === "QuotaExceededError"
        ? (message) => new QuotaExceededError(message)
        : (message) => new DOMException(message, name),
    );
  }
}

function installGlobalScope() {
  registerDomExceptionErrors();
  // Log lines go to the process log, never to a terminal: no colours.
  web.consoleNs.setNoColorFns(() => true, () => true);
  ObjectDefineProperties(globalThis, globalScope);
  ObjectSetPrototypeOf(globalThis, ServiceWorkerGlobalScope.prototype);
  event.setEventTargetData(globalThis);
  ObjectDefineProperty(globalThis, web.webidl.brand, {
    __proto__: null,
    value: web.webidl.brand,
    enumerable: false,
    writable: false,
    configurable: true,
  });
  event.saveGlobalThisReference(globalThis);
  // [Replaceable] (HTML): assigning `self` replaces it with a data
  // property, in sloppy and module code alike, instead of throwing.
  ObjectDefineProperty(globalThis, "self", {
    __proto__: null,
    get: () => globalThis,
    set(value) {
      ObjectDefineProperty(globalThis, "self", {
        __proto__: null,
        value,
        writable: true,
        enumerable: true,
        configurable: true,
      });
    },
    enumerable: true,
    configurable: true,
  });
  event.defineEventHandler(globalThis, "error", undefined, true);
  event.defineEventHandler(globalThis, "unhandledrejection");
  event.defineEventHandler(globalThis, "rejectionhandled");
  event.defineEventHandler(globalThis, "fetch");

  core.setUnhandledPromiseRejectionHandler(onUnhandledRejection);
  core.setHandledPromiseRejectionHandler(onRejectionHandled);
  core.setReportExceptionCallback((error) => event.reportException(error));
}

export { installGlobalScope };
