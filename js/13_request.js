// The Fetch standard's Request class (https://fetch.spec.whatwg.org/#request-class).

import { core, primordials } from "ext:core/mod.js";
import {
  abortSignal,
  accessors,
  consoleNs,
  domException,
  file,
  url as urlNs,
  webidl,
} from "ext:runtime/00_web.js";
import {
  appendTrustedHeader,
  cloneHeaders,
  guardFromHeaders,
  hasHeader,
  headerListFromHeaders,
  headerListFromPacked,
  headersFromList,
  replaceHeadersFrom,
  setHeadersGuard,
} from "ext:runtime/10_headers.js";
import {
  cloneInnerBody,
  extractBody,
  InnerBody,
  isBodyUnusable,
  mixinBody,
  proxyInnerBody,
} from "ext:runtime/11_body.js";

const {
  ArrayPrototypeSlice,
  FunctionPrototypeCall,
  ObjectFreeze,
  ObjectKeys,
  ObjectPrototypeIsPrototypeOf,
  PromisePrototypeThen,
  RegExpPrototypeTest,
  SafeRegExp,
  StringPrototypeToUpperCase,
  Symbol,
  SymbolFor,
  TypeError,
} = primordials;

const { createFilteredInspectProxy } = consoleNs;
const { DOMException } = domException;
const { URL } = urlNs;
const { blobFromObjectUrl } = file;
const { createDependentAbortSignal, newSignal, signalAbort } = abortSignal;
const { getLocationHref } = core.loadExtScript("ext:deno_web/12_location.js");
const { op_request_disconnected } = core.ops;

const {
  URLPrototypeGetHref,
  URLPrototypeGetProtocol,
  URLPrototypeGetUsername,
  URLPrototypeGetPassword,
} = accessors;

// Internal slots.
const _method = Symbol("[[method]]");
const _url = Symbol("[[url]]");
const _headers = Symbol("[[headers]]");
const _body = Symbol("[[body]]");
const _signal = Symbol("[[signal]]");
// The Blob a `blob:` URL named when the Request was made: the URL parser
// resolves the entry then, so revoking the URL afterwards (even before a
// clone) leaves the Request fetchable. Set only on such Requests.
const _blobEntry = Symbol("[[blob URL entry]]");
// The engine's id of an incoming request: its signal aborts when the client
// goes away before the response is handed over.
const _serverRequestId = Symbol("[[serverRequestId]]");
const _options = Symbol("[[options]]");

/**
 * The request fields that are rarely read. Shared (frozen) between requests
 * until something changes one of them.
 * @typedef {{
 *   mode: string, credentials: string, cache: string, redirect: string,
 *   referrer: string, referrerPolicy: string, integrity: string,
 *   keepalive: boolean, priority: string,
 * }} RequestOptions
 */
const DEFAULT_OPTIONS = ObjectFreeze({
  __proto__: null,
  mode: "cors",
  credentials: "same-origin",
  cache: "default",
  redirect: "follow",
  // "client", "no-referrer" or a serialized URL.
  referrer: "client",
  referrerPolicy: "",
  integrity: "",
  keepalive: false,
  priority: "auto",
});

// method = token
const METHOD_RE = new SafeRegExp(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/);

/**
 * Validates and normalizes a method (https://fetch.spec.whatwg.org/#concept-method-normalize).
 * @param {string} method  a ByteString
 * @param {string} prefix
 * @returns {string}
 */
function normalizeMethod(method, prefix) {
  switch (method) {
    case "GET":
    case "POST":
    case "PUT":
    case "DELETE":
    case "HEAD":
    case "OPTIONS":
    case "PATCH":
      return method;
  }
  if (!RegExpPrototypeTest(METHOD_RE, method)) {
    throw new TypeError(`${prefix}: '${method}' is not a valid HTTP method`);
  }
  const upper = StringPrototypeToUpperCase(method);
  switch (upper) {
    case "CONNECT":
    case "TRACE":
    case "TRACK":
      throw new TypeError(`${prefix}: '${method}' HTTP method is unsupported`);
    case "DELETE":
    case "GET":
    case "HEAD":
    case "OPTIONS":
    case "POST":
    case "PUT":
      return upper;
  }
  return method;
}

/**
 * The base for relative URLs: the location deno_web was given, if any, else
 * a `location` global with a string `href` (what a test harness defines),
 * read at call time. Undefined in a normal server isolate.
 * @returns {string | undefined}
 */
function apiBaseURL() {
  const href = getLocationHref();
  if (href !== undefined) return href;
  const location = globalThis.location;
  if (location !== undefined && location !== null) {
    const locationHref = location.href;
    if (typeof locationHref === "string") return locationHref;
  }
  return undefined;
}

/**
 * Parses a URL against the API base URL (the location, if the engine set
 * one; otherwise relative URLs are an error).
 * @returns {URL}
 */
function parseURL(input, prefix, what) {
  const base = apiBaseURL();
  try {
    return base === undefined ? new URL(input) : new URL(input, base);
  } catch {
    throw new TypeError(
      base === undefined
        ? `${prefix}: Invalid ${what}: '${input}' (relative URLs need a base, and there is none)`
        : `${prefix}: Invalid ${what}: '${input}'`,
    );
  }
}

/**
 * @param {URL} url
 * @returns {string}
 */
function urlHref(url) {
  return FunctionPrototypeCall(URLPrototypeGetHref, url);
}

/**
 * A request's Headers. A request from the engine holds its header list
 * packed in one string (headerListFromPacked) until they are first read.
 * @param {Request} request
 * @returns {Headers}
 */
function requestHeaders(request) {
  let headers = request[_headers];
  if (typeof headers === "string") {
    headers = headersFromList(headerListFromPacked(headers), "immutable");
    request[_headers] = headers;
  }
  return headers;
}

function setRequestFields(request, method, url, headers, body, options, signal) {
  request[_method] = method;
  request[_url] = url;
  request[_headers] = headers;
  // Empty slots hold undefined, not null: libraries that spread a Request
  // (itty-router's proxy calls `value.bind?.()` on every non-undefined
  // property) must not trip over them.
  request[_body] = body ?? undefined;
  request[_options] = options;
  request[_signal] = signal ?? undefined;
}

/**
 * The request's AbortSignal, created on first use.
 * @param {Request} request
 * @returns {AbortSignal}
 */
function getRequestSignal(request) {
  let signal = request[_signal];
  if (signal == null) {
    signal = newSignal();
    request[_signal] = signal;
    const id = request[_serverRequestId];
    if (id !== undefined) watchClientDisconnect(id, signal);
  }
  return signal;
}

// Watched only once a script asks for the signal: most never do. The watch
// ends with the request, and while it lasts a handler waiting for the abort
// is not "waiting on nothing": the client may still leave, or the wall-clock
// limit end the request (which aborts the signal too).
function watchClientDisconnect(id, signal) {
  const disconnected = op_request_disconnected(id);
  PromisePrototypeThen(disconnected, (gone) => {
    if (gone && !signal.aborted) {
      signal[signalAbort](
        new DOMException("The client disconnected", "AbortError"),
      );
    }
  });
}

const kInternal = Symbol("request.internal");

class Request {
  /**
   * @param {RequestInfo} input
   * @param {RequestInit} [init]
   */
  constructor(input, init = undefined) {
    this[webidl.brand] = webidl.brand;
    if (input === kInternal) return;
    const prefix = "Failed to construct 'Request'";
    webidl.requiredArguments(arguments.length, 1, prefix);
    input = webidl.converters["RequestInfo"](input, prefix, "Argument 1");
    init = webidl.converters["RequestInit"](init, prefix, "Argument 2");

    let inputRequest = null;
    let method;
    let url;
    let options;
    let fallbackMode = null;
    let signal = null;
    let blobEntry;

    if (typeof input === "string") {
      const parsed = parseURL(input, prefix, "URL");
      if (
        FunctionPrototypeCall(URLPrototypeGetUsername, parsed) !== "" ||
        FunctionPrototypeCall(URLPrototypeGetPassword, parsed) !== ""
      ) {
        throw new TypeError(
          `${prefix}: Request URL must not include credentials: '${input}'`,
        );
      }
      url = FunctionPrototypeCall(URLPrototypeGetHref, parsed);
      if (FunctionPrototypeCall(URLPrototypeGetProtocol, parsed) === "blob:") {
        blobEntry = resolveBlobURL(url);
      }
      method = "GET";
      options = DEFAULT_OPTIONS;
      fallbackMode = "cors";
    } else {
      inputRequest = input;
      method = input[_method];
      url = input[_url];
      blobEntry = input[_blobEntry];
      options = input[_options];
      signal = getRequestSignal(input);
    }

    if (init.window !== undefined && init.window !== null) {
      throw new TypeError(`${prefix}: 'window' must be null`);
    }

    const initIsEmpty = ObjectKeys(init).length === 0;
    if (!initIsEmpty) {
      let mode = options.mode;
      let credentials = options.credentials;
      let cache = options.cache;
      let redirect = options.redirect;
      let referrer = options.referrer;
      let referrerPolicy = options.referrerPolicy;
      let integrity = options.integrity;
      let keepalive = options.keepalive;
      let priority = options.priority;

      if (mode === "navigate") mode = "same-origin";
      referrer = "client";
      referrerPolicy = "";
      if (init.referrer !== undefined) {
        if (init.referrer === "") {
          referrer = "no-referrer";
        } else {
          const parsed = parseURL(init.referrer, prefix, "referrer URL");
          const href = FunctionPrototypeCall(URLPrototypeGetHref, parsed);
          referrer = href === "about:client" ? "client" : href;
        }
      }
      if (init.referrerPolicy !== undefined) {
        referrerPolicy = init.referrerPolicy;
      }
      const newMode = init.mode !== undefined ? init.mode : fallbackMode;
      if (newMode === "navigate") {
        throw new TypeError(`${prefix}: Request mode cannot be 'navigate'`);
      }
      if (newMode !== null) mode = newMode;
      if (init.credentials !== undefined) credentials = init.credentials;
      if (init.cache !== undefined) cache = init.cache;
      if (cache === "only-if-cached" && mode !== "same-origin") {
        throw new TypeError(
          `${prefix}: 'only-if-cached' cache mode requires 'same-origin' mode`,
        );
      }
      if (init.redirect !== undefined) redirect = init.redirect;
      if (init.integrity !== undefined) integrity = init.integrity;
      if (init.keepalive !== undefined) keepalive = init.keepalive;
      if (init.priority !== undefined) priority = init.priority;

      options = {
        __proto__: null,
        mode,
        credentials,
        cache,
        redirect,
        referrer,
        referrerPolicy,
        integrity,
        keepalive,
        priority,
      };
    }

    if (init.method !== undefined) {
      method = normalizeMethod(init.method, prefix);
    }
    if (init.signal !== undefined) signal = init.signal;

    // Headers: a copy of the input's, replaced by init.headers if given.
    const headers = headersFromList(
      inputRequest === null
        ? []
        : ArrayPrototypeSlice(headerListFromHeaders(requestHeaders(inputRequest))),
      "request",
    );
    if (options.mode === "no-cors") {
      if (method !== "GET" && method !== "HEAD" && method !== "POST") {
        throw new TypeError(
          `${prefix}: '${method}' is not allowed in 'no-cors' mode`,
        );
      }
      // Forbidden / non-safelisted header filtering is not enforced by this
      // server-side runtime; the guard is recorded for completeness.
      setHeadersGuard(headers, "request-no-cors");
    }
    if (init.headers !== undefined) {
      replaceHeadersFrom(headers, init.headers, prefix);
    }

    const inputBody = inputRequest === null ? null : (inputRequest[_body] ?? null);
    const hasInitBody = init.body !== undefined && init.body !== null;
    if (
      (hasInitBody || inputBody !== null) &&
      (method === "GET" || method === "HEAD")
    ) {
      throw new TypeError(
        `${prefix}: Request with GET/HEAD method cannot have body`,
      );
    }

    let initBody = null;
    if (hasInitBody) {
      const extracted = extractBody(init.body, options.keepalive);
      initBody = extracted.body;
      if (
        extracted.contentType !== null && !hasHeader(headers, "content-type")
      ) {
        appendTrustedHeader(headers, "content-type", extracted.contentType);
      }
    }

    const inputOrInitBody = initBody !== null ? initBody : inputBody;
    if (inputOrInitBody !== null && inputOrInitBody.fromStream) {
      if (initBody !== null && init.duplex === undefined) {
        throw new TypeError(
          `${prefix}: The 'duplex' member must be specified for a request with a ReadableStream body`,
        );
      }
      if (options.mode !== "same-origin" && options.mode !== "cors") {
        throw new TypeError(
          `${prefix}: A request with a ReadableStream body must have mode 'same-origin' or 'cors'`,
        );
      }
    }

    let finalBody = inputOrInitBody;
    if (initBody === null && inputBody !== null) {
      if (isBodyUnusable(inputBody)) {
        throw new TypeError(
          `${prefix}: The input request's body is unusable: it has already been read or is locked`,
        );
      }
      finalBody = proxyInnerBody(inputBody);
    }

    setRequestFields(
      this,
      method,
      url,
      headers,
      finalBody,
      options,
      signal === null ? null : createDependentAbortSignal([signal], prefix),
    );
    if (blobEntry != null) this[_blobEntry] = blobEntry;
  }

  /** @returns {string} */
  get method() {
    webidl.assertBranded(this, RequestPrototype);
    return this[_method];
  }

  /** @returns {string} */
  get url() {
    webidl.assertBranded(this, RequestPrototype);
    return this[_url];
  }

  /** @returns {Headers} */
  get headers() {
    webidl.assertBranded(this, RequestPrototype);
    return requestHeaders(this);
  }

  /** @returns {string} */
  get destination() {
    webidl.assertBranded(this, RequestPrototype);
    return "";
  }

  /** @returns {string} */
  get referrer() {
    webidl.assertBranded(this, RequestPrototype);
    const referrer = this[_options].referrer;
    if (referrer === "no-referrer") return "";
    if (referrer === "client") return "about:client";
    return referrer;
  }

  /** @returns {string} */
  get referrerPolicy() {
    webidl.assertBranded(this, RequestPrototype);
    return this[_options].referrerPolicy;
  }

  /** @returns {string} */
  get mode() {
    webidl.assertBranded(this, RequestPrototype);
    return this[_options].mode;
  }

  /** @returns {string} */
  get credentials() {
    webidl.assertBranded(this, RequestPrototype);
    return this[_options].credentials;
  }

  /** @returns {string} */
  get cache() {
    webidl.assertBranded(this, RequestPrototype);
    return this[_options].cache;
  }

  /** @returns {string} */
  get redirect() {
    webidl.assertBranded(this, RequestPrototype);
    return this[_options].redirect;
  }

  /** @returns {string} */
  get integrity() {
    webidl.assertBranded(this, RequestPrototype);
    return this[_options].integrity;
  }

  /** @returns {boolean} */
  get keepalive() {
    webidl.assertBranded(this, RequestPrototype);
    return this[_options].keepalive;
  }

  /** @returns {boolean} */
  get isReloadNavigation() {
    webidl.assertBranded(this, RequestPrototype);
    return false;
  }

  /** @returns {boolean} */
  get isHistoryNavigation() {
    webidl.assertBranded(this, RequestPrototype);
    return false;
  }

  /** @returns {AbortSignal} */
  get signal() {
    webidl.assertBranded(this, RequestPrototype);
    return getRequestSignal(this);
  }

  /** @returns {"half"} */
  get duplex() {
    webidl.assertBranded(this, RequestPrototype);
    return "half";
  }

  /** @returns {Request} */
  clone() {
    webidl.assertBranded(this, RequestPrototype);
    const prefix = "Failed to execute 'clone' on 'Request'";
    const inner = this[_body] ?? null;
    if (inner !== null && isBodyUnusable(inner)) {
      throw new TypeError(
        `${prefix}: Body is unusable: it has already been read or is locked`,
      );
    }
    const headers = requestHeaders(this);
    const cloned = new Request(kInternal);
    setRequestFields(
      cloned,
      this[_method],
      this[_url],
      cloneHeaders(headers, guardFromHeaders(headers)),
      inner === null ? null : cloneInnerBody(inner),
      this[_options],
      createDependentAbortSignal([getRequestSignal(this)], prefix),
    );
    if (this[_blobEntry] !== undefined) cloned[_blobEntry] = this[_blobEntry];
    return cloned;
  }

  [SymbolFor("Deno.privateCustomInspect")](inspect, inspectOptions) {
    return inspect(
      createFilteredInspectProxy({
        object: this,
        evaluate: ObjectPrototypeIsPrototypeOf(RequestPrototype, this),
        keys: [
          "bodyUsed",
          "headers",
          "method",
          "redirect",
          "url",
        ],
      }),
      inspectOptions,
    );
  }
}

mixinBody(Request, _body, requestHeaders);
webidl.configureInterface(Request);
const RequestPrototype = Request.prototype;

webidl.converters["Request"] = webidl.createInterfaceConverter(
  "Request",
  RequestPrototype,
);
webidl.converters["RequestInfo"] = (V, prefix, context, opts) => {
  // Union of (Request or USVString)
  if (
    typeof V === "object" && V !== null &&
    ObjectPrototypeIsPrototypeOf(RequestPrototype, V) &&
    V[webidl.brand] === webidl.brand
  ) {
    return V;
  }
  return webidl.converters.USVString(V, prefix, context, opts);
};
webidl.converters["ReferrerPolicy"] = webidl.createEnumConverter(
  "ReferrerPolicy",
  [
    "",
    "no-referrer",
    "no-referrer-when-downgrade",
    "same-origin",
    "origin",
    "strict-origin",
    "origin-when-cross-origin",
    "strict-origin-when-cross-origin",
    "unsafe-url",
  ],
);
webidl.converters["RequestMode"] = webidl.createEnumConverter("RequestMode", [
  "navigate",
  "same-origin",
  "no-cors",
  "cors",
]);
webidl.converters["RequestCredentials"] = webidl.createEnumConverter(
  "RequestCredentials",
  ["omit", "same-origin", "include"],
);
webidl.converters["RequestCache"] = webidl.createEnumConverter(
  "RequestCache",
  [
    "default",
    "no-store",
    "reload",
    "no-cache",
    "force-cache",
    "only-if-cached",
  ],
);
webidl.converters["RequestRedirect"] = webidl.createEnumConverter(
  "RequestRedirect",
  ["follow", "error", "manual"],
);
webidl.converters["RequestDuplex"] = webidl.createEnumConverter(
  "RequestDuplex",
  ["half"],
);
webidl.converters["RequestPriority"] = webidl.createEnumConverter(
  "RequestPriority",
  ["high", "low", "auto"],
);
webidl.converters["AbortSignal?"] ??= webidl.createNullableConverter(
  webidl.converters["AbortSignal"],
);
webidl.converters["RequestInit"] = webidl.createDictionaryConverter(
  "RequestInit",
  [
    { key: "method", converter: webidl.converters["ByteString"] },
    { key: "headers", converter: webidl.converters["HeadersInit"] },
    { key: "body", converter: webidl.converters["BodyInit?"] },
    { key: "referrer", converter: webidl.converters["USVString"] },
    { key: "referrerPolicy", converter: webidl.converters["ReferrerPolicy"] },
    { key: "mode", converter: webidl.converters["RequestMode"] },
    {
      key: "credentials",
      converter: webidl.converters["RequestCredentials"],
    },
    { key: "cache", converter: webidl.converters["RequestCache"] },
    { key: "redirect", converter: webidl.converters["RequestRedirect"] },
    { key: "integrity", converter: webidl.converters["DOMString"] },
    { key: "keepalive", converter: webidl.converters["boolean"] },
    { key: "signal", converter: webidl.converters["AbortSignal?"] },
    { key: "duplex", converter: webidl.converters["RequestDuplex"] },
    { key: "priority", converter: webidl.converters["RequestPriority"] },
    { key: "window", converter: webidl.converters["any"] },
  ],
);

// ---------------------------------------------------------------------------
// Engine API

/**
 * The Request a server hands to a fetch handler.
 * @param {string} method  already normalized
 * @param {string} url  absolute URL (trusted; returned as is by `url`)
 * @param {string[]} flatHeaders  [name0, value0, ...], names lowercase,
 *   values valid; adopted (not copied)
 * @param {ReadableStream | null} bodyStream
 * @returns {Request}
 */
function newServerRequest(method, url, packedHeaders, bodyStream, id) {
  const request = new Request(kInternal);
  request[_serverRequestId] = id;
  setRequestFields(
    request,
    method,
    url,
    // Kept packed until something reads them (requestHeaders).
    packedHeaders,
    bodyStream === null || bodyStream === undefined
      ? null
      : new InnerBody(bodyStream, null, null),
    DEFAULT_OPTIONS,
    null,
  );
  return request;
}

/**
 * Signals abort on a request's AbortSignal (e.g. the client went away).
 * @param {Request} request
 * @param {any} reason
 */
function abortRequest(request, reason) {
  getRequestSignal(request)[signalAbort](reason);
}

/**
 * @param {unknown} value
 * @returns {value is Request}
 */
function isRequest(value) {
  return ObjectPrototypeIsPrototypeOf(RequestPrototype, value) &&
    value[webidl.brand] === webidl.brand;
}

/** The Blob of a `blob:` URL in the store now, else null. */
function resolveBlobURL(url) {
  try {
    return blobFromObjectUrl(url);
  } catch {
    // An unparsable blob: URL is one that is not in the store.
    return null;
  }
}

/**
 * What fetch() needs of the Request it constructed, read from the internal
 * slots (so changes to Request.prototype by user code do not matter).
 * @param {Request} request
 * @returns {{
 *   method: string, url: string, headers: Headers, body: InnerBody | null,
 *   redirect: "follow" | "error" | "manual", integrity: string,
 *   signal: AbortSignal | null,
 *   blobEntry: Blob | null,
 * }}
 */
function requestForFetch(request) {
  return {
    __proto__: null,
    method: request[_method],
    url: request[_url],
    headers: requestHeaders(request),
    body: request[_body] ?? null,
    redirect: request[_options].redirect,
    integrity: request[_options].integrity,
    signal: request[_signal] ?? null,
    // The Blob a `blob:` URL named when the Request was made, else null.
    blobEntry: request[_blobEntry] ?? null,
  };
}

export {
  abortRequest,
  getRequestSignal,
  isRequest,
  newServerRequest,
  parseURL,
  Request,
  RequestPrototype,
  requestForFetch,
  resolveBlobURL,
  urlHref,
};
