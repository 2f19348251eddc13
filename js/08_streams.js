// ReadableStream on top of deno_web's: what its (pinned) implementation
// gets wrong.
//
// - ReadableStream.from(string): a string is iterable (by code points), so
//   from() accepts it, as Deno and workerd do; deno_web's async-sequence
//   conversion refuses every primitive. The string goes to it as a String
//   object, which iterates the same.
// - readableStreamForRid (the streams of request, fetch() and cache bodies):
//   deno_web sets the stream up from a plain-object underlying source whose
//   `start` it reads, so an `Object.prototype.start` a script defined reached
//   every such stream (a getter ran, a value broke the stream). The property
//   is set aside while the stream is set up.
import { primordials } from "ext:core/mod.js";
import * as web from "ext:runtime/00_web.js";

const {
  FunctionPrototypeCall,
  ObjectDefineProperty,
  ObjectGetOwnPropertyDescriptor,
  ObjectPrototype,
  ReflectDeleteProperty,
  String,
} = primordials;
const { ReadableStream } = web.streams;
const originalReadableStreamForRid = web.streams.readableStreamForRid;

/** deno_web's readableStreamForRid, out of reach of `Object.prototype`. */
// On the request path (every body stream): no arguments array is made.
export function readableStreamForRid(rid, autoClose, cfn, onError, onClose) {
  const start = ObjectGetOwnPropertyDescriptor(ObjectPrototype, "start");
  if (start === undefined || !start.configurable) {
    return originalReadableStreamForRid(rid, autoClose, cfn, onError, onClose);
  }
  ReflectDeleteProperty(ObjectPrototype, "start");
  try {
    return originalReadableStreamForRid(rid, autoClose, cfn, onError, onClose);
  } finally {
    ObjectDefineProperty(ObjectPrototype, "start", start);
  }
}

const originalFrom = ReadableStream.from;
const from = {
  from(asyncIterable) {
    // No argument: deno_web's TypeError.
    if (arguments.length === 0) return FunctionPrototypeCall(originalFrom, this);
    if (typeof asyncIterable === "string") {
      // deno-lint-ignore no-new-wrappers
      asyncIterable = new String(asyncIterable);
    }
    return FunctionPrototypeCall(originalFrom, this, asyncIterable);
  },
}.from;
ObjectDefineProperty(from, "length", {
  __proto__: null,
  value: originalFrom.length,
  configurable: true,
});
// An IDL operation: writable, enumerable, configurable, as the original.
ObjectDefineProperty(ReadableStream, "from", {
  __proto__: null,
  value: from,
  writable: true,
  enumerable: true,
  configurable: true,
});
