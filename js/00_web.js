// The Web building blocks from deno_webidl, deno_web and deno_crypto, loaded
// once, at snapshot time, in dependency order. Everything else imports them
// from here; nothing is defined on globalThis in this file.
import { core, primordials } from "ext:core/mod.js";

const { ObjectFreeze, ObjectGetOwnPropertyDescriptor } = primordials;

export const webidl = core.loadExtScript("ext:deno_webidl/00_webidl.js");
export const infra = core.loadExtScript("ext:deno_web/00_infra.js");
export const url = core.loadExtScript("ext:deno_web/00_url.js");
export const broadcastChannel = core.loadExtScript(
  "ext:deno_web/01_broadcast_channel.js",
);
export const consoleNs = core.loadExtScript("ext:deno_web/01_console.js");
export const domException = core.loadExtScript(
  "ext:deno_web/01_dom_exception.js",
);
export const mimesniff = core.loadExtScript("ext:deno_web/01_mimesniff.js");
export const urlPattern = core.loadExtScript("ext:deno_web/01_urlpattern.js");
export const event = core.loadExtScript("ext:deno_web/02_event.js");
export const structuredCloneNs = core.loadExtScript(
  "ext:deno_web/02_structured_clone.js",
);
export const timers = core.loadExtScript("ext:deno_web/02_timers.js");
export const abortSignal = core.loadExtScript(
  "ext:deno_web/03_abort_signal.js",
);
export const globalInterfaces = core.loadExtScript(
  "ext:deno_web/04_global_interfaces.js",
);
export const base64 = core.loadExtScript("ext:deno_web/05_base64.js");
export const streams = core.loadExtScript("ext:deno_web/06_streams.js");
export const encoding = core.loadExtScript("ext:deno_web/08_text_encoding.js");
export const file = core.loadExtScript("ext:deno_web/09_file.js");
export const fileReader = core.loadExtScript("ext:deno_web/10_filereader.js");
export const messagePort = core.loadExtScript(
  "ext:deno_web/13_message_port.js",
);
export const compression = core.loadExtScript(
  "ext:deno_web/14_compression.js",
);
export const performance = core.loadExtScript(
  "ext:deno_web/15_performance.js",
);
export const crypto = core.loadExtScript("ext:deno_crypto/00_crypto.js");

// Accessors of deno_web's URL, Blob and File the engine reads through,
// captured before any script runs, so that a script replacing them on the
// public prototypes cannot change what the engine sees.
const getterOf = (prototype, name) =>
  ObjectGetOwnPropertyDescriptor(prototype, name).get;
export const accessors = ObjectFreeze({
  __proto__: null,
  URLPrototypeGetHref: getterOf(url.URLPrototype, "href"),
  URLPrototypeGetProtocol: getterOf(url.URLPrototype, "protocol"),
  URLPrototypeGetUsername: getterOf(url.URLPrototype, "username"),
  URLPrototypeGetPassword: getterOf(url.URLPrototype, "password"),
  BlobPrototypeGetSize: getterOf(file.BlobPrototype, "size"),
  BlobPrototypeGetType: getterOf(file.BlobPrototype, "type"),
  FilePrototypeGetName: getterOf(file.FilePrototype, "name"),
  FilePrototypeGetLastModified: getterOf(file.FilePrototype, "lastModified"),
});
