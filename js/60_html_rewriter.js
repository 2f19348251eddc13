// Workers' HTMLRewriter, on lol_html (ext/htmlrewriter).
//
// transform(response) starts a rewriter thread (op_html_rewriter_create)
// and returns a Response whose body is a ReadableStream; each pull drives
// the rewriter until it has output: it asks for input (read here from the
// source body), hands over output, and for each piece of content a handler
// was registered for, an event. The handler gets a token object (Element,
// Text, Comment, Doctype, DocumentEnd, EndTag) that records what it is asked
// to do; once the handler has returned (or its promise has settled) the
// token is dead and the recorded mutations go back to the thread, which
// applies them and carries on.
import { core, primordials } from "ext:core/mod.js";
import { streams, webidl } from "ext:runtime/00_web.js";
import { Headers } from "ext:runtime/10_headers.js";
import { isResponse, Response } from "ext:runtime/14_response.js";
import { reportToLog } from "ext:runtime/20_fetch_event.js";

const {
  ArrayPrototypePush,
  ArrayPrototypeSplice,
  FunctionPrototypeCall,
  ObjectPrototypeIsPrototypeOf,
  PromisePrototypeCatch,
  RegExpPrototypeExec,
  SafeMap,
  SafeRegExp,
  MapPrototypeDelete,
  MapPrototypeGet,
  MapPrototypeSet,
  String,
  StringPrototypeToLowerCase,
  Symbol,
  SymbolToStringTag,
  TypeError,
  Uint8ArrayPrototype,
} = primordials;
const {
  op_html_rewriter_check_selector,
  op_html_rewriter_create,
  op_html_rewriter_end,
  op_html_rewriter_error,
  op_html_rewriter_event,
  op_html_rewriter_mutations,
  op_html_rewriter_next,
  op_html_rewriter_output,
  op_html_rewriter_try_next,
  op_html_rewriter_write,
} = core.ops;

// Kinds of handlers (ext/htmlrewriter: ELEMENT...END).
const ELEMENT = 1;
const COMMENTS = 2;
const TEXT = 4;
const DOCTYPE = 8;
const END = 16;

// op_html_rewriter_next's answers.
const NEXT_OUTPUT = 0;
const NEXT_INPUT = 1;
const NEXT_EVENT = 2;
const NEXT_DONE = 3;
const NEXT_PENDING = 5; // op_html_rewriter_try_next: not yet

// Mutation codes (ext/htmlrewriter: M_*).
const M_SET_ATTRIBUTE = 0;
const M_REMOVE_ATTRIBUTE = 1;
const M_BEFORE = 2;
const M_AFTER = 3;
const M_PREPEND = 4;
const M_APPEND = 5;
const M_SET_INNER_CONTENT = 6;
const M_REPLACE = 7;
const M_REMOVE = 8;
const M_REMOVE_AND_KEEP_CONTENT = 9;
const M_SET_TAG_NAME = 10;
const M_ON_END_TAG = 11;
const M_SET_TEXT = 12;

const kInternal = Symbol("kInternal");
const _registrations = Symbol("[[registrations]]");
// A token's state: { valid, mutations, event, transform }.
const _token = Symbol("[[token]]");

const CHARSET_RE = new SafeRegExp(/;\s*charset\s*=\s*"?([^";\s]+)/i);

function illegal(key) {
  if (key !== kInternal) throw new TypeError("Illegal constructor");
}

function live(self, Class) {
  const token = self?.[_token];
  if (token === undefined || !ObjectPrototypeIsPrototypeOf(Class.prototype, self)) {
    throw new TypeError("Illegal invocation");
  }
  if (!token.valid) {
    throw new TypeError(
      "This content token is no longer valid. Content tokens are only valid during the " +
        "execution of the relevant content handler.",
    );
  }
  return token;
}

function record(token, code, a = "", b = "", n = 0) {
  ArrayPrototypePush(token.mutations, [code, a, b, n]);
}

// The (content, { html }) of before/after/...; content is a string.
function content(token, code, value, options) {
  const html = options !== undefined && options !== null && !!options.html;
  record(token, code, String(value), "", html ? 1 : 0);
}

function newToken(event, transform) {
  return { valid: true, mutations: [], event, transform };
}

class Element {
  constructor(key, token) {
    illegal(key);
    this[_token] = token;
  }

  get tagName() {
    return live(this, Element).event.tagName;
  }

  set tagName(name) {
    const token = live(this, Element);
    name = String(name);
    record(token, M_SET_TAG_NAME, name);
    token.event.tagName = StringPrototypeToLowerCase(name);
  }

  get namespaceURI() {
    return live(this, Element).event.namespaceURI;
  }

  get removed() {
    return live(this, Element).event.removed;
  }

  get attributes() {
    const list = live(this, Element).event.attributes;
    const copy = [];
    for (let i = 0; i < list.length; i++) ArrayPrototypePush(copy, [list[i][0], list[i][1]]);
    return (function* () {
      for (let i = 0; i < copy.length; i++) yield copy[i];
    })();
  }

  getAttribute(name) {
    const list = live(this, Element).event.attributes;
    name = StringPrototypeToLowerCase(String(name));
    for (let i = 0; i < list.length; i++) {
      if (list[i][0] === name) return list[i][1];
    }
    return null;
  }

  hasAttribute(name) {
    const list = live(this, Element).event.attributes;
    name = StringPrototypeToLowerCase(String(name));
    for (let i = 0; i < list.length; i++) {
      if (list[i][0] === name) return true;
    }
    return false;
  }

  setAttribute(name, value) {
    const token = live(this, Element);
    name = String(name);
    value = String(value);
    record(token, M_SET_ATTRIBUTE, name, value);
    const list = token.event.attributes;
    const lower = StringPrototypeToLowerCase(name);
    for (let i = 0; i < list.length; i++) {
      if (list[i][0] === lower) {
        list[i] = [lower, value];
        return this;
      }
    }
    ArrayPrototypePush(list, [lower, value]);
    return this;
  }

  removeAttribute(name) {
    const token = live(this, Element);
    name = String(name);
    record(token, M_REMOVE_ATTRIBUTE, name);
    const list = token.event.attributes;
    const lower = StringPrototypeToLowerCase(name);
    for (let i = 0; i < list.length; i++) {
      if (list[i][0] === lower) {
        ArrayPrototypeSplice(list, i, 1);
        break;
      }
    }
    return this;
  }

  before(value, options = undefined) {
    content(live(this, Element), M_BEFORE, value, options);
    return this;
  }

  after(value, options = undefined) {
    content(live(this, Element), M_AFTER, value, options);
    return this;
  }

  prepend(value, options = undefined) {
    content(live(this, Element), M_PREPEND, value, options);
    return this;
  }

  append(value, options = undefined) {
    content(live(this, Element), M_APPEND, value, options);
    return this;
  }

  setInnerContent(value, options = undefined) {
    content(live(this, Element), M_SET_INNER_CONTENT, value, options);
    return this;
  }

  replace(value, options = undefined) {
    const token = live(this, Element);
    content(token, M_REPLACE, value, options);
    token.event.removed = true;
    return this;
  }

  remove() {
    const token = live(this, Element);
    record(token, M_REMOVE);
    token.event.removed = true;
    return this;
  }

  removeAndKeepContent() {
    const token = live(this, Element);
    record(token, M_REMOVE_AND_KEEP_CONTENT);
    token.event.removed = true;
    return this;
  }

  onEndTag(handler) {
    const token = live(this, Element);
    if (typeof handler !== "function") {
      throw new TypeError("Failed to execute 'onEndTag' on 'Element': the handler is not a function");
    }
    if (!token.event.canHaveContent) {
      throw new TypeError(`Failed to execute 'onEndTag' on 'Element': <${token.event.tagName}> has no end tag`);
    }
    const transform = token.transform;
    if (token.endId !== undefined) MapPrototypeDelete(transform.endHandlers, token.endId);
    const id = transform.nextEndId++;
    token.endId = id;
    MapPrototypeSet(transform.endHandlers, id, handler);
    record(token, M_ON_END_TAG, "", "", id);
  }

  get [SymbolToStringTag]() {
    return "Element";
  }
}

class EndTag {
  constructor(key, token) {
    illegal(key);
    this[_token] = token;
  }

  get name() {
    return live(this, EndTag).event.name;
  }

  set name(name) {
    const token = live(this, EndTag);
    name = String(name);
    record(token, M_SET_TAG_NAME, name);
    token.event.name = name;
  }

  before(value, options = undefined) {
    content(live(this, EndTag), M_BEFORE, value, options);
    return this;
  }

  after(value, options = undefined) {
    content(live(this, EndTag), M_AFTER, value, options);
    return this;
  }

  remove() {
    record(live(this, EndTag), M_REMOVE);
    return this;
  }

  get [SymbolToStringTag]() {
    return "EndTag";
  }
}

class Text {
  constructor(key, token) {
    illegal(key);
    this[_token] = token;
  }

  get text() {
    return live(this, Text).event.text;
  }

  get lastInTextNode() {
    return live(this, Text).event.lastInTextNode;
  }

  get removed() {
    return live(this, Text).event.removed;
  }

  before(value, options = undefined) {
    content(live(this, Text), M_BEFORE, value, options);
    return this;
  }

  after(value, options = undefined) {
    content(live(this, Text), M_AFTER, value, options);
    return this;
  }

  replace(value, options = undefined) {
    const token = live(this, Text);
    content(token, M_REPLACE, value, options);
    token.event.removed = true;
    return this;
  }

  remove() {
    const token = live(this, Text);
    record(token, M_REMOVE);
    token.event.removed = true;
    return this;
  }

  get [SymbolToStringTag]() {
    return "Text";
  }
}

class Comment {
  constructor(key, token) {
    illegal(key);
    this[_token] = token;
  }

  get text() {
    return live(this, Comment).event.text;
  }

  set text(text) {
    const token = live(this, Comment);
    text = String(text);
    record(token, M_SET_TEXT, text);
    token.event.text = text;
  }

  get removed() {
    return live(this, Comment).event.removed;
  }

  before(value, options = undefined) {
    content(live(this, Comment), M_BEFORE, value, options);
    return this;
  }

  after(value, options = undefined) {
    content(live(this, Comment), M_AFTER, value, options);
    return this;
  }

  replace(value, options = undefined) {
    const token = live(this, Comment);
    content(token, M_REPLACE, value, options);
    token.event.removed = true;
    return this;
  }

  remove() {
    const token = live(this, Comment);
    record(token, M_REMOVE);
    token.event.removed = true;
    return this;
  }

  get [SymbolToStringTag]() {
    return "Comment";
  }
}

class Doctype {
  constructor(key, token) {
    illegal(key);
    this[_token] = token;
  }

  get name() {
    return live(this, Doctype).event.name;
  }

  get publicId() {
    return live(this, Doctype).event.publicId;
  }

  get systemId() {
    return live(this, Doctype).event.systemId;
  }

  get removed() {
    return live(this, Doctype).event.removed;
  }

  remove() {
    const token = live(this, Doctype);
    record(token, M_REMOVE);
    token.event.removed = true;
    return this;
  }

  get [SymbolToStringTag]() {
    return "Doctype";
  }
}

class DocumentEnd {
  constructor(key, token) {
    illegal(key);
    this[_token] = token;
  }

  append(value, options = undefined) {
    content(live(this, DocumentEnd), M_APPEND, value, options);
    return this;
  }

  get [SymbolToStringTag]() {
    return "DocumentEnd";
  }
}

function handlerOf(handlers, name, prefix) {
  const fn = handlers[name];
  if (fn === undefined) return undefined;
  if (typeof fn !== "function") {
    throw new TypeError(`${prefix}: the '${name}' handler is not a function`);
  }
  return fn;
}

// Calls the handler an event is for with a live token; returns the token
// (whose mutations are final once the returned promise, if any, settled).
function dispatch(transform, event) {
  const token = newToken(event, transform);
  let fn;
  let self;
  let wrapper;
  switch (event.type) {
    case "endTag":
      fn = MapPrototypeGet(transform.endHandlers, event.handler);
      MapPrototypeDelete(transform.endHandlers, event.handler);
      self = undefined;
      wrapper = new EndTag(kInternal, token);
      break;
    default: {
      const registration = transform.registrations[event.handler];
      self = registration.handlers;
      switch (event.type) {
        case "element":
          fn = registration.element;
          wrapper = new Element(kInternal, token);
          break;
        case "text":
          fn = registration.text;
          wrapper = new Text(kInternal, token);
          break;
        case "comment":
          fn = registration.comments;
          wrapper = new Comment(kInternal, token);
          break;
        case "doctype":
          fn = registration.doctype;
          wrapper = new Doctype(kInternal, token);
          break;
        case "end":
          fn = registration.end;
          wrapper = new DocumentEnd(kInternal, token);
          break;
      }
    }
  }
  const result = FunctionPrototypeCall(fn, self, wrapper);
  return { token, result };
}

function isThenable(value) {
  return value !== null && (typeof value === "object" || typeof value === "function") &&
    typeof value.then === "function";
}

class HTMLRewriter {
  constructor() {
    this[webidl.brand] = webidl.brand;
    this[_registrations] = [];
  }

  /**
   * @param {string} selector
   * @param {{ element?, comments?, text? }} handlers
   */
  on(selector, handlers) {
    webidl.assertBranded(this, HTMLRewriterPrototype);
    const prefix = "Failed to execute 'on' on 'HTMLRewriter'";
    webidl.requiredArguments(arguments.length, 2, prefix);
    selector = webidl.converters.DOMString(selector, prefix, "Argument 1");
    if (handlers === null || (typeof handlers !== "object" && typeof handlers !== "function")) {
      throw new TypeError(`${prefix}: Argument 2 is not an object`);
    }
    op_html_rewriter_check_selector(selector);
    const element = handlerOf(handlers, "element", prefix);
    const comments = handlerOf(handlers, "comments", prefix);
    const text = handlerOf(handlers, "text", prefix);
    const kinds = (element ? ELEMENT : 0) | (comments ? COMMENTS : 0) | (text ? TEXT : 0);
    ArrayPrototypePush(this[_registrations], {
      __proto__: null,
      selector,
      kinds,
      handlers,
      element,
      comments,
      text,
    });
    return this;
  }

  /** @param {{ doctype?, comments?, text?, end? }} handlers */
  onDocument(handlers) {
    webidl.assertBranded(this, HTMLRewriterPrototype);
    const prefix = "Failed to execute 'onDocument' on 'HTMLRewriter'";
    webidl.requiredArguments(arguments.length, 1, prefix);
    if (handlers === null || (typeof handlers !== "object" && typeof handlers !== "function")) {
      throw new TypeError(`${prefix}: Argument 1 is not an object`);
    }
    const doctype = handlerOf(handlers, "doctype", prefix);
    const comments = handlerOf(handlers, "comments", prefix);
    const text = handlerOf(handlers, "text", prefix);
    const end = handlerOf(handlers, "end", prefix);
    const kinds = (doctype ? DOCTYPE : 0) | (comments ? COMMENTS : 0) | (text ? TEXT : 0) |
      (end ? END : 0);
    ArrayPrototypePush(this[_registrations], {
      __proto__: null,
      selector: null,
      kinds,
      handlers,
      doctype,
      comments,
      text,
      end,
    });
    return this;
  }

  /**
   * @param {Response} response
   * @returns {Response}
   */
  transform(response) {
    webidl.assertBranded(this, HTMLRewriterPrototype);
    const prefix = "Failed to execute 'transform' on 'HTMLRewriter'";
    webidl.requiredArguments(arguments.length, 1, prefix);
    if (!isResponse(response)) {
      throw new TypeError(`${prefix}: Argument 1 is not a Response`);
    }
    const headers = new Headers(response.headers);
    // The length changes with the rewriting (workerd drops it too).
    headers.delete("content-length");
    const init = { status: response.status, statusText: response.statusText, headers };
    const source = response.body;
    if (source === null) return new Response(null, init);
    const reader = source.getReader();

    const registrations = [];
    const spec = [];
    const list = this[_registrations];
    for (let i = 0; i < list.length; i++) {
      ArrayPrototypePush(registrations, list[i]);
      ArrayPrototypePush(spec, [list[i].selector, list[i].kinds]);
    }
    const charset = RegExpPrototypeExec(CHARSET_RE, response.headers.get("content-type") ?? "");
    const rid = op_html_rewriter_create(spec, charset === null ? "" : charset[1]);
    const transform = {
      __proto__: null,
      registrations,
      endHandlers: new SafeMap(),
      nextEndId: 0,
      closed: false,
    };
    const close = () => {
      if (!transform.closed) {
        transform.closed = true;
        core.tryClose(rid);
      }
    };

    const body = new streams.ReadableStream({
      async pull(controller) {
        try {
          while (true) {
            let next = op_html_rewriter_try_next(rid);
            if (next === NEXT_PENDING) next = await op_html_rewriter_next(rid);
            if (next === NEXT_OUTPUT) {
              controller.enqueue(op_html_rewriter_output(rid));
              return;
            }
            if (next === NEXT_INPUT) {
              const { value, done } = await reader.read();
              if (done) {
                op_html_rewriter_end(rid);
              } else if (ObjectPrototypeIsPrototypeOf(Uint8ArrayPrototype, value)) {
                op_html_rewriter_write(rid, value);
              } else {
                throw new TypeError(
                  "HTMLRewriter: the response's body produced a chunk that is not a Uint8Array",
                );
              }
              continue;
            }
            if (next === NEXT_EVENT) {
              const { token, result } = dispatch(transform, op_html_rewriter_event(rid));
              try {
                if (isThenable(result)) await result;
              } finally {
                token.valid = false;
              }
              op_html_rewriter_mutations(rid, token.mutations);
              continue;
            }
            if (next === NEXT_DONE) {
              close();
              controller.close();
              return;
            }
            throw new TypeError(`HTMLRewriter: ${op_html_rewriter_error(rid)}`);
          }
        } catch (error) {
          if (transform.closed) return; // cancelled meanwhile
          close();
          PromisePrototypeCatch(reader.cancel(error), () => {});
          reportToLog("HTMLRewriter: the transform failed", error);
          controller.error(error);
        }
      },
      cancel(reason) {
        close();
        return reader.cancel(reason);
      },
    }, { highWaterMark: 0 });
    return new Response(body, init);
  }

  get [SymbolToStringTag]() {
    return "HTMLRewriter";
  }
}

webidl.configureInterface(HTMLRewriter);
const HTMLRewriterPrototype = HTMLRewriter.prototype;

export { HTMLRewriter };
