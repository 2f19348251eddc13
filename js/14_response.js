// TEMPORARY engine-bring-up placeholder; replaced by the real Fetch layer.
import { Headers, headerListFromHeaders } from "ext:runtime/10_headers.js";
class Response {
  constructor(body = null, init = {}) { this.body = body; this.status = init.status ?? 200; this.headers = new Headers(init.headers); if (typeof body === "string") this.headers.set("content-type", "text/plain;charset=UTF-8"); }
}
function extractResponseParts(r) {
  if (!(r instanceof Response)) throw new TypeError(`Handler did not return a Response: got ${r === null ? "null" : typeof r}`);
  return { status: r.status, headers: headerListFromHeaders(r.headers), body: r.body };
}
export { extractResponseParts, Response };
