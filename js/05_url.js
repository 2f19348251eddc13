// URL on top of deno_web's: what its (pinned) implementation gets wrong.
//
// - origin of a `blob:` URL: the origin of the URL its path parses to when
//   that URL is `http:` or `https:` (`file:` ones are opaque too), else an
//   opaque origin, "null" (URL Standard, "origin"). deno_web returns the
//   inner URL's origin whatever its scheme. The getter stays an accessor
//   with the attributes, name and length it had.
import { primordials } from "ext:core/mod.js";
import * as web from "ext:runtime/00_web.js";

const {
  FunctionPrototypeCall,
  ObjectDefineProperty,
  ObjectGetOwnPropertyDescriptor,
} = primordials;
const { URL } = web.url;
const URLPrototype = URL.prototype;

const getter = (name) => ObjectGetOwnPropertyDescriptor(URLPrototype, name).get;
const originalOrigin = getter("origin");
const getProtocol = getter("protocol");
const getPathname = getter("pathname");

const { get: origin } = ObjectGetOwnPropertyDescriptor({
  get origin() {
    // Also checks that `this` is a URL.
    const serialized = FunctionPrototypeCall(originalOrigin, this);
    if (FunctionPrototypeCall(getProtocol, this) !== "blob:") return serialized;
    let pathURL;
    try {
      pathURL = new URL(FunctionPrototypeCall(getPathname, this));
    } catch {
      return "null";
    }
    const scheme = FunctionPrototypeCall(getProtocol, pathURL);
    return scheme === "http:" || scheme === "https:"
      ? FunctionPrototypeCall(originalOrigin, pathURL)
      : "null";
  },
}, "origin");

ObjectDefineProperty(URLPrototype, "origin", {
  __proto__: null,
  ...ObjectGetOwnPropertyDescriptor(URLPrototype, "origin"),
  get: origin,
});
