// The Cache API (https://w3c.github.io/ServiceWorker/#cache-objects) with
// Cloudflare Workers' semantics: `caches.default` and `caches.open(name)`,
// one entry per URL, freshness from Cache-Control / Expires, what `put`
// refuses (non-GET, 206, `Vary: *`, Set-Cookie unless private=Set-Cookie),
// conditional requests (304) and Range (206) answered from a cached full
// response. The rules and the stores are Rust's (ext/src/cache.rs): this
// file turns Requests and Responses into what the ops take, streams a
// response body into the cache chunk by chunk, and gives back a Response
// whose body is a stream over the stored bytes (bytes up to 64 KiB, whole).
//
// Which caches a script reaches is the engine's business (its worker's
// namespace, set in the isolate's state): nothing here names one.

import { core, primordials } from "ext:core/mod.js";
import { webidl } from "ext:runtime/00_web.js";
import { readableStreamForRid } from "ext:runtime/08_streams.js";
import { headerListFromHeaders } from "ext:runtime/10_headers.js";
import { isRequest, Request } from "ext:runtime/13_request.js";
import { isResponse, Response } from "ext:runtime/14_response.js";
import { fetch } from "ext:runtime/30_fetch.js";

const {
  op_cache_delete,
  op_cache_keys,
  op_cache_match,
  op_cache_put_abort,
  op_cache_put_begin,
  op_cache_put_chunk,
  op_cache_put_commit,
  op_caches_delete,
  op_caches_has,
  op_caches_keys,
  op_caches_open,
} = core.ops;
const {
  ArrayPrototypePush,
  ObjectPrototypeIsPrototypeOf,
  PromiseAll,
  String,
  StringPrototypeIndexOf,
  StringPrototypeSlice,
  StringPrototypeStartsWith,
  Symbol,
  SymbolToStringTag,
  TypeError,
} = primordials;

const illegalConstructor = Symbol("illegalConstructor");
const _name = Symbol("[[name]]");
const _default = Symbol("[[default]]");

/** A Request for `input` (a Request as it is; a string or URL parsed). */
function toRequest(input) {
  return isRequest(input) ? input : new Request(input);
}

/** The cache key of a request: its URL without the fragment. */
function keyOf(request) {
  const url = request.url;
  if (
    !StringPrototypeStartsWith(url, "http:") &&
    !StringPrototypeStartsWith(url, "https:")
  ) {
    throw new TypeError(
      `Cache API: only http: and https: URLs can be cached, not ${url}`,
    );
  }
  const hash = StringPrototypeIndexOf(url, "#");
  return hash === -1 ? url : StringPrototypeSlice(url, 0, hash);
}

function ignoreMethod(options) {
  return options != null && typeof options === "object" &&
    !!options.ignoreMethod;
}

const NULL_BODY_STATUS = [101, 103, 204, 205, 304];

function responseFromHead(head) {
  const pairs = [];
  const list = head.headers;
  for (let i = 0; i < list.length; i += 2) {
    ArrayPrototypePush(pairs, [list[i], list[i + 1]]);
  }
  let nullBody = false;
  for (let i = 0; i < NULL_BODY_STATUS.length; i++) {
    if (NULL_BODY_STATUS[i] === head.status) nullBody = true;
  }
  let body = null;
  if (head.bodyRid !== null) {
    if (nullBody) core.tryClose(head.bodyRid);
    else body = readableStreamForRid(head.bodyRid);
  } else if (head.body !== null && !nullBody) {
    // A small body, whole: the Response's stream reads it in one chunk.
    body = head.body;
  }
  return new Response(body, {
    status: head.status,
    statusText: head.statusText,
    headers: pairs,
  });
}

async function matchOne(name, request, options) {
  if (request.method !== "GET" && !ignoreMethod(options)) return undefined;
  const head = await op_cache_match(
    name,
    keyOf(request),
    headerListFromHeaders(request.headers),
  );
  return head === null ? undefined : responseFromHead(head);
}

/** Streams `response`'s body into put `rid`, chunk by chunk. */
async function streamInto(rid, body) {
  const reader = body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      op_cache_put_chunk(rid, value);
    }
  } catch (error) {
    op_cache_put_abort(rid);
    reader.cancel(error).catch(() => {});
    throw error;
  }
}

async function put(name, request, response) {
  if (!isResponse(response)) {
    throw new TypeError(
      "Failed to execute 'put' on 'Cache': parameter 2 is not of type 'Response'.",
    );
  }
  const key = keyOf(request);
  const body = response.body;
  if (response.bodyUsed || (body !== null && body.locked)) {
    throw new TypeError("Cannot cache a response whose body is already used.");
  }
  const rid = op_cache_put_begin(
    name,
    key,
    request.method,
    headerListFromHeaders(request.headers),
    response.status,
    response.statusText,
    headerListFromHeaders(response.headers),
  );
  if (rid === -1) {
    // Accepted and not stored: the body is disturbed all the same.
    if (body !== null) await body.cancel();
    return undefined;
  }
  if (body !== null) await streamInto(rid, body);
  await op_cache_put_commit(rid);
  return undefined;
}

class Cache {
  constructor(key, name = null) {
    if (key !== illegalConstructor) throw new TypeError("Illegal constructor");
    this[webidl.brand] = webidl.brand;
    this[_name] = name;
  }

  /**
   * @param {RequestInfo} request
   * @param {{ignoreMethod?: boolean}} [options]
   */
  async match(request, options = undefined) {
    webidl.assertBranded(this, CachePrototype);
    webidl.requiredArguments(
      arguments.length,
      1,
      "Failed to execute 'match' on 'Cache'",
    );
    return await matchOne(this[_name], toRequest(request), options);
  }

  async matchAll(request = undefined, options = undefined) {
    webidl.assertBranded(this, CachePrototype);
    const out = [];
    if (request === undefined) {
      const urls = await op_cache_keys(this[_name]);
      for (let i = 0; i < urls.length; i++) {
        const response = await matchOne(this[_name], new Request(urls[i]));
        if (response !== undefined) ArrayPrototypePush(out, response);
      }
      return out;
    }
    const response = await matchOne(this[_name], toRequest(request), options);
    if (response !== undefined) ArrayPrototypePush(out, response);
    return out;
  }

  async add(request) {
    webidl.assertBranded(this, CachePrototype);
    webidl.requiredArguments(
      arguments.length,
      1,
      "Failed to execute 'add' on 'Cache'",
    );
    return await FunctionAddAll(this, [request]);
  }

  async addAll(requests) {
    webidl.assertBranded(this, CachePrototype);
    webidl.requiredArguments(
      arguments.length,
      1,
      "Failed to execute 'addAll' on 'Cache'",
    );
    const list = [];
    for (const request of requests) ArrayPrototypePush(list, request);
    return await FunctionAddAll(this, list);
  }

  /**
   * @param {RequestInfo} request
   * @param {Response} response
   */
  async put(request, response) {
    webidl.assertBranded(this, CachePrototype);
    webidl.requiredArguments(
      arguments.length,
      2,
      "Failed to execute 'put' on 'Cache'",
    );
    return await put(this[_name], toRequest(request), response);
  }

  /**
   * @param {RequestInfo} request
   * @param {{ignoreMethod?: boolean}} [options]
   */
  async delete(request, options = undefined) {
    webidl.assertBranded(this, CachePrototype);
    webidl.requiredArguments(
      arguments.length,
      1,
      "Failed to execute 'delete' on 'Cache'",
    );
    const r = toRequest(request);
    if (r.method !== "GET" && !ignoreMethod(options)) return false;
    return await op_cache_delete(this[_name], keyOf(r));
  }

  async keys(request = undefined, options = undefined) {
    webidl.assertBranded(this, CachePrototype);
    const out = [];
    if (request === undefined) {
      const urls = await op_cache_keys(this[_name]);
      for (let i = 0; i < urls.length; i++) {
        ArrayPrototypePush(out, new Request(urls[i]));
      }
      return out;
    }
    const r = toRequest(request);
    const response = await matchOne(this[_name], r, options);
    if (response !== undefined) {
      ArrayPrototypePush(out, new Request(keyOf(r)));
    }
    return out;
  }

  get [SymbolToStringTag]() {
    return "Cache";
  }
}
const CachePrototype = Cache.prototype;

async function FunctionAddAll(cache, inputs) {
  const requests = [];
  for (let i = 0; i < inputs.length; i++) {
    const request = toRequest(inputs[i]);
    keyOf(request);
    if (request.method !== "GET") {
      throw new TypeError("Cache.addAll: only GET requests can be added.");
    }
    ArrayPrototypePush(requests, request);
  }
  const fetched = [];
  for (let i = 0; i < requests.length; i++) {
    ArrayPrototypePush(fetched, fetch(requests[i]));
  }
  const responses = await PromiseAll(fetched);
  for (let i = 0; i < responses.length; i++) {
    if (!responses[i].ok) {
      throw new TypeError(
        `Cache.addAll: ${requests[i].url} answered ${responses[i].status}`,
      );
    }
  }
  const puts = [];
  for (let i = 0; i < responses.length; i++) {
    ArrayPrototypePush(puts, put(cache[_name], requests[i], responses[i]));
  }
  await PromiseAll(puts);
  return undefined;
}

class CacheStorage {
  constructor(key) {
    if (key !== illegalConstructor) throw new TypeError("Illegal constructor");
    this[webidl.brand] = webidl.brand;
    this[_default] = new Cache(illegalConstructor, null);
  }

  /** Workers' default cache (not among `keys()`). */
  get default() {
    webidl.assertBranded(this, CacheStoragePrototype);
    return this[_default];
  }

  async open(cacheName) {
    webidl.assertBranded(this, CacheStoragePrototype);
    webidl.requiredArguments(
      arguments.length,
      1,
      "Failed to execute 'open' on 'CacheStorage'",
    );
    const name = String(cacheName);
    await op_caches_open(name);
    return new Cache(illegalConstructor, name);
  }

  async has(cacheName) {
    webidl.assertBranded(this, CacheStoragePrototype);
    webidl.requiredArguments(
      arguments.length,
      1,
      "Failed to execute 'has' on 'CacheStorage'",
    );
    return await op_caches_has(String(cacheName));
  }

  async delete(cacheName) {
    webidl.assertBranded(this, CacheStoragePrototype);
    webidl.requiredArguments(
      arguments.length,
      1,
      "Failed to execute 'delete' on 'CacheStorage'",
    );
    return await op_caches_delete(String(cacheName));
  }

  async keys() {
    webidl.assertBranded(this, CacheStoragePrototype);
    return await op_caches_keys();
  }

  /** Looks in every named cache, in the order they were opened. */
  async match(request, options = undefined) {
    webidl.assertBranded(this, CacheStoragePrototype);
    webidl.requiredArguments(
      arguments.length,
      1,
      "Failed to execute 'match' on 'CacheStorage'",
    );
    const r = toRequest(request);
    const names = await op_caches_keys();
    for (let i = 0; i < names.length; i++) {
      const response = await matchOne(names[i], r, options);
      if (response !== undefined) return response;
    }
    return undefined;
  }

  get [SymbolToStringTag]() {
    return "CacheStorage";
  }
}
const CacheStoragePrototype = CacheStorage.prototype;

const caches = new CacheStorage(illegalConstructor);

function isCache(value) {
  return ObjectPrototypeIsPrototypeOf(CachePrototype, value);
}

export { Cache, caches, CacheStorage, isCache };
