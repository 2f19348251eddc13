// The Fetch standard's Response class (https://fetch.spec.whatwg.org/#response-class),
// and the hand-over of a handler's Response to the engine.

import { primordials } from "ext:core/mod.js";
import { consoleNs, infra, webidl } from "ext:runtime/00_web.js";
import {
  appendTrustedHeader,
  cloneHeaders,
  fillHeaders,
  guardFromHeaders,
  hasHeader,
  headerListFromHeaders,
  headersFromList,
} from "ext:runtime/10_headers.js";
import {
  cloneInnerBody,
  extractBody,
  InnerBody,
  isBodyUnusable,
  mixinBody,
  takeBodyForEngine,
} from "ext:runtime/11_body.js";
import { parseURL, urlHref } from "ext:runtime/13_request.js";
import { isWebSocket } from "ext:runtime/58_websocket.js";

const {
  ObjectFreeze,
  TypedArrayPrototypeGetByteLength,
  ObjectPrototypeIsPrototypeOf,
  RangeError,
  RegExpPrototypeTest,
  SafeRegExp,
  Symbol,
  SymbolFor,
  TypeError,
} = primordials;

const { createFilteredInspectProxy } = consoleNs;

// Internal slots.
const _type = Symbol("[[type]]");
const _status = Symbol("[[status]]");
const _statusText = Symbol("[[statusText]]");
const _url = Symbol("[[url]]");
const _headers = Symbol("[[headers]]");
const _body = Symbol("[[body]]");
// Set (true) only on responses fetch() followed a redirect for.
const _redirected = Symbol("[[redirected]]");
// Workers: the WebSocket a 101 response hands to the client.
const _webSocket = Symbol("[[webSocket]]");

const kInternal = Symbol("response.internal");

// reason-phrase = *( HTAB / SP / VCHAR / obs-text )
const REASON_PHRASE_RE = new SafeRegExp(/^[\t\x20-\x7E\x80-\xFF]*$/);

/** @param {number} status */
function isNullBodyStatus(status) {
  return status === 101 || status === 103 || status === 204 ||
    status === 205 || status === 304;
}

/** @param {number} status */
function isRedirectStatus(status) {
  return status === 301 || status === 302 || status === 303 ||
    status === 307 || status === 308;
}

function setResponseFields(response, type, status, statusText, headers, body) {
  response[_type] = type;
  response[_status] = status;
  response[_statusText] = statusText;
  response[_url] = "";
  response[_headers] = headers;
  response[_body] = body;
}

const DEFAULT_INIT = ObjectFreeze({
  __proto__: null,
  status: 200,
  statusText: "",
});

/**
 * "Initialize a response" (https://fetch.spec.whatwg.org/#initialize-a-response).
 * @param {Response} response  with default fields and an empty header list
 * @param {{ status: number, statusText: string, headers?: any }} init
 * @param {{ body: InnerBody, contentType: string | null } | null} bodyWithType
 * @param {string} prefix
 */
function initializeResponse(response, init, bodyWithType, prefix) {
  const status = init.status;
  if (init.webSocket != null) {
    if (status !== 101) {
      throw new RangeError(
        `${prefix}: a Response with a webSocket must have status 101, not ${status}`,
      );
    }
    response[_webSocket] = init.webSocket;
  } else if (status === 101) {
    throw new RangeError(
      `${prefix}: status 101 needs a webSocket (new Response(null, { status: 101, webSocket: client }))`,
    );
  } else if (status < 200 || status > 599) {
    throw new RangeError(
      `${prefix}: The status provided (${status}) is outside the range [200, 599]`,
    );
  }
  const statusText = init.statusText;
  if (statusText !== "" && !RegExpPrototypeTest(REASON_PHRASE_RE, statusText)) {
    throw new TypeError(
      `${prefix}: Invalid status text: "${statusText}"`,
    );
  }
  response[_status] = status;
  response[_statusText] = statusText;
  const headers = response[_headers];
  if (init.headers !== undefined) {
    fillHeaders(headers, init.headers, prefix);
  }
  if (bodyWithType !== null) {
    if (isNullBodyStatus(status)) {
      throw new TypeError(
        `${prefix}: Response with null body status (${status}) cannot have a body`,
      );
    }
    response[_body] = bodyWithType.body;
    const contentType = bodyWithType.contentType;
    if (contentType !== null && !hasHeader(headers, "content-type")) {
      appendTrustedHeader(headers, "content-type", contentType);
    }
  }
}

class Response {
  /**
   * @param {BodyInit | null} [body]
   * @param {ResponseInit} [init]
   */
  constructor(body = null, init = undefined) {
    this[webidl.brand] = webidl.brand;
    if (body === kInternal) return;
    const prefix = "Failed to construct 'Response'";
    body = webidl.converters["BodyInit?"](body, prefix, "Argument 1");
    init = convertResponseInit(init, prefix, "Argument 2");
    setResponseFields(
      this,
      "default",
      200,
      "",
      headersFromList([], "response"),
      null,
    );
    const bodyWithType = body === null ? null : extractBody(body);
    initializeResponse(this, init, bodyWithType, prefix);
  }

  /** @returns {Response} */
  static error() {
    const response = new Response(kInternal);
    setResponseFields(
      response,
      "error",
      0,
      "",
      headersFromList([], "immutable"),
      null,
    );
    return response;
  }

  /**
   * @param {string} url
   * @param {number} [status]
   * @returns {Response}
   */
  static redirect(url, status = 302) {
    const prefix = "Failed to execute 'redirect' on 'Response'";
    webidl.requiredArguments(arguments.length, 1, prefix);
    url = webidl.converters.USVString(url, prefix, "Argument 1");
    status = webidl.converters["unsigned short"](status, prefix, "Argument 2");
    const location = urlHref(parseURL(url, prefix, "URL"));
    if (!isRedirectStatus(status)) {
      throw new RangeError(`${prefix}: Invalid redirect status code: ${status}`);
    }
    const response = new Response(kInternal);
    setResponseFields(
      response,
      "default",
      status,
      "",
      headersFromList(["location", location], "immutable"),
      null,
    );
    return response;
  }

  /**
   * @param {any} data
   * @param {ResponseInit} [init]
   * @returns {Response}
   */
  static json(data, init = undefined) {
    const prefix = "Failed to execute 'json' on 'Response'";
    webidl.requiredArguments(arguments.length, 1, prefix);
    init = convertResponseInit(init, prefix, "Argument 2");
    // JSON text is always well-formed: keep it as a string source.
    const text = infra.serializeJSValueToJSONString(data);
    const response = new Response(kInternal);
    setResponseFields(
      response,
      "default",
      200,
      "",
      headersFromList([], "response"),
      null,
    );
    initializeResponse(
      response,
      init,
      { body: new InnerBody(null, text, null), contentType: "application/json" },
      prefix,
    );
    return response;
  }

  /** @returns {"basic" | "cors" | "default" | "error" | "opaque" | "opaqueredirect"} */
  get type() {
    webidl.assertBranded(this, ResponsePrototype);
    return this[_type];
  }

  /** @returns {string} */
  get url() {
    webidl.assertBranded(this, ResponsePrototype);
    return this[_url];
  }

  /** @returns {boolean} */
  get redirected() {
    webidl.assertBranded(this, ResponsePrototype);
    return this[_redirected] === true;
  }

  /** @returns {number} */
  get status() {
    webidl.assertBranded(this, ResponsePrototype);
    return this[_status];
  }

  /** Workers: the WebSocket of a 101 response, else null. */
  get webSocket() {
    webidl.assertBranded(this, ResponsePrototype);
    return this[_webSocket] ?? null;
  }

  /** @returns {boolean} */
  get ok() {
    webidl.assertBranded(this, ResponsePrototype);
    const status = this[_status];
    return status >= 200 && status <= 299;
  }

  /** @returns {string} */
  get statusText() {
    webidl.assertBranded(this, ResponsePrototype);
    return this[_statusText];
  }

  /** @returns {Headers} */
  get headers() {
    webidl.assertBranded(this, ResponsePrototype);
    return this[_headers];
  }

  /** @returns {Response} */
  clone() {
    webidl.assertBranded(this, ResponsePrototype);
    const prefix = "Failed to execute 'clone' on 'Response'";
    const inner = this[_body];
    if (inner !== null && isBodyUnusable(inner)) {
      throw new TypeError(
        `${prefix}: Body is unusable: it has already been read or is locked`,
      );
    }
    const headers = this[_headers];
    const cloned = new Response(kInternal);
    setResponseFields(
      cloned,
      this[_type],
      this[_status],
      this[_statusText],
      cloneHeaders(headers, guardFromHeaders(headers)),
      inner === null ? null : cloneInnerBody(inner),
    );
    cloned[_url] = this[_url];
    if (this[_redirected] === true) cloned[_redirected] = true;
    return cloned;
  }

  [SymbolFor("Deno.privateCustomInspect")](inspect, inspectOptions) {
    return inspect(
      createFilteredInspectProxy({
        object: this,
        evaluate: ObjectPrototypeIsPrototypeOf(ResponsePrototype, this),
        keys: [
          "body",
          "bodyUsed",
          "headers",
          "ok",
          "redirected",
          "status",
          "statusText",
          "url",
        ],
      }),
      inspectOptions,
    );
  }
}

mixinBody(Response, _body, (response) => response[_headers]);
webidl.configureInterface(Response);
const ResponsePrototype = Response.prototype;

webidl.converters["Response"] = webidl.createInterfaceConverter(
  "Response",
  ResponsePrototype,
);
/**
 * ResponseInit dictionary conversion (members in lexicographic order:
 * headers, status, statusText), written out for speed: it runs for nearly
 * every Response a handler creates.
 */
function convertResponseInit(V, prefix, context) {
  if (V === undefined || V === null) return DEFAULT_INIT;
  const type = typeof V;
  if (type !== "object" && type !== "function") {
    throw webidl.makeException(
      TypeError,
      "can not be converted to a dictionary",
      prefix,
      context,
    );
  }
  let headers = V.headers;
  if (headers !== undefined) {
    headers = webidl.converters["HeadersInit"](
      headers,
      prefix,
      "'headers' of 'ResponseInit'",
    );
  }
  let status = V.status;
  status = status === undefined ? 200 : webidl.converters["unsigned short"](
    status,
    prefix,
    "'status' of 'ResponseInit'",
  );
  let statusText = V.statusText;
  statusText = statusText === undefined ? "" : webidl.converters.ByteString(
    statusText,
    prefix,
    "'statusText' of 'ResponseInit'",
  );
  let webSocket = V.webSocket;
  if (webSocket != null && !isWebSocket(webSocket)) {
    throw webidl.makeException(
      TypeError,
      "'webSocket' of 'ResponseInit' is not a WebSocket",
      prefix,
      context,
    );
  }
  return { __proto__: null, headers, status, statusText, webSocket };
}
webidl.converters["ResponseInit"] = convertResponseInit;

// ---------------------------------------------------------------------------
// Engine API

/**
 * @param {unknown} value
 * @returns {value is Response}
 */
function isResponse(value) {
  return ObjectPrototypeIsPrototypeOf(ResponsePrototype, value) &&
    value[webidl.brand] === webidl.brand;
}

/** A short description of a non-Response value for error messages. */
function describeValue(value) {
  if (value === null) return "null";
  const type = typeof value;
  if (type !== "object") return type;
  let name;
  try {
    name = value.constructor?.name;
  } catch {
    // ignore: a throwing getter tells us nothing useful
  }
  return typeof name === "string" && name !== "" ? name : "object";
}

/**
 * Takes a handler's return value apart for the engine.
 *
 * `body` is null, a string (a string body nobody has read), a Uint8Array
 * (bytes nobody has read), or a ReadableStream (anything else). Static
 * bodies are marked consumed; a stream is returned untouched for the engine
 * to read (which disturbs it).
 *
 * Throws a TypeError for a value that is not a Response, for
 * `Response.error()` (a network error cannot be sent), and for a Response
 * whose body was already read or is locked.
 *
 * @param {unknown} value
 * @returns {{ status: number, headers: string[], body: null | string | Uint8Array | ReadableStream }}
 */
function extractResponseParts(value) {
  if (!isResponse(value)) {
    throw new TypeError(
      `Handler did not return a Response: got ${describeValue(value)}`,
    );
  }
  if (value[_type] === "error") {
    throw new TypeError(
      "Handler returned a network error (Response.error()), which cannot be sent",
    );
  }
  const inner = value[_body];
  let body = null;
  if (inner !== null) {
    if (isBodyUnusable(inner)) {
      throw new TypeError(
        "The Response's body has already been read or is locked, so it cannot be sent",
      );
    }
    body = takeBodyForEngine(inner);
  }
  return {
    status: value[_status],
    headers: headerListFromHeaders(value[_headers]),
    body,
    webSocket: value[_webSocket] ?? null,
  };
}

/**
 * The Response fetch() resolves with, made from what the network (or a
 * `data:`/`blob:` URL) gave: type "basic", headers immutable.
 * @param {number} status
 * @param {string} statusText
 * @param {string[]} flatHeaders  [name0, value0, ...], names lowercase,
 *   values valid; adopted (not copied)
 * @param {InnerBody | null} body
 * @param {string} url  the response's URL, serialized without fragment
 * @param {boolean} redirected  whether a redirect was followed to get here
 * @returns {Response}
 */
/** The 101 response of a fetch() upgraded to a WebSocket. */
function newWebSocketResponse(flatHeaders, url, webSocket) {
  const response = newFetchResponse(101, "Switching Protocols", flatHeaders, null, url, false);
  response[_webSocket] = webSocket;
  return response;
}

function newFetchResponse(status, statusText, flatHeaders, body, url, redirected) {
  const response = new Response(kInternal);
  setResponseFields(
    response,
    "basic",
    status,
    statusText,
    headersFromList(flatHeaders, "immutable"),
    body,
  );
  response[_url] = url;
  if (redirected) response[_redirected] = true;
  return response;
}

/**
 * The response a fetch() with integrity metadata gives: `response` as it
 * was, with `bytes` (its whole body, checked) as the body.
 * @param {Response} response
 * @param {Uint8Array} bytes
 */
function fetchResponseWithBytes(response, bytes) {
  const checked = new Response(kInternal);
  setResponseFields(
    checked,
    response[_type],
    response[_status],
    response[_statusText],
    cloneHeaders(response[_headers], "immutable"),
    response[_body] === null
      ? null
      : new InnerBody(null, bytes, TypedArrayPrototypeGetByteLength(bytes)),
  );
  checked[_url] = response[_url];
  if (response[_redirected] === true) checked[_redirected] = true;
  return checked;
}

export {
  extractResponseParts,
  fetchResponseWithBytes,
  isResponse,
  newFetchResponse,
  newWebSocketResponse,
  Response,
  ResponsePrototype,
};
