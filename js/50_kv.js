// Workers KV: the KVNamespace objects a worker's KV bindings are, with
// Workers' API, limits and error messages. A binding holds its index among
// its worker's namespaces in a private field; the ops it calls were captured
// here at build time, and the engine hands a script only the namespaces
// bound to its worker (the isolate's op state holds no other).
import { core, primordials } from "ext:core/mod.js";
import { streams } from "ext:runtime/00_web.js";

const {
  op_kv_delete,
  op_kv_get,
  op_kv_list,
  op_kv_put,
  op_kv_put_stream,
} = core.ops;
const {
  ArrayBufferIsView,
  ArrayBufferPrototype,
  ArrayBufferPrototypeGetByteLength,
  ArrayIsArray,
  ArrayPrototypeMap,
  Error,
  JSONParse,
  JSONStringify,
  MapPrototypeSet,
  NumberIsNaN,
  ObjectPrototypeIsPrototypeOf,
  ArrayPrototypeIncludes,
  String,
  Symbol,
  SymbolToStringTag,
  TypeError,
  TypedArrayPrototypeGetBuffer,
  TypedArrayPrototypeGetByteLength,
  TypedArrayPrototypeGetByteOffset,
  Uint8Array,
  DataViewPrototypeGetBuffer,
  DataViewPrototypeGetByteLength,
  DataViewPrototypeGetByteOffset,
  ObjectPrototypeToString,
} = primordials;
const { ReadableStream, ReadableStreamPrototype, resourceForReadableStream } =
  streams;

const MAX_KEY_BYTES = 512;
const MAX_VALUE_BYTES = 25 * 1024 * 1024;
const MAX_METADATA_BYTES = 1024;
const MAX_BULK_KEYS = 100;
const MAX_LIST_KEYS = 1000;
const MIN_CACHE_TTL = 30;
const TYPES = ["text", "json", "arrayBuffer", "stream"];

const illegalConstructor = Symbol("illegalConstructor");
// What a bulk get returns: the Map scripts know (primordials' SafeMap is
// another class).
const PublicMap = globalThis.Map;

function utf8Length(string) {
  let length = 0;
  for (let i = 0; i < string.length; i++) {
    const c = string.charCodeAt(i);
    if (c < 0x80) length += 1;
    else if (c < 0x800) length += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < string.length) {
      const next = string.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        length += 4;
        i++;
      } else length += 3;
    } else length += 3;
  }
  return length;
}

function keyName(method, key) {
  const name = String(key);
  if (name === "") throw new TypeError("Key name cannot be empty.");
  if (name === ".") throw new TypeError('"." is not allowed as a key name.');
  if (name === "..") throw new TypeError('".." is not allowed as a key name.');
  const length = utf8Length(name);
  if (length > MAX_KEY_BYTES) {
    throw new Error(
      `KV ${method} failed: 414 UTF-8 encoded length of ${length} exceeds key length limit of ${MAX_KEY_BYTES}.`,
    );
  }
  return name;
}

// `get(key, "json")` or `get(key, { type: "json", cacheTtl })`.
function readType(options) {
  let type = options;
  if (options !== null && typeof options === "object") {
    type = options.type;
    const cacheTtl = options.cacheTtl;
    if (cacheTtl !== undefined && !(cacheTtl >= MIN_CACHE_TTL)) {
      throw new Error(
        `KV GET failed: 400 Invalid cache_ttl of ${cacheTtl}. Cache TTL must be at least ${MIN_CACHE_TTL}.`,
      );
    }
  }
  return type === undefined || type === null ? "text" : String(type);
}

function decode(bytes, type) {
  switch (type) {
    case "text":
      return core.decode(bytes);
    case "json":
      return JSONParse(core.decode(bytes));
    case "arrayBuffer":
      return TypedArrayPrototypeGetBuffer(bytes);
    case "stream":
      return new ReadableStream({
        type: "bytes",
        start(controller) {
          if (bytes.byteLength > 0) controller.enqueue(bytes);
          controller.close();
        },
      });
  }
}

function metadataOf(json) {
  return json === null ? null : JSONParse(json);
}

// A value as bytes to copy, or a stream to read from Rust.
function putValue(value) {
  if (typeof value === "string") return core.encode(value);
  if (value === null || typeof value !== "object") {
    // What WebIDL's DOMString conversion makes of other primitives.
    return core.encode(String(value));
  }
  if (ObjectPrototypeIsPrototypeOf(ArrayBufferPrototype, value)) {
    return new Uint8Array(value, 0, ArrayBufferPrototypeGetByteLength(value));
  }
  if (ArrayBufferIsView(value)) {
    if (ObjectPrototypeToString(value) === "[object DataView]") {
      return new Uint8Array(
        DataViewPrototypeGetBuffer(value),
        DataViewPrototypeGetByteOffset(value),
        DataViewPrototypeGetByteLength(value),
      );
    }
    return new Uint8Array(
      TypedArrayPrototypeGetBuffer(value),
      TypedArrayPrototypeGetByteOffset(value),
      TypedArrayPrototypeGetByteLength(value),
    );
  }
  if (ObjectPrototypeIsPrototypeOf(ReadableStreamPrototype, value)) {
    return value;
  }
  throw new TypeError(
    "KV put() accepts only strings, ArrayBuffers, ArrayBufferViews, and ReadableStreams as values.",
  );
}

function seconds(value) {
  if (value === undefined || value === null) return NaN;
  const n = +value;
  return NumberIsNaN(n) ? -1 : n;
}

class KVNamespace {
  #ns;

  constructor(key, ns) {
    if (key !== illegalConstructor) throw new TypeError("Illegal constructor");
    this.#ns = ns;
  }

  get(key, options) {
    return this.#get(key, options, false);
  }

  getWithMetadata(key, options) {
    return this.#get(key, options, true);
  }

  async #get(key, options, withMetadata) {
    const type = readType(options);
    if (ArrayIsArray(key)) return this.#getBulk(key, type, withMetadata);
    const name = keyName("GET", key);
    if (!ArrayPrototypeIncludes(TYPES, type)) {
      throw new TypeError(
        'Unknown response type. Possible types are "text", "arrayBuffer", "json", and "stream".',
      );
    }
    const { 0: entry } = await op_kv_get(this.#ns, [name]);
    if (entry === null) {
      return withMetadata
        ? { value: null, metadata: null, cacheStatus: null }
        : null;
    }
    const value = decode(entry[0], type);
    if (!withMetadata) return value;
    return { value, metadata: metadataOf(entry[1]), cacheStatus: null };
  }

  async #getBulk(keys, type, withMetadata) {
    if (keys.length > MAX_BULK_KEYS) {
      throw new Error(
        `KV GET_BULK failed: 400 You can request a maximum of ${MAX_BULK_KEYS} keys`,
      );
    }
    if (type !== "text" && type !== "json") {
      throw new Error(
        `KV GET_BULK failed: 400 "${type}" is not a valid type. Use "json" or "text"`,
      );
    }
    const names = ArrayPrototypeMap(keys, (key) => keyName("GET_BULK", key));
    const entries = names.length === 0 ? [] : await op_kv_get(this.#ns, names);
    const map = new PublicMap();
    for (let i = 0; i < names.length; i++) {
      const entry = entries[i];
      let value = null;
      if (entry !== null) {
        value = decode(entry[0], type);
        if (withMetadata) {
          value = { value, metadata: metadataOf(entry[1]) };
        }
      } else if (withMetadata) {
        value = { value: null, metadata: null };
      }
      MapPrototypeSet(map, names[i], value);
    }
    return map;
  }

  async put(key, value, options = undefined) {
    const name = keyName("PUT", key);
    const body = putValue(value);
    const expiration = seconds(options?.expiration);
    const expirationTtl = seconds(options?.expirationTtl);
    let metadata = "";
    if (options?.metadata !== undefined && options?.metadata !== null) {
      metadata = JSONStringify(options.metadata);
      const length = utf8Length(metadata);
      if (length > MAX_METADATA_BYTES) {
        throw new Error(
          `KV PUT failed: 413 Metadata length of ${length} exceeds limit of ${MAX_METADATA_BYTES}.`,
        );
      }
    }
    if (ObjectPrototypeIsPrototypeOf(ReadableStreamPrototype, body)) {
      const rid = resourceForReadableStream(body);
      await op_kv_put_stream(
        this.#ns,
        name,
        rid,
        expiration,
        expirationTtl,
        metadata,
      );
      return;
    }
    if (body.byteLength > MAX_VALUE_BYTES) {
      throw new Error(
        `KV PUT failed: 413 Value length of ${body.byteLength} exceeds limit of ${MAX_VALUE_BYTES}.`,
      );
    }
    await op_kv_put(this.#ns, name, body, expiration, expirationTtl, metadata);
  }

  async delete(key) {
    await op_kv_delete(this.#ns, keyName("DELETE", key));
  }

  async list(options = undefined) {
    const prefix = options?.prefix ?? "";
    const cursor = options?.cursor ?? "";
    let limit = options?.limit ?? MAX_LIST_KEYS;
    limit = +limit;
    if (!(limit > 0)) limit = MAX_LIST_KEYS;
    if (limit > MAX_LIST_KEYS) {
      throw new Error(
        `KV GET failed: 400 Invalid key_count_limit of ${limit}. Please specify an integer less than or equal to ${MAX_LIST_KEYS}.`,
      );
    }
    const { 0: rows, 1: next } = await op_kv_list(
      this.#ns,
      String(prefix),
      limit | 0,
      String(cursor),
    );
    const keys = ArrayPrototypeMap(rows, (row) => {
      const key = { name: row[0] };
      if (row[1] !== null) key.expiration = row[1];
      if (row[2] !== null) key.metadata = JSONParse(row[2]);
      return key;
    });
    return next === null
      ? { keys, list_complete: true, cacheStatus: null }
      : { keys, list_complete: false, cursor: next, cacheStatus: null };
  }

  get [SymbolToStringTag]() {
    return "KvNamespace";
  }
}

// The engine's only way to make a binding: `ns` indexes the namespaces of
// the worker whose isolate this is.
function createKvNamespace(ns) {
  return new KVNamespace(illegalConstructor, ns);
}

export { createKvNamespace, KVNamespace };
