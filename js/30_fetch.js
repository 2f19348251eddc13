// The fetch() method (https://fetch.spec.whatwg.org/#fetch-method): outbound
// requests from scripts.
//
// Argument processing is the Request constructor's. This file then runs the
// parts of "fetch" a server runtime has: scheme fetch for `data:` and
// `blob:` URLs, HTTP(S) through the Rust client (ext/src/fetch.rs, one
// request per redirect hop), redirects per "HTTP-redirect fetch" (follow at
// most 20, error, or manual: the 3xx response as is, as Workers returns it),
// AbortSignal, and the engine's subrequest limit.
//
// Bodies are never buffered on the way through: a request body that is a
// stream is streamed out (a stream that is a Rust resource already, like the
// body of the request being handled, is handed to Rust as is), and the
// response body is a stream over a Rust resource, which the engine passes
// through untouched when a handler returns the Response as it is.

import { core, primordials } from "ext:core/mod.js";
import {
  abortSignal,
  accessors,
  file,
  infra,
  mimesniff,
  streams,
  url as urlNs,
  webidl,
} from "ext:runtime/00_web.js";
import { readableStreamForRid } from "ext:runtime/08_streams.js";
import { headerListFromHeaders } from "ext:runtime/10_headers.js";
import { InnerBody, takeBodyForEngine } from "ext:runtime/11_body.js";
import {
  Request,
  requestForFetch,
  resolveBlobURL,
} from "ext:runtime/13_request.js";
import {
  fetchResponseWithBytes,
  newFetchResponse,
  newWebSocketResponse,
  ResponsePrototype,
} from "ext:runtime/14_response.js";
import { connectForFetch } from "ext:runtime/58_websocket.js";
import { currentRequestContext } from "ext:runtime/20_fetch_event.js";

const { op_fetch, op_fetch_integrity_matches, op_fetch_send } = core.ops;
const {
  ArrayPrototypeSlice,
  ArrayPrototypeSplice,
  FunctionPrototypeCall,
  ObjectGetOwnPropertyDescriptor,
  ObjectPrototypeIsPrototypeOf,
  PromisePrototypeCatch,
  PromisePrototypeThen,
  PromiseReject,
  RegExpPrototypeExec,
  SafeRegExp,
  String,
  StringFromCharCode,
  StringPrototypeCharCodeAt,
  StringPrototypeIndexOf,
  StringPrototypeSlice,
  TypedArrayPrototypeGetByteLength,
  TypedArrayPrototypeGetSymbolToStringTag,
  TypedArrayPrototypeSubarray,
  TypeError,
  Uint8Array,
} = primordials;
const {
  acquireReadableStreamDefaultReader,
  errorReadableStream,
  getReadableStreamResourceBacking,
  isReadableStreamDisturbed,
  isReadableStreamLocked,
  readableStreamCancel,
  readableStreamDisturb,
  resourceForReadableStream,
} = streams;
const { add: signalAdd, remove: signalRemove } = abortSignal;
const { BlobPrototype } = file;
const { URL, URLPrototype } = urlNs;

const {
  URLPrototypeGetHref,
  URLPrototypeGetProtocol,
  URLPrototypeGetUsername,
  URLPrototypeGetPassword,
  BlobPrototypeGetSize,
  BlobPrototypeGetType,
} = accessors;
const URLPrototypeGetOrigin = ObjectGetOwnPropertyDescriptor(
  URLPrototype,
  "origin",
).get;
const BlobPrototypeBytes = BlobPrototype.bytes;

// The most redirects one fetch() follows (the standard's limit).
const MAX_REDIRECTS = 20;

const SUPPORTED_SCHEMES = "fetch() supports http:, https:, data: and blob: URLs";

function isUint8Array(value) {
  return TypedArrayPrototypeGetSymbolToStringTag(value) === "Uint8Array";
}

function isRedirectStatus(status) {
  return status === 301 || status === 302 || status === 303 ||
    status === 307 || status === 308;
}

function isNullBodyStatus(status) {
  return status === 101 || status === 103 || status === 204 ||
    status === 205 || status === 304;
}

/** A URL serialized without its fragment, as a response's URL is. */
function withoutFragment(href) {
  const hash = StringPrototypeIndexOf(href, "#");
  return hash === -1 ? href : StringPrototypeSlice(href, 0, hash);
}

/** The first value of a header in a flat list, or null. */
function flatHeaderGet(list, lowerName) {
  for (let i = 0; i < list.length; i += 2) {
    if (list[i] === lowerName) return list[i + 1];
  }
  return null;
}

/** Deletes every entry of a header from a flat list. */
function flatHeaderDelete(list, lowerName) {
  for (let i = 0; i < list.length;) {
    if (list[i] === lowerName) {
      ArrayPrototypeSplice(list, i, 2);
    } else {
      i += 2;
    }
  }
}

function parseURL(input, base) {
  try {
    return base === undefined ? new URL(input) : new URL(input, base);
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------
// data: URLs (https://fetch.spec.whatwg.org/#data-url-processor)

const BASE64_SUFFIX_RE = new SafeRegExp(/;\x20*base64$/i);

function isAsciiWhitespace(c) {
  return c === 0x09 || c === 0x0a || c === 0x0c || c === 0x0d || c === 0x20;
}

function stripAsciiWhitespace(s) {
  let start = 0;
  let end = s.length;
  while (start < end && isAsciiWhitespace(StringPrototypeCharCodeAt(s, start))) start++;
  while (end > start && isAsciiWhitespace(StringPrototypeCharCodeAt(s, end - 1))) end--;
  return StringPrototypeSlice(s, start, end);
}

function hexValue(c) {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  return -1;
}

/** "Percent-decode" the UTF-8 encoding of a string into bytes. */
function percentDecode(input) {
  const bytes = core.encode(input);
  const length = TypedArrayPrototypeGetByteLength(bytes);
  const out = new Uint8Array(length);
  let j = 0;
  for (let i = 0; i < length; i++) {
    const byte = bytes[i];
    if (byte === 0x25 && i + 2 < length) {
      const high = hexValue(bytes[i + 1]);
      const low = hexValue(bytes[i + 2]);
      if (high !== -1 && low !== -1) {
        out[j++] = high * 16 + low;
        i += 2;
        continue;
      }
    }
    out[j++] = byte;
  }
  return TypedArrayPrototypeSubarray(out, 0, j);
}

/** "Isomorphic decode": each byte becomes the code point of the same value. */
function isomorphicDecode(bytes) {
  let result = "";
  const length = TypedArrayPrototypeGetByteLength(bytes);
  for (let i = 0; i < length; i += 4096) {
    const end = i + 4096 < length ? i + 4096 : length;
    for (let k = i; k < end; k++) result += StringFromCharCode(bytes[k]);
  }
  return result;
}

/**
 * The data: URL processor. Returns `{ mimeType, body }` (the serialized MIME
 * type and the bytes) or null for failure.
 * @param {string} href  a serialized data: URL
 */
function processDataURL(href) {
  const input = StringPrototypeSlice(withoutFragment(href), 5); // "data:"
  const comma = StringPrototypeIndexOf(input, ",");
  if (comma === -1) return null;
  let mimeType = stripAsciiWhitespace(StringPrototypeSlice(input, 0, comma));
  let body = percentDecode(StringPrototypeSlice(input, comma + 1));
  const base64 = RegExpPrototypeExec(BASE64_SUFFIX_RE, mimeType);
  if (base64 !== null) {
    try {
      body = infra.forgivingBase64Decode(isomorphicDecode(body));
    } catch {
      return null;
    }
    mimeType = StringPrototypeSlice(mimeType, 0, base64.index);
  }
  if (mimeType.length !== 0 && StringPrototypeCharCodeAt(mimeType, 0) === 0x3b) {
    mimeType = "text/plain" + mimeType;
  }
  let record = mimesniff.parseMimeType(mimeType);
  if (record === null) {
    record = mimesniff.parseMimeType("text/plain;charset=US-ASCII");
  }
  return { mimeType: mimesniff.serializeMimeType(record), body };
}

function fetchDataURL(href, head) {
  const result = processDataURL(href);
  if (result === null) {
    throw new TypeError(`fetch failed: invalid data: URL ${href}`);
  }
  const { mimeType, body } = result;
  return newFetchResponse(
    200,
    "OK",
    ["content-type", mimeType],
    head ? null : new InnerBody(null, body, TypedArrayPrototypeGetByteLength(body)),
    withoutFragment(href),
    false,
  );
}

// ---------------------------------------------------------------------------
// blob: URLs (the Blob URL store of deno_web; URL.createObjectURL)

// `entry`: the Blob the URL named when the Request was made, else null.
function fetchBlobURL(href, method, headers, entry) {
  const url = withoutFragment(href);
  if (method !== "GET") {
    throw new TypeError(
      `fetch failed: a blob: URL can only be fetched with GET, not ${method}`,
    );
  }
  const blob = entry ?? resolveBlobURL(url);
  if (blob === null || !ObjectPrototypeIsPrototypeOf(BlobPrototype, blob)) {
    throw new TypeError(`fetch failed: no Blob for ${url} (revoked or never created)`);
  }
  if (flatHeaderGet(headers, "range") !== null) {
    throw new TypeError(
      `fetch failed: Range requests on blob: URLs are not supported (${url})`,
    );
  }
  const size = FunctionPrototypeCall(BlobPrototypeGetSize, blob);
  const type = FunctionPrototypeCall(BlobPrototypeGetType, blob);
  return newFetchResponse(
    200,
    "OK",
    ["content-length", String(size), "content-type", type],
    new InnerBody(null, blob, size),
    url,
    false,
  );
}

// ---------------------------------------------------------------------------
// HTTP(S)

/**
 * A rid for Rust to stream a request body from. A stream that is a
 * resource already is handed over as is (and left locked and disturbed,
 * as a read would leave it); any other is pumped into a new resource.
 * @param {ReadableStream} stream
 * @returns {number}
 */
function bodyStreamRid(stream) {
  const backing = getReadableStreamResourceBacking(stream);
  if (
    backing != null && !isReadableStreamLocked(stream) &&
    !isReadableStreamDisturbed(stream)
  ) {
    acquireReadableStreamDefaultReader(stream);
    readableStreamDisturb(stream);
    return backing.rid;
  }
  return resourceForReadableStream(stream);
}

/**
 * Sends one HTTP request through Rust. Resolves with the response head
 * `{ status, statusText, headers, bodyRid }`; an abort of `signal` cancels
 * the request and rejects with the signal's reason.
 */
async function httpFetch(state, signal) {
  // Aborted between two redirect hops: nothing more is sent.
  if (signal !== null && signal.aborted) throw signal.reason;
  let body = state.body;
  if (state.stream !== null) {
    body = bodyStreamRid(state.stream);
    state.stream = null;
  }
  let rid;
  try {
    rid = op_fetch(state.method, state.url, state.headers, body);
  } catch (error) {
    if (typeof body === "number") core.tryClose(body);
    throw error;
  }
  const onAbort = () => core.tryClose(rid);
  if (signal !== null) signal[signalAdd](onAbort);
  let head;
  try {
    head = await op_fetch_send(rid);
  } catch (error) {
    if (signal !== null && signal.aborted) throw signal.reason;
    throw error;
  } finally {
    if (signal !== null) signal[signalRemove](onAbort);
  }
  if (signal !== null && signal.aborted) {
    if (head.bodyRid !== null) core.tryClose(head.bodyRid);
    throw signal.reason;
  }
  return head;
}

/**
 * The stream of a response body read from resource `rid`. Aborting
 * `signal` errors it with the signal's reason and drops the body.
 */
function responseBodyStream(rid, signal) {
  if (signal === null) return readableStreamForRid(rid);
  let stream = null;
  const onAbort = () => {
    errorReadableStream(stream, signal.reason);
    core.tryClose(rid);
  };
  stream = readableStreamForRid(
    rid,
    true,
    undefined,
    undefined,
    () => signal[signalRemove](onAbort),
  );
  signal[signalAdd](onAbort);
  return stream;
}

function responseFromHead(head, state, redirected, signal) {
  const { status, bodyRid } = head;
  const nullBody = state.method === "HEAD" || isNullBodyStatus(status);
  let body = null;
  if (bodyRid !== null) {
    if (nullBody) {
      core.tryClose(bodyRid);
    } else {
      body = new InnerBody(responseBodyStream(bodyRid, signal), null, null);
    }
  } else if (!nullBody) {
    body = new InnerBody(null, "", 0);
  }
  return newFetchResponse(
    status,
    head.statusText,
    head.headers,
    body,
    withoutFragment(state.url),
    redirected,
  );
}

// Headers that describe a request body, dropped with it when a redirect
// turns the request into a GET.
const REQUEST_BODY_HEADERS = [
  "content-encoding",
  "content-language",
  "content-location",
  "content-type",
];

const HEX_DIGITS = "0123456789ABCDEF";

/**
 * A Location header value is bytes (one per character here): bytes above
 * 0x7F are percent-encoded as they are, so UTF-8 in a Location arrives as
 * that UTF-8 (not re-encoded), and invalid UTF-8 survives, as in browsers.
 * @param {string} location
 */
function locationBytesToURL(location) {
  let out = "";
  let start = 0;
  for (let i = 0; i < location.length; ++i) {
    const byte = StringPrototypeCharCodeAt(location, i);
    if (byte < 0x80) continue;
    out += StringPrototypeSlice(location, start, i) + "%" +
      HEX_DIGITS[byte >> 4] + HEX_DIGITS[byte & 0xf];
    start = i + 1;
  }
  return start === 0 ? location : out + StringPrototypeSlice(location, start);
}

/**
 * Applies "HTTP-redirect fetch" to `state` for a redirect to `location`.
 * Throws a TypeError where the standard returns a network error.
 */
function followRedirect(state, status, location, redirects) {
  const current = parseURL(state.url);
  const target = parseURL(locationBytesToURL(location), state.url);
  if (target === null) {
    throw new TypeError(
      `fetch failed: ${state.url} redirected (${status}) to an invalid URL: '${location}'`,
    );
  }
  const targetHref = FunctionPrototypeCall(URLPrototypeGetHref, target);
  const scheme = FunctionPrototypeCall(URLPrototypeGetProtocol, target);
  if (scheme !== "http:" && scheme !== "https:") {
    throw new TypeError(
      `fetch failed: ${state.url} redirected (${status}) to ${targetHref}, which is not an http: or https: URL`,
    );
  }
  if (redirects >= MAX_REDIRECTS) {
    throw new TypeError(
      `fetch failed: too many redirects (more than ${MAX_REDIRECTS}) from ${state.originalUrl}`,
    );
  }
  if (
    FunctionPrototypeCall(URLPrototypeGetUsername, target) !== "" ||
    FunctionPrototypeCall(URLPrototypeGetPassword, target) !== ""
  ) {
    throw new TypeError(
      `fetch failed: ${state.url} redirected (${status}) to a URL with credentials`,
    );
  }
  if (status !== 303 && state.hasBody && state.fromStream) {
    throw new TypeError(
      `fetch failed: ${state.url} redirected (${status}) a request whose body is a ReadableStream, which cannot be sent again`,
    );
  }
  if (
    ((status === 301 || status === 302) && state.method === "POST") ||
    (status === 303 && state.method !== "GET" && state.method !== "HEAD")
  ) {
    state.method = "GET";
    state.hasBody = false;
    state.body = null;
    state.stream = null;
    for (let i = 0; i < REQUEST_BODY_HEADERS.length; i++) {
      flatHeaderDelete(state.headers, REQUEST_BODY_HEADERS[i]);
    }
  }
  if (
    current !== null &&
    FunctionPrototypeCall(URLPrototypeGetOrigin, current) !==
      FunctionPrototypeCall(URLPrototypeGetOrigin, target)
  ) {
    flatHeaderDelete(state.headers, "authorization");
  }
  state.url = targetHref;
}

// ---------------------------------------------------------------------------
// fetch()

/**
 * Runs a fetch of the Request fetch() constructed (see `requestForFetch`).
 * @returns {Promise<Response>}
 */
async function runFetch(request) {
  const signal = request.signal;
  const state = {
    __proto__: null,
    method: request.method,
    url: request.url,
    originalUrl: request.url,
    headers: ArrayPrototypeSlice(headerListFromHeaders(request.headers)),
    redirect: request.redirect,
    hasBody: false,
    fromStream: false,
    // What is sent: null, a string or bytes (sent again on a redirect), or
    // a stream (sent once).
    body: null,
    stream: null,
  };
  const inner = request.body;
  if (inner !== null) {
    state.hasBody = true;
    state.fromStream = inner.fromStream;
    const source = inner.source;
    const taken = takeBodyForEngine(inner);
    if (typeof taken === "string" || isUint8Array(taken)) {
      state.body = taken;
    } else if (
      source !== null && ObjectPrototypeIsPrototypeOf(BlobPrototype, source)
    ) {
      state.body = await FunctionPrototypeCall(BlobPrototypeBytes, source);
    } else {
      state.stream = taken;
    }
  }
  if (signal !== null && signal.aborted) {
    if (state.stream !== null) {
      // Nobody will read it now: what reading it would have started ends.
      PromisePrototypeCatch(
        readableStreamCancel(state.stream, signal.reason),
        () => {},
      );
    }
    throw signal.reason;
  }

  const url = parseURL(state.url);
  const scheme = url === null ? "" : FunctionPrototypeCall(URLPrototypeGetProtocol, url);
  // Main fetch: a HEAD response has no body, whatever its scheme.
  if (scheme === "data:") return fetchDataURL(state.url, state.method === "HEAD");
  if (scheme === "blob:") {
    return fetchBlobURL(
      state.url,
      state.method,
      state.headers,
      request.blobEntry,
    );
  }
  if (scheme !== "http:" && scheme !== "https:") {
    throw new TypeError(
      `fetch failed: unsupported scheme ${scheme} in ${state.url} (${SUPPORTED_SCHEMES})`,
    );
  }

  if (flatHeaderGet(state.headers, "upgrade")?.toLowerCase() === "websocket") {
    // Workers: the response carries the socket, to accept().
    const { ws, headers } = await connectForFetch(state.url, state.headers);
    return newWebSocketResponse(headers, state.url, ws);
  }
  for (let redirects = 0;; redirects++) {
    const head = await httpFetch(state, signal);
    const status = head.status;
    if (isRedirectStatus(status) && state.redirect !== "manual") {
      const location = flatHeaderGet(head.headers, "location");
      if (state.redirect === "error") {
        if (head.bodyRid !== null) core.tryClose(head.bodyRid);
        throw new TypeError(
          `fetch failed: ${state.url} redirected (${status})${
            location === null ? "" : ` to '${location}'`
          } and the request's redirect mode is 'error'`,
        );
      }
      if (location !== null) {
        if (head.bodyRid !== null) core.tryClose(head.bodyRid);
        followRedirect(state, status, location, redirects);
        continue;
      }
    }
    return responseFromHead(head, state, redirects > 0, signal);
  }
}

function tooManySubrequests(context) {
  return new TypeError(
    `Too many subrequests: this request has already made ${context.subrequests} fetch() calls, and the limit is ${context.limit} per request`,
  );
}

/**
 * An operation of the global scope (WorkerGlobalScope.prototype.fetch):
 * called on anything else it rejects, as WebIDL's promise operations do
 * (undefined and null stand for the global scope).
 * @param {RequestInfo} input
 * @param {RequestInit} [init]
 * @returns {Promise<Response>}
 */
function fetch(input, init = undefined) {
  let request;
  try {
    if (this != null && this !== globalThis) {
      throw new TypeError("Illegal invocation");
    }
    webidl.requiredArguments(arguments.length, 1, "Failed to execute 'fetch'");
    request = new Request(input, init);
  } catch (error) {
    return PromiseReject(error);
  }
  const context = currentRequestContext();
  if (context !== undefined) {
    if (context.subrequests >= context.limit) {
      return PromiseReject(tooManySubrequests(context));
    }
    context.subrequests++;
  }
  const forFetch = requestForFetch(request);
  const fetched = runFetch(forFetch);
  if (forFetch.integrity === "") return fetched;
  return PromisePrototypeThen(
    fetched,
    (response) => checkIntegrity(response, forFetch.integrity),
  );
}

const ResponsePrototypeBytes = ResponsePrototype.bytes;

// Subresource Integrity: the whole body is read and checked before the
// response is handed out; a mismatch is a network error.
async function checkIntegrity(response, metadata) {
  const bytes = await FunctionPrototypeCall(ResponsePrototypeBytes, response);
  if (!op_fetch_integrity_matches(metadata, bytes)) {
    throw new TypeError(
      `fetch failed: the response from ${response.url} does not match its integrity metadata`,
    );
  }
  return fetchResponseWithBytes(response, bytes);
}

export { fetch };
