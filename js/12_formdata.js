// FormData (https://xhr.spec.whatwg.org/#interface-formdata), plus the
// multipart/form-data serialization used when a FormData becomes a body
// (https://html.spec.whatwg.org/#multipart/form-data-encoding-algorithm) and
// the parser behind `body.formData()` for multipart/form-data bodies.

import { core, primordials } from "ext:core/mod.js";
import { accessors, consoleNs, file, webidl } from "ext:runtime/00_web.js";

const {
  ArrayPrototypePush,
  FunctionPrototypeCall,
  MathRandom,
  NumberPrototypeToString,
  ObjectPrototypeIsPrototypeOf,
  RegExpPrototypeTest,
  SafeRegExp,
  StringPrototypeCharCodeAt,
  StringPrototypeIndexOf,
  StringPrototypeReplace,
  StringPrototypeSlice,
  StringPrototypeStartsWith,
  StringPrototypeToLowerCase,
  Symbol,
  SymbolFor,
  TypedArrayPrototypeGetByteLength,
  TypedArrayPrototypeSubarray,
  TypeError,
} = primordials;

const { createFilteredInspectProxy } = consoleNs;
const { Blob, BlobPrototype, File, FilePrototype } = file;

const {
  BlobPrototypeGetType,
  FilePrototypeGetName,
  FilePrototypeGetLastModified,
} = accessors;

const _entries = Symbol("[[entryList]]");
const kInternal = Symbol("formdata.internal");

/**
 * "Create an entry" for a Blob value: the value stored is always a File.
 * @param {Blob} blob
 * @param {string | undefined} filename
 * @returns {File}
 */
function fileForEntry(blob, filename) {
  const isFile = ObjectPrototypeIsPrototypeOf(FilePrototype, blob);
  if (isFile && filename === undefined) return blob;
  const type = FunctionPrototypeCall(BlobPrototypeGetType, blob);
  if (!isFile) {
    return new File([blob], filename === undefined ? "blob" : filename, {
      type,
    });
  }
  return new File([blob], filename, {
    type,
    lastModified: FunctionPrototypeCall(FilePrototypeGetLastModified, blob),
  });
}

/**
 * Converts the (value, filename) arguments of append()/set() following the
 * WebIDL overload resolution between (USVString name, USVString value) and
 * (USVString name, Blob blobValue, optional USVString filename).
 */
function convertEntryValue(argCount, value, filename, prefix) {
  if (argCount > 2 || ObjectPrototypeIsPrototypeOf(BlobPrototype, value)) {
    value = webidl.converters.Blob(value, prefix, "Argument 2");
    if (filename !== undefined) {
      filename = webidl.converters.USVString(filename, prefix, "Argument 3");
    }
    return fileForEntry(value, filename);
  }
  return webidl.converters.USVString(value, prefix, "Argument 2");
}

class FormData {
  /**
   * @param {undefined} form  no HTMLFormElement exists in this runtime
   * @param {undefined} submitter
   */
  constructor(form = undefined, submitter = undefined) {
    this[webidl.brand] = webidl.brand;
    this[_entries] = [];
    if (form === kInternal) return;
    if (form !== undefined) {
      throw webidl.makeException(
        TypeError,
        "is not of type 'HTMLFormElement'",
        "Failed to construct 'FormData'",
        "Argument 1",
      );
    }
    void submitter;
  }

  /**
   * @param {string} name
   * @param {string | Blob} value
   * @param {string} [filename]
   */
  append(name, value, filename = undefined) {
    webidl.assertBranded(this, FormDataPrototype);
    const prefix = "Failed to execute 'append' on 'FormData'";
    webidl.requiredArguments(arguments.length, 2, prefix);
    name = webidl.converters.USVString(name, prefix, "Argument 1");
    value = convertEntryValue(arguments.length, value, filename, prefix);
    ArrayPrototypePush(this[_entries], [name, value]);
  }

  /**
   * @param {string} name
   */
  delete(name) {
    webidl.assertBranded(this, FormDataPrototype);
    const prefix = "Failed to execute 'delete' on 'FormData'";
    webidl.requiredArguments(arguments.length, 1, prefix);
    name = webidl.converters.USVString(name, prefix, "Argument 1");
    const list = this[_entries];
    let w = 0;
    for (let r = 0; r < list.length; ++r) {
      const entry = list[r];
      if (entry[0] !== name) list[w++] = entry;
    }
    list.length = w;
  }

  /**
   * @param {string} name
   * @returns {FormDataEntryValue | null}
   */
  get(name) {
    webidl.assertBranded(this, FormDataPrototype);
    const prefix = "Failed to execute 'get' on 'FormData'";
    webidl.requiredArguments(arguments.length, 1, prefix);
    name = webidl.converters.USVString(name, prefix, "Argument 1");
    const list = this[_entries];
    for (let i = 0; i < list.length; ++i) {
      if (list[i][0] === name) return list[i][1];
    }
    return null;
  }

  /**
   * @param {string} name
   * @returns {FormDataEntryValue[]}
   */
  getAll(name) {
    webidl.assertBranded(this, FormDataPrototype);
    const prefix = "Failed to execute 'getAll' on 'FormData'";
    webidl.requiredArguments(arguments.length, 1, prefix);
    name = webidl.converters.USVString(name, prefix, "Argument 1");
    const list = this[_entries];
    const out = [];
    for (let i = 0; i < list.length; ++i) {
      if (list[i][0] === name) ArrayPrototypePush(out, list[i][1]);
    }
    return out;
  }

  /**
   * @param {string} name
   * @returns {boolean}
   */
  has(name) {
    webidl.assertBranded(this, FormDataPrototype);
    const prefix = "Failed to execute 'has' on 'FormData'";
    webidl.requiredArguments(arguments.length, 1, prefix);
    name = webidl.converters.USVString(name, prefix, "Argument 1");
    const list = this[_entries];
    for (let i = 0; i < list.length; ++i) {
      if (list[i][0] === name) return true;
    }
    return false;
  }

  /**
   * @param {string} name
   * @param {string | Blob} value
   * @param {string} [filename]
   */
  set(name, value, filename = undefined) {
    webidl.assertBranded(this, FormDataPrototype);
    const prefix = "Failed to execute 'set' on 'FormData'";
    webidl.requiredArguments(arguments.length, 2, prefix);
    name = webidl.converters.USVString(name, prefix, "Argument 1");
    value = convertEntryValue(arguments.length, value, filename, prefix);
    const entry = [name, value];
    const list = this[_entries];
    let found = -1;
    for (let i = 0; i < list.length; ++i) {
      if (list[i][0] === name) {
        found = i;
        break;
      }
    }
    if (found === -1) {
      ArrayPrototypePush(list, entry);
      return;
    }
    list[found] = entry;
    let w = found + 1;
    for (let r = found + 1; r < list.length; ++r) {
      if (list[r][0] !== name) list[w++] = list[r];
    }
    list.length = w;
  }

  [SymbolFor("Deno.privateCustomInspect")](inspect, inspectOptions) {
    if (ObjectPrototypeIsPrototypeOf(FormDataPrototype, this)) {
      return `FormData ${inspect(this[_entries], inspectOptions)}`;
    }
    return inspect(
      createFilteredInspectProxy({ object: this, evaluate: false, keys: [] }),
      inspectOptions,
    );
  }
}

webidl.mixinPairIterable("FormData", FormData, _entries, 0, 1);
webidl.configureInterface(FormData);
const FormDataPrototype = FormData.prototype;
webidl.converters["FormData"] = webidl.createInterfaceConverter(
  "FormData",
  FormDataPrototype,
);

/**
 * A FormData whose entry list is `entries` (adopted, not copied).
 * @param {[string, string | File][]} entries
 * @returns {FormData}
 */
function formDataFromEntries(entries) {
  const fd = new FormData(kInternal);
  fd[_entries] = entries;
  return fd;
}

/**
 * @param {FormData} formData
 * @returns {[string, string | File][]}
 */
function entriesFromFormData(formData) {
  return formData[_entries];
}

// ---------------------------------------------------------------------------
// multipart/form-data serialization

// A lone CR, or a lone LF.
const LONE_NEWLINE_RE = new SafeRegExp(/\r(?!\n)|(?<!\r)\n/g);
const HAS_NEWLINE_RE = new SafeRegExp(/[\r\n]/);
const NEEDS_ESCAPE_RE = new SafeRegExp(/[\r\n"]/);
const ESCAPE_RE = new SafeRegExp(/[\r\n"]/g);

/** Converts every lone CR or LF to CRLF. */
function normalizeNewlines(s) {
  if (!RegExpPrototypeTest(HAS_NEWLINE_RE, s)) return s;
  return StringPrototypeReplace(s, LONE_NEWLINE_RE, "\r\n");
}

function escapeChar(c) {
  return c === "\n" ? "%0A" : c === "\r" ? "%0D" : "%22";
}

/** Escapes a field name or filename for a Content-Disposition header. */
function escapeDispositionValue(s) {
  if (!RegExpPrototypeTest(NEEDS_ESCAPE_RE, s)) return s;
  return StringPrototypeReplace(s, ESCAPE_RE, escapeChar);
}

function randomBoundary() {
  // Called while handling a request (never at snapshot time).
  let r = "";
  while (r.length < 24) {
    r += StringPrototypeSlice(NumberPrototypeToString(MathRandom(), 36), 2);
  }
  return "----formdata-runtime-" + StringPrototypeSlice(r, 0, 24);
}

/**
 * Serializes a FormData to a multipart/form-data Blob (file entries are
 * referenced, not copied).
 * @param {FormData} formData
 * @returns {{ blob: Blob, contentType: string }}
 */
function formDataToBlob(formData) {
  const boundary = randomBoundary();
  const contentType = `multipart/form-data; boundary=${boundary}`;
  const entries = formData[_entries];
  if (entries.length === 0) {
    // No parts: an empty body (as browsers send), not a lone close delimiter.
    return { blob: new Blob([]), contentType };
  }
  const parts = [];
  let pending = "";
  for (let i = 0; i < entries.length; ++i) {
    const name = escapeDispositionValue(normalizeNewlines(entries[i][0]));
    const value = entries[i][1];
    if (typeof value === "string") {
      pending += `--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${
        normalizeNewlines(value)
      }\r\n`;
    } else {
      const filename = escapeDispositionValue(
        FunctionPrototypeCall(FilePrototypeGetName, value),
      );
      const type = FunctionPrototypeCall(BlobPrototypeGetType, value);
      pending += `--${boundary}\r\nContent-Disposition: form-data; name="${name}"; filename="${filename}"\r\nContent-Type: ${
        type === "" ? "application/octet-stream" : type
      }\r\n\r\n`;
      ArrayPrototypePush(parts, pending, value);
      pending = "\r\n";
    }
  }
  pending += `--${boundary}--\r\n`;
  ArrayPrototypePush(parts, pending);
  return { blob: new Blob(parts), contentType };
}

// ---------------------------------------------------------------------------
// multipart/form-data parsing

/** Undoes the %0A / %0D / %22 escaping applied by serializers. */
const PERCENT_ESCAPE_RE = new SafeRegExp(/%(0A|0D|22)/gi);
function unescapeDispositionValue(s) {
  if (StringPrototypeIndexOf(s, "%") === -1) return s;
  return StringPrototypeReplace(s, PERCENT_ESCAPE_RE, (_m, code) => {
    const c = StringPrototypeToLowerCase(code);
    return c === "0a" ? "\n" : c === "0d" ? "\r" : '"';
  });
}

function isTabOrSpace(c) {
  return c === 0x20 || c === 0x09;
}

function trimTabOrSpace(s) {
  let start = 0;
  let end = s.length;
  while (start < end && isTabOrSpace(StringPrototypeCharCodeAt(s, start))) {
    start++;
  }
  while (end > start && isTabOrSpace(StringPrototypeCharCodeAt(s, end - 1))) {
    end--;
  }
  return StringPrototypeSlice(s, start, end);
}

/**
 * Parses a `Content-Disposition: form-data; name="..."; filename="..."`
 * value. Returns null if it is not form-data.
 * @param {string} value
 * @returns {{ name: string | undefined, filename: string | undefined } | null}
 */
function parseContentDisposition(value) {
  let pos = StringPrototypeIndexOf(value, ";");
  const type = trimTabOrSpace(
    pos === -1 ? value : StringPrototypeSlice(value, 0, pos),
  );
  if (StringPrototypeToLowerCase(type) !== "form-data") return null;
  let name;
  let filename;
  const len = value.length;
  while (pos !== -1 && pos < len) {
    pos++; // past ';'
    while (pos < len && isTabOrSpace(StringPrototypeCharCodeAt(value, pos))) {
      pos++;
    }
    const eq = StringPrototypeIndexOf(value, "=", pos);
    if (eq === -1) break;
    const key = StringPrototypeToLowerCase(
      trimTabOrSpace(StringPrototypeSlice(value, pos, eq)),
    );
    pos = eq + 1;
    while (pos < len && isTabOrSpace(StringPrototypeCharCodeAt(value, pos))) {
      pos++;
    }
    let paramValue;
    if (pos < len && StringPrototypeCharCodeAt(value, pos) === 0x22) {
      // Quoted: browsers percent-escape quotes instead of using backslashes,
      // so the value simply runs to the next quote.
      const close = StringPrototypeIndexOf(value, '"', pos + 1);
      if (close === -1) {
        paramValue = StringPrototypeSlice(value, pos + 1);
        pos = len;
      } else {
        paramValue = StringPrototypeSlice(value, pos + 1, close);
        pos = StringPrototypeIndexOf(value, ";", close + 1);
      }
    } else {
      const semi = StringPrototypeIndexOf(value, ";", pos);
      paramValue = trimTabOrSpace(
        semi === -1
          ? StringPrototypeSlice(value, pos)
          : StringPrototypeSlice(value, pos, semi),
      );
      pos = semi;
    }
    if (key === "name" && name === undefined) {
      name = unescapeDispositionValue(paramValue);
    } else if (key === "filename" && filename === undefined) {
      filename = unescapeDispositionValue(paramValue);
    }
  }
  return { name, filename };
}

/**
 * Parses a multipart/form-data body into a FormData.
 * @param {Uint8Array} bytes
 * @param {string} boundary
 * @param {string} prefix  for error messages
 * @returns {FormData}
 */
function parseMultipartFormData(bytes, boundary, prefix) {
  const fail = (why) =>
    new TypeError(`${prefix}: Invalid multipart/form-data body: ${why}`);
  // One char per byte: string offsets are byte offsets.
  const text = core.encodeBinaryString(bytes);
  const len = text.length;
  const delimiter = "--" + boundary;
  const entries = [];

  let pos;
  if (StringPrototypeStartsWith(text, delimiter)) {
    pos = 0;
  } else {
    const first = StringPrototypeIndexOf(text, "\r\n" + delimiter);
    if (first === -1) throw fail("boundary not found");
    pos = first + 2;
  }
  pos += delimiter.length;

  while (true) {
    if (StringPrototypeStartsWith(text, "--", pos)) break; // close delimiter
    while (pos < len && isTabOrSpace(StringPrototypeCharCodeAt(text, pos))) {
      pos++;
    }
    if (!StringPrototypeStartsWith(text, "\r\n", pos)) {
      throw fail("malformed boundary line");
    }
    pos += 2;

    let headersEnd;
    let contentStart;
    if (StringPrototypeStartsWith(text, "\r\n", pos)) {
      headersEnd = pos;
      contentStart = pos + 2;
    } else {
      headersEnd = StringPrototypeIndexOf(text, "\r\n\r\n", pos);
      if (headersEnd === -1) throw fail("unterminated part headers");
      contentStart = headersEnd + 4;
    }
    const contentEnd = StringPrototypeIndexOf(
      text,
      "\r\n" + delimiter,
      contentStart,
    );
    if (contentEnd === -1) throw fail("missing closing boundary");

    // Header names/values are UTF-8 in practice (e.g. non-ASCII filenames).
    const headerText = core.decode(
      TypedArrayPrototypeSubarray(bytes, pos, headersEnd),
    );
    let disposition = null;
    let contentType = null;
    let lineStart = 0;
    while (lineStart < headerText.length) {
      let lineEnd = StringPrototypeIndexOf(headerText, "\r\n", lineStart);
      if (lineEnd === -1) lineEnd = headerText.length;
      const line = StringPrototypeSlice(headerText, lineStart, lineEnd);
      lineStart = lineEnd + 2;
      const colon = StringPrototypeIndexOf(line, ":");
      if (colon === -1) continue;
      const headerName = StringPrototypeToLowerCase(
        trimTabOrSpace(StringPrototypeSlice(line, 0, colon)),
      );
      const headerValue = trimTabOrSpace(StringPrototypeSlice(line, colon + 1));
      if (headerName === "content-disposition") {
        disposition = parseContentDisposition(headerValue);
      } else if (headerName === "content-type") {
        contentType = headerValue;
      }
    }
    if (disposition === null || disposition.name === undefined) {
      throw fail("part without a form-data Content-Disposition name");
    }

    const content = TypedArrayPrototypeSubarray(bytes, contentStart, contentEnd);
    let value;
    if (disposition.filename !== undefined) {
      value = new File([content], disposition.filename, {
        type: contentType === null ? "text/plain" : contentType,
      });
    } else {
      value = TypedArrayPrototypeGetByteLength(content) === 0
        ? ""
        : core.decode(content);
    }
    ArrayPrototypePush(entries, [disposition.name, value]);

    pos = contentEnd + 2 + delimiter.length;
  }

  return formDataFromEntries(entries);
}

export {
  entriesFromFormData,
  FormData,
  formDataFromEntries,
  FormDataPrototype,
  formDataToBlob,
  formDataToBlob as formDataToBody,
  parseMultipartFormData,
  parseMultipartFormData as parseFormData,
};
