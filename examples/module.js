// Module syntax: `export default { fetch(request, env, ctx) }`.
//   runtime serve examples/module.js
//
// `env` holds the script's bindings (it may be empty); `ctx.waitUntil(promise)`
// keeps work going after the response has been sent. Module-level state (requestCount) is per
// isolate, and each server thread has its own: `--threads 1` gives one shared counter.

let requestCount = 0;
const recentPaths = [];

export default {
  async fetch(request, env, ctx) {
    const url = new URL(request.url);
    requestCount += 1;

    // Work that is not needed for the response: record it after responding.
    ctx.waitUntil(
      new Promise((resolve) => setTimeout(resolve, 10)).then(() => {
        recentPaths.push(url.pathname);
        if (recentPaths.length > 10) recentPaths.shift();
        console.log(`recorded ${request.method} ${url.pathname}`);
      }),
    );

    const greeting = (env && typeof env.GREETING === "string") ? env.GREETING : "Hello";
    return Response.json({
      message: `${greeting} from a module worker!`,
      path: url.pathname,
      requestCount,
      recentPaths,
      envKeys: Object.keys(env ?? {}).sort(),
      id: crypto.randomUUID(),
    });
  },
};
