// bench/kv's counterpart for `deno serve --unstable-kv`: the same requests
// on Deno KV (Deno.openKv on its SQLite backend, at $KV_PATH).
const kv = await Deno.openKv(Deno.env.get("KV_PATH"));
const VALUES = { small: "s".repeat(100), large: "L".repeat(100 * 1024) };

export default {
  async fetch(request) {
    const [, op, size] = new URL(request.url).pathname.split("/");
    if (op === "get") {
      const entry = await kv.get(["bench", size]);
      return new Response(String(entry.value?.length ?? -1));
    }
    if (op === "put") {
      await kv.set(["bench", size], VALUES[size]);
      return new Response("ok");
    }
    return new Response("pong");
  },
};
