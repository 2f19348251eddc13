// TEMPORARY engine-bring-up placeholder; replaced by the real Fetch layer.
import "ext:runtime/11_body.js";
import { headersFromList } from "ext:runtime/10_headers.js";
class Request {
  constructor(url, init = {}) { this.url = String(url); this.method = init.method ?? "GET"; this.headers = init.headers; this.body = null; }
  async text() {
    if (this.body === null) return "";
    const chunks = []; const r = this.body.getReader(); for (;;) { const { done, value } = await r.read(); if (done) break; chunks.push(new TextDecoder().decode(value)); } return chunks.join("");
  }
}
function newServerRequest(method, url, flat, body) { const r = new Request(url, { method, headers: headersFromList(flat) }); r.body = body; return r; }
export { newServerRequest, Request };
