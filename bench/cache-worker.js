// bench/cache's worker. /hit: answered from caches.default (stored by the
// first request); /miss: a lookup that misses, then the response rendered;
// /put: rendered and put under a new key every time (the store evicts by
// LRU past memory_mb); /render: no cache at all, the baseline. Bodies are
// 1 KiB.
const body = "x".repeat(1024);
const render = () =>
  new Response(body, {
    headers: { "content-type": "text/plain", "cache-control": "max-age=3600" },
  });
let n = 0;

export default {
  async fetch(request, env, ctx) {
    const path = new URL(request.url).pathname;
    const cache = caches.default;
    if (path === "/hit") {
      const hit = await cache.match("https://bench.example/hit");
      if (hit) return hit;
      await cache.put("https://bench.example/hit", render());
      return render();
    }
    if (path === "/miss") {
      const hit = await cache.match("https://bench.example/never-stored");
      return hit ?? render();
    }
    if (path === "/put") {
      const response = render();
      await cache.put(`https://bench.example/put/${n++}`, response.clone());
      return response;
    }
    return render();
  },
};
