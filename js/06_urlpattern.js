// URLPattern on top of deno_web's: what its (pinned) implementation lacks,
// added to the class it returns.
//
// - `URLPattern.compareComponent(component, left, right)` (tentative, WPT
//   urlpattern-compare.tentative): orders two patterns by the part lists of
//   one of their components, as Chromium does.
// - `URLPattern.prototype.generate(component, groups)` (tentative, WPT
//   urlpattern-generate.tentative): the string one component's pattern
//   matches with its named groups set to `groups`, encoded as the component
//   encodes its fixed text.
// - `test()` and `exec()` take their input as optional, `{}` when missing
//   (`optional URLPatternInput input = {}` in the IDL); deno_web requires it.
//   exec() names a named full-wildcard group (":domain(.*)") by its name,
//   where deno_web calls it "0".
//
// deno_web parses patterns in Rust (the urlpattern crate) and keeps, per
// component, only the pattern string, the regular expression and the group
// names. The part lists the two methods need are computed again here from
// the pattern strings, with the spec's tokenizer and "parse a pattern string"
// and the options and encoding callback the spec compiles each component
// with. A pattern string is generated from a part list, and parsing it gives
// that part list back.
import { primordials } from "ext:core/mod.js";
import * as web from "ext:runtime/00_web.js";

const {
  ArrayPrototypeJoin,
  ArrayPrototypePush,
  ArrayPrototypeSlice,
  FunctionPrototypeCall,
  ObjectDefineProperty,
  ObjectGetOwnPropertyDescriptor,
  ObjectHasOwn,
  ReflectDeleteProperty,
  RegExpPrototypeExec,
  SafeRegExp,
  SafeWeakMap,
  String,
  StringFromCodePoint,
  StringPrototypeCodePointAt,
  StringPrototypeSlice,
  StringPrototypeToLowerCase,
  TypeError,
  encodeURIComponent,
} = primordials;
const { webidl } = web;
const { URLPattern } = web.urlPattern;
const { URL } = web.url;
const URLPatternPrototype = URLPattern.prototype;

// The accessors of URLPattern and URL, as they are now: scripts may replace
// the ones on the prototypes.
const accessor = (proto, name) => ObjectGetOwnPropertyDescriptor(proto, name);
const COMPONENTS = [
  "protocol",
  "username",
  "password",
  "hostname",
  "port",
  "pathname",
  "search",
  "hash",
];
const patternString = { __proto__: null };
const url = { __proto__: null };
for (let i = 0; i < COMPONENTS.length; i++) {
  const name = COMPONENTS[i];
  patternString[name] = accessor(URLPatternPrototype, name).get;
  const { get, set } = accessor(URL.prototype, name);
  url[name] = { get, set };
}
const urlGet = (u, name) => FunctionPrototypeCall(url[name].get, u);
const urlSet = (u, name, value) =>
  FunctionPrototypeCall(url[name].set, u, value);

const componentConverter = webidl.createEnumConverter(
  "URLPatternComponent",
  COMPONENTS,
);
const patternConverter = webidl.createInterfaceConverter(
  "URLPattern",
  URLPatternPrototype,
);
const groupsConverter = webidl.converters["record<USVString, USVString>"];

// ---------------------------------------------------------------------------
// Tokenizing (spec: "tokenize", strict policy: every error throws).

const isASCII = (cp) => StringPrototypeCodePointAt(cp, 0) <= 0x7f;
const identifierStart = new SafeRegExp("^[\\p{ID_Start}$_]$", "u");
const identifierPart = new SafeRegExp("^[\\p{ID_Continue}$\u200c\u200d]$", "u");

function isValidNameCodePoint(cp, first) {
  return RegExpPrototypeExec(first ? identifierStart : identifierPart, cp) !==
    null;
}

// The string as a list of code points (each a string).
function codePoints(input) {
  const list = [];
  for (let i = 0; i < input.length;) {
    const cp = StringPrototypeCodePointAt(input, i);
    const s = StringFromCodePoint(cp);
    ArrayPrototypePush(list, s);
    i += s.length;
  }
  return list;
}

function tokenize(input) {
  const cps = codePoints(input);
  const length = cps.length;
  const tokens = [];
  let index = 0;
  let nextIndex = 0;
  let cp = null;

  const next = () => {
    cp = cps[nextIndex];
    nextIndex += 1;
  };
  const seek = (i) => {
    nextIndex = i;
    next();
  };
  const add = (type, nextPosition, valuePosition, valueLength) => {
    ArrayPrototypePush(tokens, {
      type,
      index,
      value: ArrayPrototypeJoin(
        ArrayPrototypeSlice(cps, valuePosition, valuePosition + valueLength),
        "",
      ),
    });
    index = nextPosition;
  };
  const addWithDefaultLength = (type, nextPosition, valuePosition) =>
    add(type, nextPosition, valuePosition, nextPosition - valuePosition);
  const addDefault = (type) => addWithDefaultLength(type, nextIndex, index);
  const error = (position) => {
    throw new TypeError(
      `Invalid pattern '${input}': unexpected character at ${position}`,
    );
  };

  while (index < length) {
    seek(index);
    if (cp === "*") {
      addDefault("asterisk");
      continue;
    }
    if (cp === "+" || cp === "?") {
      addDefault("other-modifier");
      continue;
    }
    if (cp === "\\") {
      if (index === length - 1) error(index);
      const escapedIndex = nextIndex;
      next();
      addWithDefaultLength("escaped-char", nextIndex, escapedIndex);
      continue;
    }
    if (cp === "{") {
      addDefault("open");
      continue;
    }
    if (cp === "}") {
      addDefault("close");
      continue;
    }
    if (cp === ":") {
      let namePosition = nextIndex;
      const nameStart = namePosition;
      while (namePosition < length) {
        seek(namePosition);
        if (!isValidNameCodePoint(cp, namePosition === nameStart)) break;
        namePosition = nextIndex;
      }
      if (namePosition <= nameStart) error(index);
      addWithDefaultLength("name", namePosition, nameStart);
      continue;
    }
    if (cp === "(") {
      let depth = 1;
      let regexpPosition = nextIndex;
      const regexpStart = regexpPosition;
      while (regexpPosition < length) {
        seek(regexpPosition);
        if (!isASCII(cp)) error(regexpPosition);
        if (regexpPosition === regexpStart && cp === "?") error(regexpPosition);
        if (cp === "\\") {
          if (regexpPosition === length - 1) error(regexpPosition);
          next();
          if (!isASCII(cp)) error(regexpPosition);
          regexpPosition = nextIndex;
          continue;
        }
        if (cp === ")") {
          depth -= 1;
          if (depth === 0) {
            regexpPosition = nextIndex;
            break;
          }
        } else if (cp === "(") {
          depth += 1;
          if (regexpPosition === length - 1) error(regexpPosition);
          const temporaryPosition = nextIndex;
          next();
          if (cp !== "?") error(regexpPosition);
          nextIndex = temporaryPosition;
        }
        regexpPosition = nextIndex;
      }
      if (depth !== 0) error(index);
      const regexpLength = regexpPosition - regexpStart - 1;
      if (regexpLength === 0) error(index);
      add("regexp", regexpPosition, regexpStart, regexpLength);
      continue;
    }
    addDefault("char");
  }
  addWithDefaultLength("end", index, index);
  return tokens;
}

// ---------------------------------------------------------------------------
// Parsing a pattern string into a part list (spec: "parse a pattern string").

const FULL_WILDCARD_REGEXP_VALUE = ".*";

const DEFAULT_OPTIONS = { delimiter: "", prefix: "" };
const HOSTNAME_OPTIONS = { delimiter: ".", prefix: "" };
const PATHNAME_OPTIONS = { delimiter: "/", prefix: "/" };

function escapeRegexpString(input) {
  let result = "";
  for (let i = 0; i < input.length; i++) {
    const c = input[i];
    switch (c) {
      case ".":
      case "+":
      case "*":
      case "?":
      case "^":
      case "$":
      case "{":
      case "}":
      case "(":
      case ")":
      case "[":
      case "]":
      case "|":
      case "/":
      case "\\":
        result += "\\";
    }
    result += c;
  }
  return result;
}

const segmentWildcardRegexp = (options) =>
  `[^${escapeRegexpString(options.delimiter)}]+?`;

function newPart(type, value, modifier, name = "", prefix = "", suffix = "") {
  return { type, value, modifier, name, prefix, suffix };
}

function parsePatternString(input, options, encodingCallback) {
  const tokens = tokenize(input);
  const segmentWildcard = segmentWildcardRegexp(options);
  const parts = [];
  let pendingFixedValue = "";
  let index = 0;
  let nextNumericName = 0;

  const tryConsume = (type) => {
    const token = tokens[index];
    if (token.type !== type) return null;
    index += 1;
    return token;
  };
  const tryConsumeModifier = () =>
    tryConsume("other-modifier") ?? tryConsume("asterisk");
  const tryConsumeRegexpOrWildcard = (nameToken) => {
    const token = tryConsume("regexp");
    if (nameToken === null && token === null) return tryConsume("asterisk");
    return token;
  };
  const consumeRequired = (type) => {
    const token = tryConsume(type);
    if (token === null) {
      throw new TypeError(
        `Invalid pattern '${input}': expected ${type} at ${
          tokens[index].index
        }`,
      );
    }
    return token;
  };
  const consumeText = () => {
    let result = "";
    for (;;) {
      const token = tryConsume("char") ?? tryConsume("escaped-char");
      if (token === null) break;
      result += token.value;
    }
    return result;
  };
  const maybeAddPartFromPendingFixedValue = () => {
    if (pendingFixedValue === "") return;
    const encodedValue = encodingCallback(pendingFixedValue);
    pendingFixedValue = "";
    ArrayPrototypePush(parts, newPart("fixed-text", encodedValue, "none"));
  };
  const addPart = (prefix, nameToken, regexpOrWildcard, suffix, modToken) => {
    let modifier = "none";
    if (modToken !== null) {
      if (modToken.value === "?") modifier = "optional";
      else if (modToken.value === "*") modifier = "zero-or-more";
      else if (modToken.value === "+") modifier = "one-or-more";
    }
    if (
      nameToken === null && regexpOrWildcard === null && modifier === "none"
    ) {
      // "{foo}": joins the fixed text around it.
      pendingFixedValue += prefix;
      return;
    }
    maybeAddPartFromPendingFixedValue();
    if (nameToken === null && regexpOrWildcard === null) {
      // "{foo}?": fixed text with a modifier, a part of its own.
      if (prefix === "") return;
      const encodedValue = encodingCallback(prefix);
      ArrayPrototypePush(parts, newPart("fixed-text", encodedValue, modifier));
      return;
    }
    let regexpValue;
    if (regexpOrWildcard === null) regexpValue = segmentWildcard;
    else if (regexpOrWildcard.type === "asterisk") {
      regexpValue = FULL_WILDCARD_REGEXP_VALUE;
    } else regexpValue = regexpOrWildcard.value;
    let type = "regexp";
    if (regexpValue === segmentWildcard) {
      type = "segment-wildcard";
      regexpValue = "";
    } else if (regexpValue === FULL_WILDCARD_REGEXP_VALUE) {
      type = "full-wildcard";
      regexpValue = "";
    }
    let name = "";
    if (nameToken !== null) name = nameToken.value;
    else if (regexpOrWildcard !== null) {
      name = String(nextNumericName);
      nextNumericName += 1;
    }
    for (let i = 0; i < parts.length; i++) {
      if (parts[i].name === name) {
        throw new TypeError(`Invalid pattern '${input}': duplicate name`);
      }
    }
    const encodedPrefix = encodingCallback(prefix);
    const encodedSuffix = encodingCallback(suffix);
    ArrayPrototypePush(
      parts,
      newPart(type, regexpValue, modifier, name, encodedPrefix, encodedSuffix),
    );
  };

  while (index < tokens.length) {
    const charToken = tryConsume("char");
    let nameToken = tryConsume("name");
    let regexpOrWildcardToken = tryConsumeRegexpOrWildcard(nameToken);
    if (nameToken !== null || regexpOrWildcardToken !== null) {
      // <prefix char><name><regexp><modifier>: a group, added now.
      let prefix = charToken !== null ? charToken.value : "";
      if (prefix !== "" && prefix !== options.prefix) {
        pendingFixedValue += prefix;
        prefix = "";
      }
      maybeAddPartFromPendingFixedValue();
      const modifierToken = tryConsumeModifier();
      addPart(prefix, nameToken, regexpOrWildcardToken, "", modifierToken);
      continue;
    }
    const fixedToken = charToken ?? tryConsume("escaped-char");
    if (fixedToken !== null) {
      pendingFixedValue += fixedToken.value;
      continue;
    }
    const openToken = tryConsume("open");
    if (openToken !== null) {
      // {<prefix><name><regexp><suffix>}<modifier>
      const prefix = consumeText();
      nameToken = tryConsume("name");
      regexpOrWildcardToken = tryConsumeRegexpOrWildcard(nameToken);
      const suffix = consumeText();
      consumeRequired("close");
      const modifierToken = tryConsumeModifier();
      addPart(prefix, nameToken, regexpOrWildcardToken, suffix, modifierToken);
      continue;
    }
    maybeAddPartFromPendingFixedValue();
    consumeRequired("end");
  }
  return parts;
}

// Spec: "generate a regular expression and name list" (the regular
// expression only).
function generateRegularExpression(parts, options) {
  const modifierString = (modifier) => {
    switch (modifier) {
      case "zero-or-more":
        return "*";
      case "optional":
        return "?";
      case "one-or-more":
        return "+";
      default:
        return "";
    }
  };
  let result = "^";
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i];
    const modifier = modifierString(part.modifier);
    if (part.type === "fixed-text") {
      if (part.modifier === "none") result += escapeRegexpString(part.value);
      else result += `(?:${escapeRegexpString(part.value)})${modifier}`;
      continue;
    }
    let regexpValue = part.value;
    if (part.type === "segment-wildcard") {
      regexpValue = segmentWildcardRegexp(options);
    } else if (part.type === "full-wildcard") {
      regexpValue = FULL_WILDCARD_REGEXP_VALUE;
    }
    const repeating = part.modifier === "zero-or-more" ||
      part.modifier === "one-or-more";
    if (part.prefix === "" && part.suffix === "") {
      if (!repeating) result += `(${regexpValue})${modifier}`;
      else result += `((?:${regexpValue})${modifier})`;
      continue;
    }
    const prefix = escapeRegexpString(part.prefix);
    const suffix = escapeRegexpString(part.suffix);
    if (!repeating) {
      result += `(?:${prefix}(${regexpValue})${suffix})${modifier}`;
      continue;
    }
    result += `(?:${prefix}((?:${regexpValue})(?:${suffix}${prefix}` +
      `(?:${regexpValue}))*)${suffix})`;
    if (part.modifier === "zero-or-more") result += "?";
  }
  return result + "$";
}

// ---------------------------------------------------------------------------
// Encoding callbacks (spec: "Canonicalization"), with deno_web's URL.

const DUMMY_URL = "https://dummy.invalid/";

function canonicalizeProtocol(value) {
  if (value === "") return value;
  let parsed;
  try {
    parsed = new URL(value + "://dummy.invalid/");
  } catch {
    throw new TypeError(`Invalid protocol '${value}'`);
  }
  return StringPrototypeSlice(urlGet(parsed, "protocol"), 0, -1);
}

function canonicalizeUsername(value) {
  if (value === "") return value;
  const dummy = new URL(DUMMY_URL);
  urlSet(dummy, "username", value);
  return urlGet(dummy, "username");
}

function canonicalizePassword(value) {
  if (value === "") return value;
  const dummy = new URL(DUMMY_URL);
  urlSet(dummy, "password", value);
  return urlGet(dummy, "password");
}

// The `hostname` setter is the hostname-state parse the spec runs, but it
// keeps the old host where that parse fails: a value is rejected when it
// leaves two different hosts as they were.
const DUMMY_HOSTS = ["dummy.invalid", "dummy2.invalid"];
function canonicalizeHostname(value) {
  if (value === "") return value;
  for (let i = 0; i < DUMMY_HOSTS.length; i++) {
    const host = DUMMY_HOSTS[i];
    const dummy = new URL(`https://${host}/`);
    urlSet(dummy, "hostname", value);
    const result = urlGet(dummy, "hostname");
    if (result !== host) return result;
  }
  throw new TypeError(`Invalid hostname '${value}'`);
}

function canonicalizeIPv6Hostname(value) {
  let result = "";
  const cps = codePoints(value);
  for (let i = 0; i < cps.length; i++) {
    const c = cps[i];
    if (RegExpPrototypeExec(ipv6HostnameCodePoint, c) === null) {
      throw new TypeError(`Invalid IPv6 hostname '${value}'`);
    }
    result += StringPrototypeToLowerCase(c);
  }
  return result;
}
const ipv6HostnameCodePoint = new SafeRegExp("^[0-9A-Fa-f[\\]:]$");

// The spec's dummy URL is `https:`, whose default port 443 would come out
// as the empty string; deno_web's parser (the urlpattern crate) canonicalizes
// ports with a scheme that has no default port, and so does this, for the
// parts to match the pattern strings it made. The `port` setter keeps the
// port null where the parse fails.
function canonicalizePort(value) {
  if (value === "") return value;
  const dummy = new URL("dummy://dummy.invalid/");
  urlSet(dummy, "port", value);
  const result = urlGet(dummy, "port");
  if (result === "") throw new TypeError(`Invalid port '${value}'`);
  return result;
}

function canonicalizePathname(value) {
  if (value === "") return value;
  const leadingSlash = value[0] === "/";
  const dummy = new URL(DUMMY_URL);
  urlSet(dummy, "pathname", (leadingSlash ? "" : "/-") + value);
  const result = urlGet(dummy, "pathname");
  return leadingSlash ? result : StringPrototypeSlice(result, 2);
}

// The opaque-path state of the URL parser (deno_web's URL cannot set the
// path of a URL that has an opaque one): code points up to a `?` or `#`,
// percent-encoded with the C0 control percent-encode set; a space before a
// `?` or `#` is `%20`.
function canonicalizeOpaquePathname(value) {
  if (value === "") return value;
  let result = "";
  const cps = codePoints(value);
  for (let i = 0; i < cps.length; i++) {
    const c = cps[i];
    if (c === "\t" || c === "\n" || c === "\r") continue;
    if (c === "?" || c === "#") break;
    if (c === " ") {
      let after = i + 1;
      while (
        after < cps.length &&
        (cps[after] === "\t" || cps[after] === "\n" || cps[after] === "\r")
      ) after++;
      result += cps[after] === "?" || cps[after] === "#" ? "%20" : " ";
      continue;
    }
    const code = StringPrototypeCodePointAt(c, 0);
    result += code < 0x20 || code > 0x7e ? encodeURIComponent(c) : c;
  }
  return result;
}

// The `search` and `hash` setters drop one leading `?`/`#`, the getters add
// one back.
function canonicalizeSearch(value) {
  if (value === "") return value;
  const dummy = new URL(DUMMY_URL);
  urlSet(dummy, "search", "?" + value);
  return StringPrototypeSlice(urlGet(dummy, "search"), 1);
}

function canonicalizeHash(value) {
  if (value === "") return value;
  const dummy = new URL(DUMMY_URL);
  urlSet(dummy, "hash", "#" + value);
  return StringPrototypeSlice(urlGet(dummy, "hash"), 1);
}

// ---------------------------------------------------------------------------
// A pattern's components as the spec compiles them: options, encoding
// callback and part list.

const SPECIAL_SCHEMES = ["ftp", "file", "http", "https", "ws", "wss"];

function protocolMatchesSpecialScheme(protocolParts) {
  let regexp;
  try {
    regexp = new SafeRegExp(
      generateRegularExpression(protocolParts, DEFAULT_OPTIONS),
      "v",
    );
  } catch {
    return false;
  }
  for (let i = 0; i < SPECIAL_SCHEMES.length; i++) {
    if (RegExpPrototypeExec(regexp, SPECIAL_SCHEMES[i]) !== null) return true;
  }
  return false;
}

function hostnamePatternIsIPv6(input) {
  const cps = codePoints(input);
  if (cps.length < 2) return false;
  return cps[0] === "[" ||
    ((cps[0] === "{" || cps[0] === "\\") && cps[1] === "[");
}

function compileComponent(pattern, name) {
  const input = FunctionPrototypeCall(patternString[name], pattern);
  let options = DEFAULT_OPTIONS;
  let encodingCallback;
  switch (name) {
    case "protocol":
      encodingCallback = canonicalizeProtocol;
      break;
    case "username":
      encodingCallback = canonicalizeUsername;
      break;
    case "password":
      encodingCallback = canonicalizePassword;
      break;
    case "hostname":
      options = HOSTNAME_OPTIONS;
      encodingCallback = hostnamePatternIsIPv6(input)
        ? canonicalizeIPv6Hostname
        : canonicalizeHostname;
      break;
    case "port":
      encodingCallback = canonicalizePort;
      break;
    case "pathname":
      // deno_web's crate also takes the pathname options where the pathname
      // starts with "/" whatever the scheme; the spec's choice is made here
      // (it decides how a group's value is encoded: "/%20" or "/ ").
      const protocol = componentOf(pattern, "protocol");
      if (protocolMatchesSpecialScheme(protocol.parts)) {
        options = PATHNAME_OPTIONS;
        encodingCallback = canonicalizePathname;
      } else {
        encodingCallback = canonicalizeOpaquePathname;
      }
      break;
    case "search":
      encodingCallback = canonicalizeSearch;
      break;
    case "hash":
      encodingCallback = canonicalizeHash;
      break;
  }
  const parts = parsePatternString(input, options, encodingCallback);
  return { parts, options, encodingCallback };
}

// Patterns do not change: their components are compiled once, on first use.
const compiled = new SafeWeakMap();

function componentOf(pattern, name) {
  let components = compiled.get(pattern);
  if (components === undefined) {
    components = { __proto__: null };
    compiled.set(pattern, components);
  }
  return components[name] ??= compileComponent(pattern, name);
}

// ---------------------------------------------------------------------------
// compareComponent: parts compare by type (full wildcard < regexp < segment
// wildcard < fixed text), then modifier (zero-or-more < optional <
// one-or-more < none), then prefix, value and suffix as strings (code units;
// the values are encoded). Names do not count. Where one list is a prefix of
// the other, its next part is compared with an empty fixed-text part, so
// "/foo/" is more specific than "/foo/*".

const TYPE_ORDER = {
  __proto__: null,
  "full-wildcard": 0,
  "regexp": 1,
  "segment-wildcard": 2,
  "fixed-text": 3,
};
const MODIFIER_ORDER = {
  __proto__: null,
  "zero-or-more": 0,
  "optional": 1,
  "one-or-more": 2,
  "none": 3,
};
const EMPTY_FIXED_PART = newPart("fixed-text", "", "none");

const compareValues = (a, b) => (a === b ? 0 : a < b ? -1 : 1);

function compareParts(left, right) {
  return compareValues(TYPE_ORDER[left.type], TYPE_ORDER[right.type]) ||
    compareValues(
      MODIFIER_ORDER[left.modifier],
      MODIFIER_ORDER[right.modifier],
    ) ||
    compareValues(left.prefix, right.prefix) ||
    compareValues(left.value, right.value) ||
    compareValues(left.suffix, right.suffix);
}

function comparePartLists(left, right) {
  const common = left.length < right.length ? left.length : right.length;
  for (let i = 0; i < common; i++) {
    const result = compareParts(left[i], right[i]);
    if (result !== 0) return result;
  }
  if (left.length > common) return compareParts(left[common], EMPTY_FIXED_PART);
  if (right.length > common) {
    return compareParts(EMPTY_FIXED_PART, right[common]);
  }
  return 0;
}

const { compareComponent } = {
  compareComponent(component, left, right) {
    const prefix = "Failed to execute 'compareComponent' on 'URLPattern'";
    webidl.requiredArguments(arguments.length, 3, prefix);
    component = componentConverter(component, prefix, "Argument 1");
    left = patternConverter(left, prefix, "Argument 2");
    right = patternConverter(right, prefix, "Argument 3");
    return comparePartLists(
      componentOf(left, component).parts,
      componentOf(right, component).parts,
    );
  },
};

// ---------------------------------------------------------------------------
// generate: fixed text as it is; each named group (segment wildcard, no
// modifier) with its prefix, its value from `groups` encoded by the
// component's encoding callback, and its suffix. The encoded value must be
// what the group matches (not empty, no delimiter). Modifiers, wildcards and
// regexp groups cannot be generated: TypeError.

const segmentRegExps = { __proto__: null };
const segmentRegExp = (options) =>
  segmentRegExps[options.delimiter] ??= new SafeRegExp(
    `^(?:${segmentWildcardRegexp(options)})$`,
    "u",
  );

const { generate } = {
  generate(component, groups) {
    webidl.assertBranded(this, URLPatternPrototype);
    const prefix = "Failed to execute 'generate' on 'URLPattern'";
    webidl.requiredArguments(arguments.length, 2, prefix);
    component = componentConverter(component, prefix, "Argument 1");
    groups = groupsConverter(groups, prefix, "Argument 2");
    const { parts, options, encodingCallback } = componentOf(this, component);
    let result = "";
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i];
      if (part.modifier !== "none") {
        throw new TypeError(
          `${prefix}: the ${component} pattern has a modifier (?, * or +)`,
        );
      }
      if (part.type === "fixed-text") {
        result += part.value;
        continue;
      }
      if (part.type !== "segment-wildcard") {
        throw new TypeError(
          `${prefix}: the ${component} pattern has a wildcard or regexp group`,
        );
      }
      if (!ObjectHasOwn(groups, part.name)) {
        throw new TypeError(`${prefix}: no value for group '${part.name}'`);
      }
      const value = encodingCallback(groups[part.name]);
      if (RegExpPrototypeExec(segmentRegExp(options), value) === null) {
        throw new TypeError(
          `${prefix}: '${value}' is not a valid value for group '${part.name}'`,
        );
      }
      result += part.prefix + value + part.suffix;
    }
    return result;
  },
};

// ---------------------------------------------------------------------------
// test() and exec() with an optional input.

const originalTest = URLPatternPrototype.test;
const originalExec = URLPatternPrototype.exec;
const { test, exec } = {
  test(input = undefined, baseURL = undefined) {
    return FunctionPrototypeCall(
      originalTest,
      this,
      input === undefined ? {} : input,
      baseURL,
    );
  },
  exec(input = undefined, baseURL = undefined) {
    const result = FunctionPrototypeCall(
      originalExec,
      this,
      input === undefined ? {} : input,
      baseURL,
    );
    if (result !== null) nameWildcardGroups(this, result);
    return result;
  },
};

// deno_web matches a component whose regular expression is `^(.*)$` without
// running it, and reports its one group as "0"; that group may have a name
// (":domain(.*)"). Renamed here.
function nameWildcardGroups(pattern, result) {
  for (let i = 0; i < COMPONENTS.length; i++) {
    const name = COMPONENTS[i];
    const groups = result[name].groups;
    if (!ObjectHasOwn(groups, "0")) continue;
    const { parts } = componentOf(pattern, name);
    if (parts.length !== 1) continue;
    const part = parts[0];
    if (
      part.type === "full-wildcard" && part.modifier === "none" &&
      part.prefix === "" && part.suffix === "" && part.name !== "0"
    ) {
      groups[part.name] = groups["0"];
      ReflectDeleteProperty(groups, "0");
    }
  }
}

// WebIDL operations: writable, enumerable, configurable.
function defineOperation(target, name, method) {
  ObjectDefineProperty(target, name, {
    __proto__: null,
    value: method,
    writable: true,
    enumerable: true,
    configurable: true,
  });
}

defineOperation(URLPattern, "compareComponent", compareComponent);
defineOperation(URLPatternPrototype, "generate", generate);
defineOperation(URLPatternPrototype, "test", test);
defineOperation(URLPatternPrototype, "exec", exec);
