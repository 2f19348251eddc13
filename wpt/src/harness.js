// The WPT runner's glue inside a test isolate. Evaluates to a function the
// runner calls once, before `testharness.js`, with
//   config: { href, title, importScripts }
//   report(kind, name, status, message): native; kind 0 = a subtest result,
//     1 = the harness completed (name unused, status is the harness status)
//   load(path): native; runs the WPT file at `path` (root-relative) as a
//     classic script, for `importScripts` in `.worker.js` tests.
// It sets up what a WPT worker wrapper (`.any.worker.js`) provides: `GLOBAL`,
// `location` and `META_TITLE`, and returns `install`, which the runner calls
// once testharness.js is loaded to hook its result and completion callbacks.
(function (config, report, load) {
  "use strict";
  const { defineProperty, freeze } = Object;
  const url = new URL(config.href);
  const href = url.href;
  // A WorkerLocation: the test's URL, read-only.
  const location = {
    href,
    origin: url.origin,
    protocol: url.protocol,
    host: url.host,
    hostname: url.hostname,
    port: url.port,
    pathname: url.pathname,
    search: url.search,
    hash: url.hash,
    toString() {
      return href;
    },
  };
  defineProperty(globalThis, "location", {
    value: freeze(location),
    enumerable: true,
    configurable: true,
    writable: false,
  });
  globalThis.GLOBAL = {
    isWindow() {
      return false;
    },
    isWorker() {
      return true;
    },
    isShadowRealm() {
      return false;
    },
  };
  if (typeof config.title === "string") {
    globalThis.META_TITLE = config.title;
  }
  if (config.importScripts) {
    const origin = url.origin;
    globalThis.importScripts = function importScripts(...urls) {
      const resolved = urls.map((u) => new URL(String(u), href));
      for (const u of resolved) {
        if (u.origin !== origin) {
          throw new DOMException(`importScripts: cannot load ${u.href}`, "NetworkError");
        }
      }
      for (const u of resolved) {
        // The runner loaded testharness.js already, hooked to report results.
        if (u.pathname === "/resources/testharness.js") continue;
        load(decodeURIComponent(u.pathname));
      }
    };
  }
  const dispatch = EventTarget.prototype.dispatchEvent;
  const reportErrorFn = globalThis.reportError;
  // Subtest names and messages may hold lone surrogates, which would not
  // survive the trip to UTF-8: spell them as \uXXXX.
  const loneSurrogate = /[\uD800-\uDFFF]/gu;
  const escape = (c) => `\\u${c.charCodeAt(0).toString(16).toUpperCase()}`;
  const name = (value) => String(value).replace(loneSurrogate, escape);
  const text = (value) => (value === undefined || value === null ? null : name(value));

  return function install() {
    const { add_result_callback, add_completion_callback, done, timeout } = globalThis;
    add_result_callback((test) => {
      report(0, name(test.name), test.status, text(test.message));
    });
    add_completion_callback((tests, status) => {
      for (const test of tests) {
        report(0, name(test.name), test.status, text(test.message));
      }
      report(1, "", status.status, text(status.message));
    });
    return {
      // What the worker wrapper does after the test's scripts: `done()`.
      // The global scope is a ServiceWorkerGlobalScope, so testharness.js
      // waits for the `install` event before it completes, as in a service
      // worker.
      finish() {
        done();
        dispatch.call(globalThis, new Event("install"));
      },
      // Ends the run as the harness timeout would: pending subtests TIMEOUT.
      timeout() {
        timeout();
      },
      // A script threw at top level: what a worker does with it (an error
      // event on the global scope, which testharness.js turns into an ERROR).
      error(e) {
        reportErrorFn(e);
      },
    };
  };
})
