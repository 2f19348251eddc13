// The Fetch standard's Headers class (https://fetch.spec.whatwg.org/#headers-class).
//
// Storage: a header list is kept as a flat array `[name0, value0, name1,
// value1, ...]` with names lowercased. Because every name is lowercased on the
// way in, "byte-case-insensitive" comparisons become plain string equality,
// and the engine can hand us (and take from us) the very same flat shape
// without any conversion (see `headersFromList` / `headerListFromHeaders`).
//
// Forbidden request/response header names are deliberately not enforced: this
// is a server-side runtime, so the "request", "request-no-cors" and "response"
// guards behave like "none". Only "immutable" restricts mutation.

import { core, primordials } from "ext:core/mod.js";
import { consoleNs, webidl } from "ext:runtime/00_web.js";

const {
  ArrayIsArray,
  ArrayIteratorPrototype,
  ArrayPrototype,
  ArrayPrototypeJoin,
  ArrayPrototypePush,
  ArrayPrototypeSlice,
  ArrayPrototypeSort,
  MapPrototypeGet,
  MapPrototypeGetSize,
  MapPrototypeSet,
  ObjectHasOwn,
  ObjectPrototypeIsPrototypeOf,
  ObjectSetPrototypeOf,
  SafeMap,
  RegExpPrototypeTest,
  SafeRegExp,
  StringPrototypeCharCodeAt,
  StringPrototypeIndexOf,
  StringPrototypeSlice,
  StringPrototypeToLowerCase,
  Symbol,
  SymbolFor,
  SymbolIterator,
  TypeError,
} = primordials;

const { createFilteredInspectProxy } = consoleNs;

// Internal slots.
const _list = Symbol("[[headerList]]");
const _guard = Symbol("[[guard]]");
const _sortedCache = Symbol("[[sortedAndCombined]]");
const _iterationPairs = Symbol("[[valuePairsToIterateOver]]");

// Passed to the constructor by internal callers to skip argument processing.
const kInternal = Symbol("headers.internal");

// token = 1*tchar (RFC 9110). Header names must be tokens.
const HEADER_NAME_RE = new SafeRegExp(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/);
// A header value must not contain NUL, CR or LF. Code units above 0xFF are
// matched too: they mean the value was not a ByteString to begin with.
const HEADER_VALUE_INVALID_RE = new SafeRegExp(/[\0\r\n\u0100-\uffff]/);
const NON_BYTE_RE = new SafeRegExp(/[^\x00-\xff]/);

/**
 * HTTP whitespace: U+0009 TAB, U+000A LF, U+000D CR, U+0020 SPACE.
 * @param {number} c
 */
function isHttpWhitespace(c) {
  return c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;
}

/**
 * "Normalize" a header value: strip leading and trailing HTTP whitespace.
 * @param {string} value
 * @returns {string}
 */
function normalizeHeaderValue(value) {
  const len = value.length;
  if (len === 0) return value;
  let start = 0;
  let end = len;
  while (start < end && isHttpWhitespace(StringPrototypeCharCodeAt(value, start))) {
    start++;
  }
  while (end > start && isHttpWhitespace(StringPrototypeCharCodeAt(value, end - 1))) {
    end--;
  }
  if (start === 0 && end === len) return value;
  return StringPrototypeSlice(value, start, end);
}

/** @param {string} name */
function isValidHeaderName(name) {
  return RegExpPrototypeTest(HEADER_NAME_RE, name);
}

/** @param {string} value (already normalized) */
function isValidHeaderValue(value) {
  return !RegExpPrototypeTest(HEADER_VALUE_INVALID_RE, value);
}

// Valid names seen so far, mapped to their lowercase form: most programs use
// a handful of distinct header names, so this skips the validation regex and
// the lowercasing for nearly every call. Bounded, filled only at run time.
const nameCache = new SafeMap();
const NAME_CACHE_LIMIT = 512;

/**
 * Validates a header name (a string) and returns it lowercased.
 * @param {string} name
 * @param {string} prefix
 * @returns {string}
 */
function lowerValidName(name, prefix) {
  const cached = MapPrototypeGet(nameCache, name);
  if (cached !== undefined) return cached;
  if (!RegExpPrototypeTest(HEADER_NAME_RE, name)) {
    throw new TypeError(`${prefix}: Invalid header name: "${name}"`);
  }
  const lower = StringPrototypeToLowerCase(name);
  if (MapPrototypeGetSize(nameCache) < NAME_CACHE_LIMIT) {
    MapPrototypeSet(nameCache, name, lower);
  }
  return lower;
}

/**
 * ByteString conversion with a native check for the common string case.
 */
function toByteString(V, prefix, context) {
  if (typeof V === "string") {
    if (RegExpPrototypeTest(NON_BYTE_RE, V)) {
      throw webidl.makeException(
        TypeError,
        "is not a valid ByteString",
        prefix,
        context,
      );
    }
    return V;
  }
  return webidl.converters.ByteString(V, prefix, context);
}

/**
 * Converts an argument to a string for use as a header name. Names that are
 * not ByteStrings are not tokens either, so the name validation that always
 * follows reports them.
 */
function nameArgument(V, prefix, context) {
  return typeof V === "string"
    ? V
    : webidl.converters.ByteString(V, prefix, context);
}

/**
 * Normalizes and validates (name, value) for `headers` and returns the
 * lowercase name. Throws if invalid or if `headers` is immutable. (With
 * forbidden header names not enforced, validation never silently ignores a
 * header.) `value` must already be normalized.
 */
function validateForMutation(headers, name, value, prefix) {
  const lower = lowerValidName(name, prefix);
  if (RegExpPrototypeTest(HEADER_VALUE_INVALID_RE, value)) {
    throw new TypeError(`${prefix}: Invalid header value: "${value}"`);
  }
  if (headers[_guard] === "immutable") {
    throw new TypeError(`${prefix}: Headers are immutable`);
  }
  return lower;
}

/**
 * Appends (name, value) to the header list of `headers` after normalizing and
 * validating it. `name` and `value` must already be strings.
 */
function appendHeader(headers, name, value, prefix) {
  value = normalizeHeaderValue(value);
  const lower = validateForMutation(headers, name, value, prefix);
  ArrayPrototypePush(headers[_list], lower, value);
  headers[_sortedCache] = null;
}

/**
 * "Fill" a Headers object from a converted HeadersInit.
 * @param {Headers} headers
 * @param {string[][] | FlatRecord | Headers} object
 */
function fillHeaders(headers, object, prefix) {
  if (ArrayIsArray(object)) {
    for (let i = 0; i < object.length; ++i) {
      const pair = object[i];
      if (pair.length !== 2) {
        throw new TypeError(
          `${prefix}: Invalid header: expected a [name, value] pair, got an array of length ${pair.length}`,
        );
      }
      appendHeader(headers, pair[0], pair[1], prefix);
    }
  } else if (isHeadersCopySource(object)) {
    // A genuine Headers object whose iteration was not customised: its list
    // is already validated and normalized, copying it is equivalent to
    // iterating it (iteration only sorts and combines, which the receiving
    // header list would undo/redo identically for all observable purposes).
    if (headers[_guard] === "immutable") {
      throw new TypeError(`${prefix}: Headers are immutable`);
    }
    const src = object[_list];
    const dst = headers[_list];
    for (let i = 0; i < src.length; ++i) {
      ArrayPrototypePush(dst, src[i]);
    }
    headers[_sortedCache] = null;
  } else {
    // A FlatRecord (see convertHeaderRecord).
    const flat = object.flat;
    for (let i = 0; i < flat.length; i += 2) {
      appendHeader(headers, flat[i], flat[i + 1], prefix);
    }
  }
}

/** @param {string} lowerName */
function listContains(list, lowerName) {
  for (let i = 0; i < list.length; i += 2) {
    if (list[i] === lowerName) return true;
  }
  return false;
}

/**
 * "Get" a header from a list: all values for `lowerName`, combined with
 * ", ", or null.
 * @param {string[]} list
 * @param {string} lowerName
 * @returns {string | null}
 */
function getHeaderFromList(list, lowerName) {
  let result = null;
  for (let i = 0; i < list.length; i += 2) {
    if (list[i] === lowerName) {
      result = result === null ? list[i + 1] : result + ", " + list[i + 1];
    }
  }
  return result;
}

/**
 * Removes every header named `lowerName` from `list`, in place.
 */
function deleteFromList(list, lowerName) {
  let w = 0;
  for (let r = 0; r < list.length; r += 2) {
    if (list[r] !== lowerName) {
      if (w !== r) {
        list[w] = list[r];
        list[w + 1] = list[r + 1];
      }
      w += 2;
    }
  }
  list.length = w;
}

/**
 * "Sort and combine" (https://fetch.spec.whatwg.org/#concept-header-list-sort-and-combine).
 * @param {string[]} list
 * @returns {[string, string][]}
 */
function sortAndCombine(list) {
  const names = [];
  const values = { __proto__: null };
  for (let i = 0; i < list.length; i += 2) {
    const name = list[i];
    const existing = values[name];
    if (existing === undefined) {
      ArrayPrototypePush(names, name);
      values[name] = [list[i + 1]];
    } else {
      ArrayPrototypePush(existing, list[i + 1]);
    }
  }
  // Names are lowercase ByteStrings, so code unit order is byte order.
  ArrayPrototypeSort(names);
  const out = [];
  for (let i = 0; i < names.length; ++i) {
    const name = names[i];
    const vals = values[name];
    if (name === "set-cookie") {
      for (let j = 0; j < vals.length; ++j) {
        ArrayPrototypePush(out, [name, vals[j]]);
      }
    } else {
      ArrayPrototypePush(
        out,
        [name, vals.length === 1 ? vals[0] : ArrayPrototypeJoin(vals, ", ")],
      );
    }
  }
  return out;
}

class Headers {
  /**
   * @param {HeadersInit} [init]
   */
  constructor(init = undefined) {
    // Keep the field creation order identical on every path (one hidden class).
    this[webidl.brand] = webidl.brand;
    this[_list] = [];
    this[_guard] = "none";
    this[_sortedCache] = null;
    if (init === kInternal) return;
    const prefix = "Failed to construct 'Headers'";
    if (init !== undefined) {
      init = webidl.converters["HeadersInit"](init, prefix, "Argument 1");
      fillHeaders(this, init, prefix);
    }
  }

  /**
   * @param {string} name
   * @param {string} value
   */
  append(name, value) {
    webidl.assertBranded(this, HeadersPrototype);
    const prefix = "Failed to execute 'append' on 'Headers'";
    webidl.requiredArguments(arguments.length, 2, prefix);
    name = nameArgument(name, prefix, "Argument 1");
    value = toByteString(value, prefix, "Argument 2");
    appendHeader(this, name, value, prefix);
  }

  /**
   * @param {string} name
   */
  delete(name) {
    webidl.assertBranded(this, HeadersPrototype);
    const prefix = "Failed to execute 'delete' on 'Headers'";
    webidl.requiredArguments(arguments.length, 1, prefix);
    name = nameArgument(name, prefix, "Argument 1");
    const lower = validateForMutation(this, name, "", prefix);
    const list = this[_list];
    if (!listContains(list, lower)) return;
    deleteFromList(list, lower);
    this[_sortedCache] = null;
  }

  /**
   * @param {string} name
   * @returns {string | null}
   */
  get(name) {
    webidl.assertBranded(this, HeadersPrototype);
    const prefix = "Failed to execute 'get' on 'Headers'";
    webidl.requiredArguments(arguments.length, 1, prefix);
    name = nameArgument(name, prefix, "Argument 1");
    return getHeaderFromList(this[_list], lowerValidName(name, prefix));
  }

  /**
   * @returns {string[]}
   */
  getSetCookie() {
    webidl.assertBranded(this, HeadersPrototype);
    const list = this[_list];
    const out = [];
    for (let i = 0; i < list.length; i += 2) {
      if (list[i] === "set-cookie") ArrayPrototypePush(out, list[i + 1]);
    }
    return out;
  }

  /**
   * @param {string} name
   * @returns {boolean}
   */
  has(name) {
    webidl.assertBranded(this, HeadersPrototype);
    const prefix = "Failed to execute 'has' on 'Headers'";
    webidl.requiredArguments(arguments.length, 1, prefix);
    name = nameArgument(name, prefix, "Argument 1");
    return listContains(this[_list], lowerValidName(name, prefix));
  }

  /**
   * @param {string} name
   * @param {string} value
   */
  set(name, value) {
    webidl.assertBranded(this, HeadersPrototype);
    const prefix = "Failed to execute 'set' on 'Headers'";
    webidl.requiredArguments(arguments.length, 2, prefix);
    name = nameArgument(name, prefix, "Argument 1");
    value = toByteString(value, prefix, "Argument 2");
    value = normalizeHeaderValue(value);
    const lower = validateForMutation(this, name, value, prefix);
    const list = this[_list];
    // "Set": replace the first occurrence, drop the others.
    let found = -1;
    for (let i = 0; i < list.length; i += 2) {
      if (list[i] === lower) {
        found = i;
        break;
      }
    }
    if (found === -1) {
      ArrayPrototypePush(list, lower, value);
    } else {
      list[found + 1] = value;
      // Remove later duplicates in place.
      let w = found + 2;
      for (let r = found + 2; r < list.length; r += 2) {
        if (list[r] !== lower) {
          if (w !== r) {
            list[w] = list[r];
            list[w + 1] = list[r + 1];
          }
          w += 2;
        }
      }
      list.length = w;
    }
    this[_sortedCache] = null;
  }

  // The "value pairs to iterate over", recomputed lazily after mutations.
  // Read by the pair iterator (webidl.mixinPairIterable) on every step, as
  // the WebIDL iteration algorithm requires.
  get [_iterationPairs]() {
    let sorted = this[_sortedCache];
    if (sorted === null) {
      sorted = sortAndCombine(this[_list]);
      this[_sortedCache] = sorted;
    }
    return sorted;
  }

  [SymbolFor("Deno.privateCustomInspect")](inspect, inspectOptions) {
    if (ObjectPrototypeIsPrototypeOf(HeadersPrototype, this)) {
      const pairs = this[_iterationPairs];
      const obj = {};
      for (let i = 0; i < pairs.length; ++i) {
        const name = pairs[i][0];
        const prev = obj[name];
        // Only set-cookie can repeat; show its values as a list.
        if (prev === undefined) {
          obj[name] = pairs[i][1];
        } else if (ArrayIsArray(prev)) {
          ArrayPrototypePush(prev, pairs[i][1]);
        } else {
          obj[name] = [prev, pairs[i][1]];
        }
      }
      return `Headers ${inspect(obj, inspectOptions)}`;
    }
    return inspect(
      createFilteredInspectProxy({ object: this, evaluate: false, keys: [] }),
      inspectOptions,
    );
  }
}

webidl.mixinPairIterable("Headers", Headers, _iterationPairs, 0, 1);
webidl.configureInterface(Headers);
const HeadersPrototype = Headers.prototype;
const headersIterator = HeadersPrototype[SymbolIterator];

/**
 * Whether `value` is a genuine Headers object whose iteration behaves as
 * specified (so that it can be copied directly instead of iterated).
 */
function isHeadersCopySource(value) {
  return ObjectPrototypeIsPrototypeOf(HeadersPrototype, value) &&
    value[webidl.brand] === webidl.brand &&
    value[SymbolIterator] === headersIterator &&
    HeadersPrototype[SymbolIterator] === headersIterator;
}

// A converted record<ByteString, ByteString> is kept as a flat
// [key0, value0, ...] array inside this wrapper (instead of an object keyed
// by header name) so that filling can walk it without a second lookup.
function FlatRecord(flat) {
  this.flat = flat;
}
ObjectSetPrototypeOf(FlatRecord.prototype, null);

const convertRecordSlow = webidl.createRecordConverter(
  toByteString,
  toByteString,
);

function convertHeaderRecord(V, prefix, context, opts) {
  const flat = [];
  if (core.isProxy(V)) {
    // Exactly the WebIDL steps (the order of the traps is observable).
    const record = convertRecordSlow(V, prefix, context, opts);
    for (const key in record) ArrayPrototypePush(flat, key, record[key]);
  } else {
    for (const key in V) {
      if (!ObjectHasOwn(V, key)) continue;
      const k = toByteString(key, prefix, context);
      ArrayPrototypePush(flat, k, toByteString(V[key], prefix, context));
    }
  }
  return new FlatRecord(flat);
}

const convertPairSlow = webidl.createSequenceConverter(toByteString);
const convertSequenceSlow = webidl.createSequenceConverter(convertPairSlow);
const arrayIterator = ArrayPrototype[SymbolIterator];
const arrayIteratorNext = ArrayIteratorPrototype.next;

/** Whether iterating `V` is known to just walk its indexed elements. */
function isPlainArray(V) {
  return ArrayIsArray(V) && !core.isProxy(V) &&
    V[SymbolIterator] === arrayIterator &&
    ArrayIteratorPrototype.next === arrayIteratorNext;
}

function convertHeaderSequence(V, prefix, context, opts) {
  if (!isPlainArray(V)) return convertSequenceSlow(V, prefix, context, opts);
  const out = [];
  for (let i = 0; i < V.length; ++i) {
    const pair = V[i];
    if (!isPlainArray(pair)) {
      ArrayPrototypePush(out, convertPairSlow(pair, prefix, context, opts));
      continue;
    }
    const converted = [];
    for (let j = 0; j < pair.length; ++j) {
      ArrayPrototypePush(converted, toByteString(pair[j], prefix, context));
    }
    ArrayPrototypePush(out, converted);
  }
  return out;
}

webidl.converters["HeadersInit"] = (V, prefix, context, opts) => {
  // Union of (sequence<sequence<ByteString>> or record<ByteString, ByteString>)
  if (webidl.type(V) === "Object") {
    const method = V[SymbolIterator];
    if (method !== undefined) {
      if (method === headersIterator && isHeadersCopySource(V)) return V;
      return convertHeaderSequence(V, prefix, context, opts);
    }
    return convertHeaderRecord(V, prefix, context, opts);
  }
  throw webidl.makeException(
    TypeError,
    "is not of type '(sequence<sequence<ByteString>> or record<ByteString, ByteString>)'",
    prefix,
    context,
  );
};
webidl.converters["Headers"] = webidl.createInterfaceConverter(
  "Headers",
  HeadersPrototype,
);

// ---------------------------------------------------------------------------
// Internal API (used by the rest of the Fetch layer and by the engine).

/**
 * Builds a Headers object around an existing flat header list. The list is
 * adopted, not copied: the caller must not use it afterwards. Names must be
 * lowercase and values valid; nothing is re-validated.
 * @param {string[]} list  [name0, value0, name1, value1, ...]
 * @param {"none" | "immutable" | "request" | "request-no-cors" | "response"} guard
 * @returns {Headers}
 */
function headersFromList(list, guard = "none") {
  const headers = new Headers(kInternal);
  headers[_list] = list;
  headers[_guard] = guard;
  return headers;
}

/**
 * The header list the engine packs a request's headers into: `name:value`
 * entries joined by "\n", names lowercase, values valid (a name holds no
 * ":" and a value no "\n", so the first ":" of an entry ends its name).
 * @param {string} packed
 * @returns {string[]}  [name0, value0, name1, value1, ...]
 */
function headerListFromPacked(packed) {
  const list = [];
  const length = packed.length;
  let start = 0;
  while (start < length) {
    const colon = StringPrototypeIndexOf(packed, ":", start);
    let end = StringPrototypeIndexOf(packed, "\n", colon);
    if (end === -1) end = length;
    ArrayPrototypePush(
      list,
      StringPrototypeSlice(packed, start, colon),
      StringPrototypeSlice(packed, colon + 1, end),
    );
    start = end + 1;
  }
  return list;
}

/**
 * The header list of `headers` as stored: a flat array
 * `[name0, value0, ...]`, lowercase names, original order, Set-Cookie (and
 * any other repeated header) entries kept separate. This is the live list:
 * callers must treat it as read-only.
 * @param {Headers} headers
 * @returns {string[]}
 */
function headerListFromHeaders(headers) {
  return headers[_list];
}

/**
 * @param {Headers} headers
 * @returns {string}
 */
function guardFromHeaders(headers) {
  return headers[_guard];
}

/**
 * @param {Headers} headers
 * @param {string} guard
 */
function setHeadersGuard(headers, guard) {
  headers[_guard] = guard;
}

/**
 * A new Headers with a copy of `headers`' list and the given guard.
 * @param {Headers} headers
 * @param {string} guard
 */
function cloneHeaders(headers, guard) {
  return headersFromList(ArrayPrototypeSlice(headers[_list]), guard);
}

/**
 * Replaces the header list of `headers` with the contents of a converted
 * HeadersInit ("empty the list, then fill"). Ignores the guard's mutability
 * restriction only in the sense that the caller decides when to call it.
 */
function replaceHeadersFrom(headers, init, prefix) {
  headers[_list] = [];
  headers[_sortedCache] = null;
  const guard = headers[_guard];
  // Filling must not trip over an immutable guard set by the caller.
  headers[_guard] = "none";
  try {
    fillHeaders(headers, init, prefix);
  } finally {
    headers[_guard] = guard;
  }
}

/**
 * Appends without validation (trusted name/value; name lowercase).
 */
function appendTrustedHeader(headers, lowerName, value) {
  const list = headers[_list];
  if (list.length === 0) {
    // The usual case (a body's Content-Type on a new Response or Request):
    // a literal, not a generic push onto an empty list. (An empty list is
    // never shared: clones and guards copy theirs.)
    headers[_list] = [lowerName, value];
  } else {
    ArrayPrototypePush(list, lowerName, value);
  }
  headers[_sortedCache] = null;
}

/**
 * Combined value of a header by lowercase name, or null. No validation.
 * @param {Headers} headers
 * @param {string} lowerName
 */
function getHeader(headers, lowerName) {
  return getHeaderFromList(headers[_list], lowerName);
}

/**
 * @param {Headers} headers
 * @param {string} lowerName
 */
function hasHeader(headers, lowerName) {
  return listContains(headers[_list], lowerName);
}

export {
  appendTrustedHeader,
  cloneHeaders,
  fillHeaders,
  getHeader,
  guardFromHeaders,
  hasHeader,
  headerListFromHeaders,
  headerListFromPacked,
  Headers,
  headersFromList,
  HeadersPrototype,
  isValidHeaderName,
  isValidHeaderValue,
  normalizeHeaderValue,
  replaceHeadersFrom,
  setHeadersGuard,
};
