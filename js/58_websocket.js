// WebSockets: Workers' WebSocketPair and accept() for the server side, the
// WHATWG `new WebSocket(url)` for the client side, one WebSocket class for
// both as in workerd.
//
// A socket is bound to an engine socket (a rid, ext/src/websocket.rs) once
// it has one: the server end of a pair when its partner goes out in a 101
// response, a client socket once its handshake is done. Until then a pair
// end queues what it sends; a pair whose ends are both kept in the isolate
// delivers messages from one end to the other.
import { core, primordials } from "ext:core/mod.js";
import * as web from "ext:runtime/00_web.js";

const {
  ArrayBufferIsView,
  ArrayPrototypeJoin,
  ArrayPrototypePush,
  ObjectDefineProperty,
  ObjectPrototypeIsPrototypeOf,
  PromisePrototypeThen,
  PromiseResolve,
  RegExpPrototypeTest,
  SafeSet,
  SetPrototypeAdd,
  SetPrototypeHas,
  StringPrototypeToLowerCase,
  Symbol,
  SymbolFor,
  SymbolIterator,
  TypeError,
  TypedArrayPrototypeGetBuffer,
  TypedArrayPrototypeGetByteLength,
  TypedArrayPrototypeGetByteOffset,
  TypedArrayPrototypeGetSymbolToStringTag,
  Uint8Array,
} = primordials;
const {
  op_ws_buffered,
  op_ws_close,
  op_ws_connect,
  op_ws_event_binary,
  op_ws_event_code,
  op_ws_event_text,
  op_ws_next_event,
  op_ws_protocol,
  op_ws_response_headers,
  op_ws_send_binary,
  op_ws_send_text,
} = core.ops;
const { event, webidl } = web;
const { CloseEvent, ErrorEvent, Event, EventTarget, MessageEvent } = event;
const { DOMException } = web.domException;
const { Blob } = web.file;

const CONNECTING = 0;
const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;

const kInternal = Symbol("kInternal");
const _rid = Symbol("[[rid]]");
const _readyState = Symbol("[[readyState]]");
const _url = Symbol("[[url]]");
const _protocol = Symbol("[[protocol]]");
const _binaryType = Symbol("[[binaryType]]");
// The other end of a WebSocketPair (undefined for a client socket).
const _peer = Symbol("[[peer]]");
const _accepted = Symbol("[[accepted]]");
// This end went out in a Response: the script cannot use it any more.
const _inResponse = Symbol("[[inResponse]]");
// What this end sent before it had a rid or its peer accepted.
const _pending = Symbol("[[pending]]");
// Events for this end that came before accept().
const _early = Symbol("[[early]]");
const _pendingBytes = Symbol("[[pendingBytes]]");

const textEncoder = new web.encoding.TextEncoder();

function invalidState(message) {
  return new DOMException(message, "InvalidStateError");
}

class WebSocket extends EventTarget {
  static CONNECTING = CONNECTING;
  static OPEN = OPEN;
  static CLOSING = CLOSING;
  static CLOSED = CLOSED;

  /**
   * @param {string | URL} url
   * @param {string | string[]} [protocols]
   */
  constructor(url, protocols = []) {
    super();
    this[webidl.brand] = webidl.brand;
    this[_readyState] = CONNECTING;
    this[_protocol] = "";
    this[_binaryType] = "blob";
    this[_accepted] = true;
    this[_pending] = [];
    this[_early] = [];
    this[_pendingBytes] = 0;
    if (url === kInternal) {
      // A WebSocketPair's end, or the socket of a fetch() upgrade.
      this[_url] = null;
      this[_binaryType] = "arraybuffer";
      this[_accepted] = false;
      return;
    }
    const prefix = "Failed to construct 'WebSocket'";
    webidl.requiredArguments(arguments.length, 1, prefix);
    url = webidl.converters.USVString(url, prefix, "Argument 1");
    let parsed;
    try {
      parsed = new web.url.URL(url);
    } catch {
      throw new DOMException(`${prefix}: '${url}' is not a valid URL`, "SyntaxError");
    }
    if (parsed.protocol === "http:") parsed.protocol = "ws:";
    else if (parsed.protocol === "https:") parsed.protocol = "wss:";
    if (parsed.protocol !== "ws:" && parsed.protocol !== "wss:") {
      throw new DOMException(
        `${prefix}: the URL's scheme must be ws: or wss:, not '${parsed.protocol}'`,
        "SyntaxError",
      );
    }
    if (parsed.hash !== "") {
      throw new DOMException(`${prefix}: the URL has a fragment`, "SyntaxError");
    }
    this[_url] = parsed.href;
    if (typeof protocols === "string") protocols = [protocols];
    else protocols = webidl.converters["sequence<DOMString>"](protocols, prefix, "Argument 2");
    const seen = new SafeSet();
    for (let i = 0; i < protocols.length; i++) {
      const p = protocols[i];
      if (p === "" || !RegExpPrototypeTest(TOKEN_RE, p) || SetPrototypeHas(seen, StringPrototypeToLowerCase(p))) {
        throw new DOMException(`${prefix}: invalid or repeated subprotocol '${p}'`, "SyntaxError");
      }
      SetPrototypeAdd(seen, StringPrototypeToLowerCase(p));
    }
    PromisePrototypeThen(
      op_ws_connect(this[_url], ArrayPrototypeJoin(protocols, ", "), ""),
      (rid) => {
        if (this[_readyState] === CLOSING) {
          // close() was called while connecting.
          bind(this, rid);
          op_ws_close(rid, 1000, "");
          return;
        }
        this[_readyState] = OPEN;
        bind(this, rid);
        this[_protocol] = op_ws_protocol(rid);
        this.dispatchEvent(new Event("open"));
      },
      (error) => {
        this[_readyState] = CLOSED;
        this.dispatchEvent(new ErrorEvent("error", { message: error?.message ?? String(error), error }));
        this.dispatchEvent(new CloseEvent("close", { code: 1006, reason: "", wasClean: false }));
      },
    );
  }

  get url() {
    webidl.assertBranded(this, WebSocketPrototype);
    return this[_url];
  }

  get readyState() {
    webidl.assertBranded(this, WebSocketPrototype);
    return this[_readyState];
  }

  get protocol() {
    webidl.assertBranded(this, WebSocketPrototype);
    return this[_protocol];
  }

  get extensions() {
    webidl.assertBranded(this, WebSocketPrototype);
    return "";
  }

  get bufferedAmount() {
    webidl.assertBranded(this, WebSocketPrototype);
    const rid = this[_rid];
    return rid === undefined ? this[_pendingBytes] : op_ws_buffered(rid);
  }

  get binaryType() {
    webidl.assertBranded(this, WebSocketPrototype);
    return this[_binaryType];
  }

  set binaryType(value) {
    webidl.assertBranded(this, WebSocketPrototype);
    value = webidl.converters.DOMString(value, "Failed to set 'binaryType' on 'WebSocket'", "Argument 1");
    if (value === "blob" || value === "arraybuffer") this[_binaryType] = value;
  }

  /** Workers: start delivering this socket's events. */
  accept() {
    webidl.assertBranded(this, WebSocketPrototype);
    if (this[_inResponse]) {
      throw new TypeError("Can't accept() a WebSocket that was already used in a Response");
    }
    if (this[_accepted]) return;
    this[_accepted] = true;
    this[_readyState] = OPEN;
    const rid = this[_rid];
    if (rid !== undefined) {
      readEvents(this, rid);
      return;
    }
    // Events that came before accept(), from a peer kept in the isolate.
    const early = this[_early];
    this[_early] = [];
    for (let i = 0; i < early.length; i++) deliverLater(this, early[i]);
    const peer = this[_peer];
    if (peer !== undefined) {
      const pending = peer[_pending];
      peer[_pending] = [];
      peer[_pendingBytes] = 0;
      for (let i = 0; i < pending.length; i++) {
        deliverLater(this, messageEvent(this, pending[i]));
      }
    }
  }

  /** @param {string | ArrayBuffer | ArrayBufferView | Blob} data */
  send(data) {
    webidl.assertBranded(this, WebSocketPrototype);
    const prefix = "Failed to execute 'send' on 'WebSocket'";
    webidl.requiredArguments(arguments.length, 1, prefix);
    if (this[_inResponse]) {
      throw new TypeError("Can't send() on a WebSocket that was used in a Response");
    }
    if (this[_readyState] === CONNECTING) {
      throw invalidState(`${prefix}: the WebSocket is still connecting`);
    }
    if (!this[_accepted]) {
      throw invalidState(`${prefix}: call accept() on this WebSocket before sending messages`);
    }
    if (this[_readyState] !== OPEN) return;
    if (ObjectPrototypeIsPrototypeOf(web.file.BlobPrototype, data)) {
      // Sent once its bytes are read, in order with what follows.
      PromisePrototypeThen(data.arrayBuffer(), (buffer) => this.send(buffer));
      return;
    }
    let message;
    if (typeof data === "string") {
      message = data;
    } else if (core.isArrayBuffer(data)) {
      message = new Uint8Array(data);
    } else if (ArrayBufferIsView(data)) {
      message = TypedArrayPrototypeGetSymbolToStringTag(data) === "Uint8Array"
        ? data
        : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    } else {
      message = webidl.converters.USVString(data, prefix, "Argument 1");
    }
    const rid = this[_rid];
    if (rid !== undefined) {
      if (typeof message === "string") op_ws_send_text(rid, message);
      else op_ws_send_binary(rid, message);
      return;
    }
    const peer = this[_peer];
    if (peer !== undefined && peer[_accepted] && !peer[_inResponse]) {
      deliverLater(peer, messageEvent(peer, message));
      return;
    }
    // Kept until this end is bound (its peer goes out in a response) or
    // its peer accepts.
    ArrayPrototypePush(this[_pending], typeof message === "string" ? message : copyBytes(message));
    this[_pendingBytes] += typeof message === "string"
      ? message.length
      : TypedArrayPrototypeGetByteLength(message);
  }

  /**
   * @param {number} [code]
   * @param {string} [reason]
   */
  close(code = undefined, reason = undefined) {
    webidl.assertBranded(this, WebSocketPrototype);
    const prefix = "Failed to execute 'close' on 'WebSocket'";
    if (code !== undefined) {
      code = webidl.converters["unsigned short"](code, prefix, "Argument 1", { clamp: true });
      if (code !== 1000 && (code < 3000 || code > 4999)) {
        throw new DOMException(
          `${prefix}: the code must be either 1000, or between 3000 and 4999. ${code} is neither.`,
          "InvalidAccessError",
        );
      }
    }
    if (reason !== undefined) {
      reason = webidl.converters.USVString(reason, prefix, "Argument 2");
      if (TypedArrayPrototypeGetByteLength(textEncoder.encode(reason)) > 123) {
        throw new DOMException(`${prefix}: the reason is longer than 123 bytes`, "SyntaxError");
      }
    }
    const state = this[_readyState];
    if (state === CLOSING || state === CLOSED) return;
    this[_readyState] = CLOSING;
    const rid = this[_rid];
    if (rid !== undefined) {
      op_ws_close(rid, code ?? 0, reason ?? "");
      return;
    }
    if (state === CONNECTING) return; // closed once connected
    // A pair kept in the isolate: the peer hears of it; both are closed.
    const peer = this[_peer];
    this[_readyState] = CLOSED;
    const init = { code: code ?? 1005, reason: reason ?? "", wasClean: true };
    if (peer !== undefined && !peer[_inResponse]) {
      const closeEvent = new CloseEvent("close", init);
      if (peer[_accepted]) deliverLater(peer, closeEvent);
      else ArrayPrototypePush(peer[_early], closeEvent);
      peer[_readyState] = CLOSED;
    }
    deliverLater(this, new CloseEvent("close", init));
  }

  [SymbolFor("Deno.privateCustomInspect")](inspect, inspectOptions) {
    return `WebSocket ${inspect({ url: this[_url], readyState: this[_readyState], protocol: this[_protocol] }, inspectOptions)}`;
  }
}

// RFC 7230 tokens: what a subprotocol may be.
const TOKEN_RE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

for (const [name, value] of [["CONNECTING", CONNECTING], ["OPEN", OPEN], ["CLOSING", CLOSING], ["CLOSED", CLOSED]]) {
  ObjectDefineProperty(WebSocket.prototype, name, { __proto__: null, value, enumerable: true });
}
for (const type of ["open", "message", "error", "close"]) {
  event.defineEventHandler(WebSocket.prototype, type);
}
webidl.configureInterface(WebSocket);
const WebSocketPrototype = WebSocket.prototype;

function copyBytes(view) {
  const copy = new Uint8Array(TypedArrayPrototypeGetByteLength(view));
  copy.set(view);
  return copy;
}

function messageEvent(target, message) {
  let data = message;
  if (typeof message !== "string") {
    const bytes = copyBytes(message);
    data = target[_binaryType] === "blob" ? new Blob([bytes]) : TypedArrayPrototypeGetBuffer(bytes);
  }
  return new MessageEvent("message", { data });
}

// Events of a pair kept in the isolate arrive in a later task, as they would
// from a network peer.
function deliverLater(target, ev) {
  PromisePrototypeThen(PromiseResolve(), () => target.dispatchEvent(ev));
}

/** Gives `ws` its engine socket, and sends what it queued meanwhile. */
function bind(ws, rid) {
  ws[_rid] = rid;
  const pending = ws[_pending];
  ws[_pending] = [];
  ws[_pendingBytes] = 0;
  for (let i = 0; i < pending.length; i++) {
    const message = pending[i];
    if (typeof message === "string") op_ws_send_text(rid, message);
    else op_ws_send_binary(rid, message);
  }
  if (ws[_accepted]) readEvents(ws, rid);
}

async function readEvents(ws, rid) {
  for (;;) {
    const kind = await op_ws_next_event(rid);
    switch (kind) {
      case 0: {
        ws.dispatchEvent(new MessageEvent("message", { data: op_ws_event_text(rid) }));
        break;
      }
      case 1: {
        const bytes = op_ws_event_binary(rid);
        const data = ws[_binaryType] === "blob"
          ? new Blob([bytes])
          : TypedArrayPrototypeGetByteOffset(bytes) === 0 &&
              TypedArrayPrototypeGetByteLength(bytes) === TypedArrayPrototypeGetBuffer(bytes).byteLength
          ? TypedArrayPrototypeGetBuffer(bytes)
          : TypedArrayPrototypeGetBuffer(copyBytes(bytes));
        ws.dispatchEvent(new MessageEvent("message", { data }));
        break;
      }
      case 2: {
        const message = op_ws_event_text(rid);
        ws.dispatchEvent(new ErrorEvent("error", { message, error: new TypeError(message) }));
        break;
      }
      default: {
        const code = op_ws_event_code(rid);
        const reason = op_ws_event_text(rid);
        ws[_readyState] = CLOSED;
        core.tryClose(rid);
        ws.dispatchEvent(new CloseEvent("close", { code, reason, wasClean: kind === 3 }));
        return;
      }
    }
  }
}

class WebSocketPair {
  constructor() {
    const client = new WebSocket(kInternal);
    const server = new WebSocket(kInternal);
    client[_peer] = server;
    server[_peer] = client;
    client[_readyState] = OPEN;
    server[_readyState] = OPEN;
    this[0] = client;
    this[1] = server;
  }

  *[SymbolIterator]() {
    yield this[0];
    yield this[1];
  }
}

function isWebSocket(value) {
  return ObjectPrototypeIsPrototypeOf(WebSocketPrototype, value);
}

/**
 * The engine sends `ws` (a pair end) in a 101 response: checks it can go,
 * and returns what to do once the engine socket exists.
 */
function takeForResponse(ws) {
  if (ws[_inResponse]) {
    throw new TypeError("This WebSocket was already used in a Response");
  }
  if (ws[_accepted]) {
    throw new TypeError("Can't return a WebSocket in a Response after calling accept() on it");
  }
  const peer = ws[_peer];
  if (peer === undefined) {
    throw new TypeError(
      "Only one end of a WebSocketPair can be returned in a Response (a socket from fetch() or new WebSocket() cannot)",
    );
  }
  ws[_inResponse] = true;
  return (rid) => bind(peer, rid);
}

/** The socket of a fetch() whose request asked for `Upgrade: websocket`. */
async function connectForFetch(url, headerList) {
  let href = url;
  if (href.startsWith("http:")) href = "ws:" + href.slice(5);
  else if (href.startsWith("https:")) href = "wss:" + href.slice(6);
  let protocols = "";
  let lines = "";
  for (let i = 0; i + 1 < headerList.length; i += 2) {
    const name = headerList[i];
    if (name === "sec-websocket-protocol") {
      protocols = headerList[i + 1];
    } else if (
      name !== "upgrade" && name !== "connection" && name !== "host" &&
      name !== "sec-websocket-key" && name !== "sec-websocket-version" &&
      name !== "sec-websocket-extensions" && name !== "content-length"
    ) {
      lines += (lines === "" ? "" : "\n") + name + ":" + headerList[i + 1];
    }
  }
  const rid = await op_ws_connect(href, protocols, lines);
  const ws = new WebSocket(kInternal);
  ws[_url] = href;
  ws[_readyState] = OPEN;
  ws[_protocol] = op_ws_protocol(rid);
  bind(ws, rid);
  const flat = [];
  const packed = op_ws_response_headers(rid);
  if (packed !== "") {
    const parts = packed.split("\n");
    for (let i = 0; i < parts.length; i++) {
      const colon = parts[i].indexOf(":");
      ArrayPrototypePush(flat, parts[i].slice(0, colon), parts[i].slice(colon + 1));
    }
  }
  return { ws, headers: flat };
}

export { connectForFetch, isWebSocket, takeForResponse, WebSocket, WebSocketPair };
