// WebAssembly.compileStreaming / instantiateStreaming over a Response (or a
// promise of one): V8 hands us the source and a resource to feed bytes into.
import { core, primordials } from "ext:core/mod.js";
import { isResponse } from "ext:runtime/14_response.js";

const { op_wasm_streaming_feed, op_wasm_streaming_set_url } = core.ops;
const {
  PromisePrototypeThen,
  PromiseResolve,
  StringPrototypeToLowerCase,
  StringPrototypeTrim,
  StringPrototypeSplit,
  TypeError,
} = primordials;

async function feed(source, rid) {
  const response = await source;
  if (!isResponse(response)) {
    throw new TypeError(
      "WebAssembly streaming needs a Response or a Promise that resolves to one",
    );
  }
  const contentType = response.headers.get("content-type") ?? "";
  const essence = StringPrototypeToLowerCase(
    StringPrototypeTrim(StringPrototypeSplit(contentType, ";")[0]),
  );
  if (essence !== "application/wasm") {
    throw new TypeError(
      `Invalid WebAssembly content type: expected application/wasm, got "${contentType}"`,
    );
  }
  if (!response.ok) {
    throw new TypeError(`HTTP status code is not ok: ${response.status}`);
  }
  if (response.url) op_wasm_streaming_set_url(rid, response.url);
  if (response.body !== null) {
    const reader = response.body.getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      op_wasm_streaming_feed(rid, value);
    }
  }
  core.close(rid);
}

function handleWasmStreaming(source, rid) {
  PromisePrototypeThen(PromiseResolve(feed(source, rid)), undefined, (error) =>
    core.abortWasmStreaming(rid, error)
  );
}

export { handleWasmStreaming };
