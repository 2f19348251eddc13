// The Fetch standard's body concept and Body interface mixin
// (https://fetch.spec.whatwg.org/#bodies, #body-mixin).
//
// A body (`InnerBody`) is either
//   - stream-backed: `stream` is a ReadableStream and `source` is null; or
//   - static: `source` is a string, a Uint8Array (a private copy) or a Blob.
//     The ReadableStream of a static body is only created when something asks
//     for it (`.body`, clone of a half-read body, ...). Until that stream has
//     been read from, the static source stays available, so consumers
//     (text(), json(), ...) and the engine (see `takeBodyForEngine`) can use
//     it directly instead of pumping a stream.
//
// The "disturbed"/"locked" state of a static body without a stream is kept
// in `used`; once a stream exists, the stream's own state is authoritative.

import { core, primordials } from "ext:core/mod.js";
import {
  accessors,
  file,
  infra,
  mimesniff,
  streams,
  url,
  webidl,
} from "ext:runtime/00_web.js";
import { readableStreamForRid } from "ext:runtime/08_streams.js";
import { getHeader } from "ext:runtime/10_headers.js";
import {
  formDataFromEntries,
  formDataToBlob,
  FormDataPrototype,
  parseMultipartFormData,
} from "ext:runtime/12_formdata.js";

const {
  isArrayBuffer,
} = core;
const {
  ArrayBufferIsView,
  ArrayBufferPrototypeGetByteLength,
  ArrayBufferPrototypeSlice,
  ArrayPrototypePush,
  DataViewPrototypeGetBuffer,
  DataViewPrototypeGetByteLength,
  DataViewPrototypeGetByteOffset,
  FunctionPrototypeCall,
  JSONParse,
  MapPrototypeGet,
  ObjectDefineProperties,
  ObjectGetOwnPropertyDescriptor,
  ObjectPrototypeIsPrototypeOf,
  PromisePrototypeThen,
  PromiseResolve,
  ReflectHas,
  StringPrototypeCharCodeAt,
  StringPrototypeSlice,
  TypedArrayPrototypeGetBuffer,
  TypedArrayPrototypeGetByteLength,
  TypedArrayPrototypeGetByteOffset,
  TypedArrayPrototypeGetSymbolToStringTag,
  TypedArrayPrototypeSet,
  TypedArrayPrototypeSlice,
  TypeError,
  Uint8Array,
  Uint8ArrayPrototype,
} = primordials;

const {
  acquireReadableStreamDefaultReader,
  createProxy,
  createReadableByteStream,
  getReadableStreamResourceBacking,
  getReadableStreamStoredError,
  isReadableStreamDisturbed,
  isReadableStreamLocked,
  readableByteStreamControllerClose,
  readableByteStreamControllerEnqueue,
  readableByteStreamControllerRespond,
  ReadableByteStreamController,
  readableStreamCollectIntoUint8Array,
  readableStreamDisturb,
  readableStreamPipeTo,
  readableStreamTee,
  ReadableStreamPrototype,
  WritableStream,
} = streams;
const { Blob, BlobPrototype } = file;
const { URLSearchParamsPrototype, parseUrlEncoded } = url;

// Captured now so that later changes to the public prototypes by user code
// cannot alter how bodies are read.
const BlobPrototypeBytes = BlobPrototype.bytes;
const BlobPrototypeSlice = BlobPrototype.slice;
const {
  BlobPrototypeGetSize,
  BlobPrototypeGetType,
} = accessors;
const URLSearchParamsPrototypeToString = URLSearchParamsPrototype.toString;
const ByteControllerGetBYOBRequest = ObjectGetOwnPropertyDescriptor(
  ReadableByteStreamController.prototype,
  "byobRequest",
).get;

function isUint8Array(value) {
  return TypedArrayPrototypeGetSymbolToStringTag(value) === "Uint8Array";
}

class InnerBody {
  /**
   * @param {ReadableStream | null} stream
   * @param {string | Uint8Array | Blob | null} source
   * @param {number | null} length
   */
  constructor(stream, source, length) {
    /** @type {ReadableStream | null} */
    this.stream = stream;
    /**
     * The static source, while it has not been handed to anyone yet.
     * @type {string | Uint8Array | Blob | null}
     */
    this.source = source;
    /** @type {number | null} */
    this.length = length;
    /** Consumed while no stream existed. */
    this.used = false;
    /** Whether the body was created from a ReadableStream (source is null). */
    this.fromStream = stream !== null && source === null;
  }
}

/**
 * The body's stream, created on first request.
 * @param {InnerBody} inner
 * @returns {ReadableStream}
 */
function getBodyStream(inner) {
  let stream = inner.stream;
  if (stream === null) {
    stream = streamFromStaticSource(inner);
    inner.stream = stream;
  }
  return stream;
}

function noop() {}
function resolvedUndefined() {
  return PromiseResolve(undefined);
}

/**
 * @param {InnerBody} inner
 * @returns {ReadableStream}
 */
function streamFromStaticSource(inner) {
  const source = inner.source;
  if (inner.used) {
    // Consumed before anyone looked at the stream: present it the way a
    // fully read stream is left behind (closed, disturbed and locked).
    const stream = createReadableByteStream(
      (controller) => readableByteStreamControllerClose(controller),
      noop,
      resolvedUndefined,
    );
    acquireReadableStreamDefaultReader(stream);
    readableStreamDisturb(stream);
    return stream;
  }
  if (source !== null && typeof source !== "string" && !isUint8Array(source)) {
    inner.source = null;
    return streamFromBlob(source);
  }
  const empty = source === null ||
    (typeof source === "string"
      ? source.length === 0
      : TypedArrayPrototypeGetByteLength(source) === 0);
  if (empty) {
    return createReadableByteStream(
      (controller) => readableByteStreamControllerClose(controller),
      noop,
      resolvedUndefined,
    );
  }
  // The source is only turned into a chunk when the stream is first pulled,
  // so that an untouched stream still leaves the source available.
  return createReadableByteStream(
    noop,
    (controller) => {
      const src = inner.source;
      inner.source = null;
      if (src !== null) {
        const chunk = typeof src === "string" ? core.encode(src) : src;
        readableByteStreamControllerEnqueue(controller, chunk);
      }
      readableByteStreamControllerClose(controller);
    },
    () => {
      inner.source = null;
      return PromiseResolve(undefined);
    },
  );
}

/**
 * A byte stream with the contents of a Blob, read in one go on first pull.
 * (Blob.prototype.stream() would do, but it reads part by part and builds
 * its stream from an object literal, which Object.prototype can affect.)
 * @param {Blob} blob
 * @returns {ReadableStream}
 */
function streamFromBlob(blob) {
  if (FunctionPrototypeCall(BlobPrototypeGetSize, blob) === 0) {
    return createReadableByteStream(
      (controller) => readableByteStreamControllerClose(controller),
      noop,
      resolvedUndefined,
    );
  }
  let pending = true;
  return createReadableByteStream(
    noop,
    (controller) => {
      if (!pending) return undefined;
      pending = false;
      return PromisePrototypeThen(
        FunctionPrototypeCall(BlobPrototypeBytes, blob),
        (bytes) => {
          if (TypedArrayPrototypeGetByteLength(bytes) > 0) {
            readableByteStreamControllerEnqueue(controller, bytes);
          }
          readableByteStreamControllerClose(controller);
          // A BYOB read still waiting (nothing was enqueued) ends here.
          if (FunctionPrototypeCall(ByteControllerGetBYOBRequest, controller) !== null) {
            readableByteStreamControllerRespond(controller, 0);
          }
        },
      );
    },
    resolvedUndefined,
  );
}

/**
 * "Disturbed" as seen through `bodyUsed`.
 * @param {InnerBody} inner
 */
function isBodyUsed(inner) {
  const stream = inner.stream;
  if (stream === null) return inner.used;
  return isReadableStreamDisturbed(stream);
}

/**
 * "Unusable": disturbed or locked.
 * @param {InnerBody} inner
 */
function isBodyUnusable(inner) {
  const stream = inner.stream;
  if (stream === null) return inner.used;
  return isReadableStreamDisturbed(stream) || isReadableStreamLocked(stream);
}

/**
 * Takes the static source out of a usable body, leaving the body in the
 * state a full read would leave it in. Returns null for stream-backed bodies
 * (or static bodies whose stream has already started delivering data).
 * @param {InnerBody} inner
 * @returns {string | Uint8Array | Blob | null}
 */
function takeStaticSource(inner) {
  const source = inner.source;
  if (source === null) return null;
  const stream = inner.stream;
  if (stream === null) {
    inner.used = true;
  } else {
    // The stream exists but was never pulled: lock and disturb it, as the
    // read we perform in its place would have.
    acquireReadableStreamDefaultReader(stream);
    readableStreamDisturb(stream);
  }
  inner.source = null;
  return source;
}

/**
 * Whether a value has a `then` that a promise resolution could pick up
 * through Uint8Array.prototype (i.e. user code patched Object.prototype or a
 * typed array prototype). In that case bytes are collected along a path that
 * never resolves a promise with a typed array.
 */
function thenIsHijacked() {
  return ReflectHas(Uint8ArrayPrototype, "then");
}

function concatChunks(chunks, totalLength) {
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(totalLength);
  let offset = 0;
  for (let i = 0; i < chunks.length; ++i) {
    TypedArrayPrototypeSet(out, chunks[i], offset);
    offset += TypedArrayPrototypeGetByteLength(chunks[i]);
  }
  return out;
}

/**
 * Reads a stream to its end without ever resolving a promise with an object
 * that has a prototype. Resolves with a null-prototype box `{ v: Uint8Array }`.
 */
function collectStreamGuarded(stream) {
  const chunks = [];
  let total = 0;
  const sink = {
    __proto__: null,
    write(chunk) {
      if (!isUint8Array(chunk)) {
        throw new TypeError(
          "Body stream chunks must be Uint8Array to be consumed",
        );
      }
      ArrayPrototypePush(chunks, TypedArrayPrototypeSlice(chunk));
      total += TypedArrayPrototypeGetByteLength(chunk);
    },
  };
  const writable = new WritableStream(sink);
  return PromisePrototypeThen(
    readableStreamPipeTo(stream, writable, false, true, false),
    () => ({ __proto__: null, v: concatChunks(chunks, total) }),
  );
}

function boxBytes(bytes) {
  return { __proto__: null, v: bytes };
}

/**
 * Reads a whole stream of Uint8Array chunks.
 * @returns {Promise<{ v: Uint8Array }>}
 */
function collectStream(stream) {
  if (thenIsHijacked()) return collectStreamGuarded(stream);
  return PromisePrototypeThen(
    readableStreamCollectIntoUint8Array(stream),
    boxBytes,
  );
}

/**
 * "Fully read" a body that was checked to be usable. Resolves with a
 * null-prototype box whose `v` is either the original string source or the
 * body's bytes (a Uint8Array the caller owns).
 * @param {InnerBody} inner
 * @returns {Promise<{ v: string | Uint8Array }>}
 */
function readBody(inner) {
  const source = takeStaticSource(inner);
  if (source !== null) {
    if (typeof source === "string" || isUint8Array(source)) {
      return PromiseResolve({ __proto__: null, v: source });
    }
    // Blob
    if (thenIsHijacked()) {
      return collectStreamGuarded(streamFromBlob(source));
    }
    return PromisePrototypeThen(
      FunctionPrototypeCall(BlobPrototypeBytes, source),
      boxBytes,
    );
  }
  return collectStream(inner.stream);
}

/**
 * "Clone" a usable body: the result is an independent body with the same
 * contents. Stream-backed bodies are teed (this body keeps one branch).
 * @param {InnerBody} inner
 * @returns {InnerBody}
 */
function cloneInnerBody(inner) {
  const source = inner.source;
  if (source !== null) {
    // Static: still unread (the stream, if any, has not been pulled).
    const copy = typeof source !== "string" && isUint8Array(source)
      ? TypedArrayPrototypeSlice(source)
      : source;
    return new InnerBody(null, copy, inner.length);
  }
  const stream = getBodyStream(inner);
  const branches = readableStreamTee(stream, true);
  inner.stream = branches[0];
  const out = new InnerBody(branches[1], null, inner.length);
  out.fromStream = inner.fromStream;
  return out;
}

/**
 * "Create a proxy" of a usable body for `new Request(request)`: the returned
 * body carries the contents, and `inner` becomes disturbed.
 * @param {InnerBody} inner
 * @returns {InnerBody}
 */
function proxyInnerBody(inner) {
  const fromStream = inner.fromStream;
  const source = takeStaticSource(inner);
  let out;
  if (source !== null) {
    out = new InnerBody(null, source, inner.length);
  } else {
    const stream = inner.stream;
    out = new InnerBody(proxyStream(stream), null, inner.length);
    readableStreamDisturb(stream);
  }
  out.fromStream = fromStream;
  return out;
}

/**
 * A stream with the contents of `stream`, which this locks. A stream that is
 * a Rust resource (the body of the request being handled, a fetch() response
 * body) becomes a new stream over the same resource rather than a JavaScript
 * pipe, so that `fetch(request)` and `fetch(url, request)` still hand the
 * body from Rust to Rust.
 * @param {ReadableStream} stream  usable (not locked or disturbed)
 * @returns {ReadableStream}
 */
function proxyStream(stream) {
  const backing = getReadableStreamResourceBacking(stream);
  if (backing == null || !backing.autoClose) return createProxy(stream);
  acquireReadableStreamDefaultReader(stream);
  // The old stream closes the resource when it is collected: the new one
  // keeps it alive for as long as it may read the resource itself.
  return readableStreamForRid(
    backing.rid,
    true,
    undefined,
    undefined,
    () => void stream,
  );
}

/**
 * Hands a usable body over to the engine and marks it consumed.
 * @param {InnerBody} inner
 * @returns {string | Uint8Array | ReadableStream}
 */
function takeBodyForEngine(inner) {
  const source = takeStaticSource(inner);
  if (source === null) return inner.stream;
  if (typeof source === "string" || isUint8Array(source)) return source;
  return streamFromBlob(source);
}

// ---------------------------------------------------------------------------
// Extracting a body (https://fetch.spec.whatwg.org/#concept-bodyinit-extract)

/**
 * Copies the bytes of an ArrayBuffer or view into a new Uint8Array.
 * @param {ArrayBuffer | ArrayBufferView} value
 * @returns {Uint8Array}
 */
function copyBufferSource(value) {
  if (isArrayBuffer(value)) {
    return new Uint8Array(ArrayBufferPrototypeSlice(value, 0));
  }
  let buffer;
  let offset;
  let length;
  if (TypedArrayPrototypeGetSymbolToStringTag(value) !== undefined) {
    buffer = TypedArrayPrototypeGetBuffer(value);
    offset = TypedArrayPrototypeGetByteOffset(value);
    length = TypedArrayPrototypeGetByteLength(value);
  } else {
    buffer = DataViewPrototypeGetBuffer(value);
    offset = DataViewPrototypeGetByteOffset(value);
    length = DataViewPrototypeGetByteLength(value);
  }
  return new Uint8Array(
    ArrayBufferPrototypeSlice(buffer, offset, offset + length),
  );
}

/**
 * "Extract" a body from a converted BodyInit (see the "BodyInit" converter).
 * @param {any} object
 * @param {boolean} [keepalive]
 * @returns {{ body: InnerBody, contentType: string | null }}
 */
function extractBody(object, keepalive = false) {
  if (typeof object === "string") {
    return {
      body: new InnerBody(null, object, null),
      contentType: "text/plain;charset=UTF-8",
    };
  }
  if (ObjectPrototypeIsPrototypeOf(ReadableStreamPrototype, object)) {
    if (keepalive) {
      throw new TypeError(
        "Cannot use a ReadableStream as the body of a keepalive request",
      );
    }
    if (isReadableStreamDisturbed(object) || isReadableStreamLocked(object)) {
      throw new TypeError(
        "The ReadableStream used as a body is already disturbed or locked",
      );
    }
    return { body: new InnerBody(object, null, null), contentType: null };
  }
  if (ObjectPrototypeIsPrototypeOf(BlobPrototype, object)) {
    const type = FunctionPrototypeCall(BlobPrototypeGetType, object);
    return {
      body: new InnerBody(
        null,
        object,
        FunctionPrototypeCall(BlobPrototypeGetSize, object),
      ),
      contentType: type === "" ? null : type,
    };
  }
  if (ObjectPrototypeIsPrototypeOf(FormDataPrototype, object)) {
    const { blob, contentType } = formDataToBlob(object);
    return {
      body: new InnerBody(
        null,
        blob,
        FunctionPrototypeCall(BlobPrototypeGetSize, blob),
      ),
      contentType,
    };
  }
  if (ObjectPrototypeIsPrototypeOf(URLSearchParamsPrototype, object)) {
    const bytes = core.encode(
      FunctionPrototypeCall(URLSearchParamsPrototypeToString, object),
    );
    return {
      body: new InnerBody(null, bytes, TypedArrayPrototypeGetByteLength(bytes)),
      contentType: "application/x-www-form-urlencoded;charset=UTF-8",
    };
  }
  if (isArrayBuffer(object) || ArrayBufferIsView(object)) {
    const bytes = copyBufferSource(object);
    return {
      body: new InnerBody(null, bytes, TypedArrayPrototypeGetByteLength(bytes)),
      contentType: null,
    };
  }
  // Not reachable through the converter; be defensive.
  const text = webidl.converters.USVString(object);
  return {
    body: new InnerBody(null, text, null),
    contentType: "text/plain;charset=UTF-8",
  };
}

// BodyInit = (ReadableStream or Blob or BufferSource or FormData or
// URLSearchParams or USVString)
webidl.converters["BodyInit"] = (V, prefix, context, opts) => {
  if (typeof V === "object" && V !== null) {
    if (ObjectPrototypeIsPrototypeOf(ReadableStreamPrototype, V)) return V;
    if (ObjectPrototypeIsPrototypeOf(BlobPrototype, V)) return V;
    if (ObjectPrototypeIsPrototypeOf(FormDataPrototype, V)) return V;
    if (ObjectPrototypeIsPrototypeOf(URLSearchParamsPrototype, V)) return V;
    if (isArrayBuffer(V)) return V;
    if (ArrayBufferIsView(V)) {
      return webidl.converters.ArrayBufferView(V, prefix, context, opts);
    }
  }
  return webidl.converters.USVString(V, prefix, context, opts);
};
webidl.converters["BodyInit?"] = webidl.createNullableConverter(
  webidl.converters["BodyInit"],
);

// ---------------------------------------------------------------------------
// MIME type of a Request/Response (https://fetch.spec.whatwg.org/#concept-body-mime-type)

/**
 * "Get, decode, and split" a header value.
 * @param {string} value
 * @returns {string[]}
 */
function decodeAndSplitHeaderValue(value) {
  const values = [];
  let temporary = "";
  let position = 0;
  const len = value.length;
  while (true) {
    const start = position;
    while (position < len) {
      const c = StringPrototypeCharCodeAt(value, position);
      if (c === 0x22 /* " */ || c === 0x2c /* , */) break;
      position++;
    }
    temporary += StringPrototypeSlice(value, start, position);
    if (position < len && StringPrototypeCharCodeAt(value, position) === 0x22) {
      const res = infra.collectHttpQuotedString(value, position, false);
      temporary += res.result;
      position = res.position;
      if (position < len) continue;
    }
    // Strip HTTP tab or space from both ends.
    let s = 0;
    let e = temporary.length;
    while (s < e) {
      const c = StringPrototypeCharCodeAt(temporary, s);
      if (c !== 0x09 && c !== 0x20) break;
      s++;
    }
    while (e > s) {
      const c = StringPrototypeCharCodeAt(temporary, e - 1);
      if (c !== 0x09 && c !== 0x20) break;
      e--;
    }
    ArrayPrototypePush(values, StringPrototypeSlice(temporary, s, e));
    temporary = "";
    if (position >= len) return values;
    position++; // the comma
  }
}

/**
 * "Extract a MIME type" from headers. Returns the parsed MIME type record
 * (see deno_web's 01_mimesniff.js) or null.
 * @param {Headers} headers
 */
function extractMimeTypeFromHeaders(headers) {
  const value = getHeader(headers, "content-type");
  if (value === null) return null;
  return mimesniff.extractMimeType(decodeAndSplitHeaderValue(value));
}

/**
 * The serialized MIME type of a Request/Response's headers, or "".
 * @param {Headers} headers
 */
function mimeTypeString(headers) {
  const mimeType = extractMimeTypeFromHeaders(headers);
  return mimeType === null ? "" : mimesniff.serializeMimeType(mimeType);
}

// ---------------------------------------------------------------------------
// Consuming a body

/** @param {string | Uint8Array} v */
function boxValueToText(v) {
  if (typeof v === "string") {
    // What a UTF-8 decode of the encoded string would give: no leading BOM.
    if (v.length !== 0 && StringPrototypeCharCodeAt(v, 0) === 0xfeff) {
      return StringPrototypeSlice(v, 1);
    }
    return v;
  }
  return core.decode(v);
}

/** @param {string | Uint8Array} v */
function boxValueToBytes(v) {
  if (typeof v === "string") return core.encode(v);
  return v;
}

/** @param {Uint8Array} bytes */
function bytesToArrayBuffer(bytes) {
  const buffer = TypedArrayPrototypeGetBuffer(bytes);
  if (
    TypedArrayPrototypeGetByteOffset(bytes) === 0 &&
    TypedArrayPrototypeGetByteLength(bytes) ===
      ArrayBufferPrototypeGetByteLength(buffer)
  ) {
    return buffer;
  }
  return ArrayBufferPrototypeSlice(
    buffer,
    TypedArrayPrototypeGetByteOffset(bytes),
    TypedArrayPrototypeGetByteOffset(bytes) +
      TypedArrayPrototypeGetByteLength(bytes),
  );
}

const EMPTY_BOX = { __proto__: null, v: "" };

/**
 * Checks usability and fully reads the body of a Request/Response object.
 * Throws (the caller is async, so this becomes a rejection) if unusable.
 * @param {InnerBody | null} inner
 * @returns {Promise<{ v: string | Uint8Array }>}
 */
function consumeBody(inner, prefix) {
  if (inner == null) return PromiseResolve(EMPTY_BOX);
  // A body whose stream has errored (an aborted fetch) fails with that error
  // at once, on every call, as browsers do: the caller's promise is already
  // rejected when it is returned.
  const stream = inner.stream;
  const error = stream === null ? undefined : getReadableStreamStoredError(stream);
  if (error !== undefined) throw error;
  if (isBodyUnusable(inner)) {
    throw new TypeError(
      `${prefix}: Body is unusable: it has already been read or is locked`,
    );
  }
  return readBody(inner);
}

/**
 * Installs the Body interface mixin on a class whose instances keep their
 * body (InnerBody | null) under `bodySymbol`; `headersOf(instance)` gives
 * their Headers.
 * @param {Function} klass
 * @param {symbol} bodySymbol
 * @param {(instance: object) => Headers} headersOf
 */
function mixinBody(klass, bodySymbol, headersOf) {
  const prototype = klass.prototype;
  const name = klass.name;

  const methods = {
    get body() {
      webidl.assertBranded(this, prototype);
      const inner = this[bodySymbol];
      if (inner == null) return null;
      return getBodyStream(inner);
    },

    get bodyUsed() {
      webidl.assertBranded(this, prototype);
      const inner = this[bodySymbol];
      return inner != null && isBodyUsed(inner);
    },

    async arrayBuffer() {
      webidl.assertBranded(this, prototype);
      const prefix = `Failed to execute 'arrayBuffer' on '${name}'`;
      const box = await consumeBody(this[bodySymbol], prefix);
      return bytesToArrayBuffer(boxValueToBytes(box.v));
    },

    async blob() {
      webidl.assertBranded(this, prototype);
      const prefix = `Failed to execute 'blob' on '${name}'`;
      const inner = this[bodySymbol];
      if (inner != null && !isBodyUnusable(inner)) {
        const source = inner.source;
        if (
          source !== null && inner.stream === null &&
          typeof source !== "string" && !isUint8Array(source)
        ) {
          // A Blob source: a typed slice shares its data, no read needed.
          takeStaticSource(inner);
          const type = mimeTypeString(headersOf(this));
          return FunctionPrototypeCall(
            BlobPrototypeSlice,
            source,
            0,
            FunctionPrototypeCall(BlobPrototypeGetSize, source),
            type,
          );
        }
      }
      const box = await consumeBody(inner, prefix);
      const type = mimeTypeString(headersOf(this));
      return new Blob([boxValueToBytes(box.v)], { type });
    },

    async bytes() {
      webidl.assertBranded(this, prototype);
      const prefix = `Failed to execute 'bytes' on '${name}'`;
      const box = await consumeBody(this[bodySymbol], prefix);
      return boxValueToBytes(box.v);
    },

    async formData() {
      webidl.assertBranded(this, prototype);
      const prefix = `Failed to execute 'formData' on '${name}'`;
      const inner = this[bodySymbol];
      const box = await consumeBody(inner, prefix);
      const mimeType = extractMimeTypeFromHeaders(headersOf(this));
      if (mimeType !== null) {
        const essence = mimesniff.essence(mimeType);
        if (essence === "multipart/form-data") {
          const boundary = MapPrototypeGet(mimeType.parameters, "boundary");
          if (boundary === undefined) {
            throw new TypeError(
              `${prefix}: Missing boundary parameter in the multipart/form-data Content-Type`,
            );
          }
          const bytes = boxValueToBytes(box.v);
          if (inner != null && TypedArrayPrototypeGetByteLength(bytes) === 0) {
            // What an empty FormData serializes to (see formDataToBlob).
            return formDataFromEntries([]);
          }
          return parseMultipartFormData(bytes, boundary, prefix);
        }
        if (essence === "application/x-www-form-urlencoded") {
          return formDataFromEntries(parseUrlEncoded(boxValueToBytes(box.v)));
        }
      }
      throw new TypeError(
        `${prefix}: The body's Content-Type is neither multipart/form-data nor application/x-www-form-urlencoded`,
      );
    },

    async json() {
      webidl.assertBranded(this, prototype);
      const prefix = `Failed to execute 'json' on '${name}'`;
      const box = await consumeBody(this[bodySymbol], prefix);
      return JSONParse(boxValueToText(box.v));
    },

    async text() {
      webidl.assertBranded(this, prototype);
      const prefix = `Failed to execute 'text' on '${name}'`;
      const box = await consumeBody(this[bodySymbol], prefix);
      return boxValueToText(box.v);
    },
  };

  const descriptors = {};
  for (const key of ["body", "bodyUsed"]) {
    const desc = ObjectGetOwnPropertyDescriptor(methods, key);
    descriptors[key] = {
      __proto__: null,
      get: desc.get,
      enumerable: true,
      configurable: true,
    };
  }
  for (
    const key of [
      "arrayBuffer",
      "blob",
      "bytes",
      "formData",
      "json",
      "text",
    ]
  ) {
    descriptors[key] = {
      __proto__: null,
      value: methods[key],
      writable: true,
      enumerable: true,
      configurable: true,
    };
  }
  ObjectDefineProperties(prototype, descriptors);
}

export {
  cloneInnerBody,
  extractBody,
  extractMimeTypeFromHeaders,
  getBodyStream,
  InnerBody,
  isBodyUnusable,
  isBodyUsed,
  mixinBody,
  proxyInnerBody,
  takeBodyForEngine,
};
