// Benchmark handler for bench/kv: one KV operation per request on env.KV.
// GET /get/SIZE reads key SIZE (answers the value's length), GET /put/SIZE
// writes it (SIZE: small = 100 bytes, large = 100 KiB); /ping does no KV.
const VALUES = { small: "s".repeat(100), large: "L".repeat(100 * 1024) };

export default {
  async fetch(request, env) {
    const [, op, size] = new URL(request.url).pathname.split("/");
    if (op === "get") {
      const value = await env.KV.get(size);
      return new Response(String(value?.length ?? -1));
    }
    if (op === "put") {
      await env.KV.put(size, VALUES[size]);
      return new Response("ok");
    }
    return new Response("pong");
  },
};
