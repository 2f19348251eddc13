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
  ArrayPrototypeJoin,
  ArrayPrototypePush,
  ArrayPrototypeSlice,
  ArrayPrototypeSort,
  ObjectPrototypeIsPrototypeOf,
  RegExpPrototypeTest,
  SafeRegExp,
  StringPrototypeCharCodeAt,
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
// A header value must not contain NUL, CR or LF (it has already been converted
// to a ByteString, so every code unit is <= 0xFF).
const HEADER_VALUE_FORBIDDEN_RE = new SafeRegExp(/[\0\r\n]/);

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
  return !RegExpPrototypeTest(HEADER_VALUE_FORBIDDEN_RE, value);
}

/**
 * @param {string} name
 * @param {string} prefix
 */
function checkHeaderName(name, prefix) {
  if (!isValidHeaderName(name)) {
    throw new TypeError(`${prefix}: Invalid header name: "${name}"`);
  }
}

/**
 * Validates a (name, value) pair for a Headers object and throws when the
 * object cannot be mutated. Returns nothing: with forbidden header names not
 * being enforced, validation never silently ignores a header.
 */
function validateForMutation(headers, name, value, prefix) {
  checkHeaderName(name, prefix);
  if (!isValidHeaderValue(value)) {
    throw new TypeError(`${prefix}: Invalid header value: "${value}"`);
  }
  if (headers[_guard] === "immutable") {
    throw new TypeError(`${prefix}: Headers are immutable`);
  }
}

/**
 * Appends (name, value) to the header list of `headers` after normalizing and
 * validating it. `name` and `value` must already be ByteStrings.
 */
function appendHeader(headers, name, value, prefix) {
  value = normalizeHeaderValue(value);
  validateForMutation(headers, name, value, prefix);
  const list = headers[_list];
  ArrayPrototypePush(list, StringPrototypeToLowerCase(name), value);
  headers[_sortedCache] = null;
}

/**
 * "Fill" a Headers object from a converted HeadersInit.
 * @param {Headers} headers
 * @param {string[][] | Record<string, string> | Headers} object
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
    for (const key in object) {
      appendHeader(headers, key, object[key], prefix);
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
    name = webidl.converters.ByteString(name, prefix, "Argument 1");
    value = webidl.converters.ByteString(value, prefix, "Argument 2");
    appendHeader(this, name, value, prefix);
  }

  /**
   * @param {string} name
   */
  delete(name) {
    webidl.assertBranded(this, HeadersPrototype);
    const prefix = "Failed to execute 'delete' on 'Headers'";
    webidl.requiredArguments(arguments.length, 1, prefix);
    name = webidl.converters.ByteString(name, prefix, "Argument 1");
    validateForMutation(this, name, "", prefix);
    const lower = StringPrototypeToLowerCase(name);
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
    name = webidl.converters.ByteString(name, prefix, "Argument 1");
    checkHeaderName(name, prefix);
    return getHeaderFromList(this[_list], StringPrototypeToLowerCase(name));
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
    name = webidl.converters.ByteString(name, prefix, "Argument 1");
    checkHeaderName(name, prefix);
    return listContains(this[_list], StringPrototypeToLowerCase(name));
  }

  /**
   * @param {string} name
   * @param {string} value
   */
  set(name, value) {
    webidl.assertBranded(this, HeadersPrototype);
    const prefix = "Failed to execute 'set' on 'Headers'";
    webidl.requiredArguments(arguments.length, 2, prefix);
    name = webidl.converters.ByteString(name, prefix, "Argument 1");
    value = webidl.converters.ByteString(value, prefix, "Argument 2");
    value = normalizeHeaderValue(value);
    validateForMutation(this, name, value, prefix);
    const lower = StringPrototypeToLowerCase(name);
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

webidl.converters["HeadersInit"] = (V, prefix, context, opts) => {
  // Union of (sequence<sequence<ByteString>> or record<ByteString, ByteString>)
  if (webidl.type(V) === "Object") {
    const method = V[SymbolIterator];
    if (method !== undefined) {
      if (method === headersIterator && isHeadersCopySource(V)) return V;
      return webidl.converters["sequence<sequence<ByteString>>"](
        V,
        prefix,
        context,
        opts,
      );
    }
    return webidl.converters["record<ByteString, ByteString>"](
      V,
      prefix,
      context,
      opts,
    );
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
function headersFromList(list, guard) {
  const headers = new Headers(kInternal);
  headers[_list] = list;
  headers[_guard] = guard;
  return headers;
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
  ArrayPrototypePush(headers[_list], lowerName, value);
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
  Headers,
  headersFromList,
  HeadersPrototype,
  isValidHeaderName,
  isValidHeaderValue,
  normalizeHeaderValue,
  replaceHeadersFrom,
  setHeadersGuard,
};
