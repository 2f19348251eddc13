// Build-time entry point: evaluated once into the startup snapshot. The
// engine finds `bootstrap` on the global object when it creates an isolate,
// calls it, and it removes itself and every engine internal from the
// global scope before the user's module is loaded.
import { core, primordials } from "ext:core/mod.js";
// The global Date on the isolate's clock, before anything reads it.
import "ext:runtime/03_date.js";
// Fixes to deno_web's classes, made before anything uses them.
import "ext:runtime/05_url.js";
import "ext:runtime/06_urlpattern.js";
import "ext:runtime/08_streams.js";
import {
  dispatchFetch,
  setHandler,
  warmUpRequestPath,
} from "ext:runtime/20_fetch_event.js";
import { installGlobalScope } from "ext:runtime/90_global_scope.js";
import { handleWasmStreaming } from "ext:runtime/25_wasm_streaming.js";
import { hideCryptoInternals } from "ext:runtime/40_crypto.js";
import { performance } from "ext:runtime/00_web.js";
import { createKvNamespace } from "ext:runtime/50_kv.js";

const {
  FunctionPrototypeBind,
  ObjectDefineProperty,
  ObjectHasOwn,
  ObjectKeys,
  ReflectDeleteProperty,
} = primordials;
const { op_set_wasm_streaming_callback } = core.ops;

installGlobalScope();
hideCryptoInternals();
warmUpRequestPath();

function bootstrap(buildTime = false) {
  // performance.timeOrigin: when this isolate started.
  performance.setTimeOrigin();
  if (buildTime) return;
  // deno_core keeps this callback per isolate, outside the snapshot. (The op
  // itself: core.setWasmStreamingCallback would be one more function every
  // isolate compiles.)
  op_set_wasm_streaming_callback(handleWasmStreaming);
  ReflectDeleteProperty(globalThis, "__runtimeBootstrap");
  ReflectDeleteProperty(globalThis, "Deno");
  ReflectDeleteProperty(globalThis, "__bootstrap");
  return [dispatchFetch, setHandler, createKvNamespace, wireConsoleToInspector];
}

// Under `--inspect`: console calls also reach V8's own console, which the
// inspector reports to DevTools (as Deno wires it). Only then: without an
// inspector that would be one more call per console method for nothing.
// (core.wrapConsole reads `Deno.core`, which bootstrap removed.)
const { callConsole, v8Console } = core;
function wireConsoleToInspector() {
  const console = globalThis.console;
  const keys = ObjectKeys(v8Console);
  for (let i = 0; i < keys.length; ++i) {
    const key = keys[i];
    if (!ObjectHasOwn(console, key)) continue;
    const method = FunctionPrototypeBind(
      callConsole,
      console,
      v8Console[key],
      console[key],
    );
    ObjectDefineProperty(method, "name", { __proto__: null, value: key });
    console[key] = method;
  }
}

// Build time: compiles bootstrap (and setTimeOrigin) into the snapshot as
// well, so that no isolate compiles them when it starts.
bootstrap(true);

globalThis.__runtimeBootstrap = bootstrap;
