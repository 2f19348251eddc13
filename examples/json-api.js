// A small JSON API with a hand-written router.
//   runtime serve examples/json-api.js
//   curl http://127.0.0.1:8080/items
//   curl -X POST -H 'content-type: application/json' -d '{"name":"pear"}' http://127.0.0.1:8080/items
//
// The store is an in-memory Map, so it lives in one isolate. Each server thread has its own
// isolate: run with `--threads 1` to have every connection see the same items.

const items = new Map();
for (const name of ["apple", "banana"]) {
  const id = crypto.randomUUID();
  items.set(id, { id, name, createdAt: new Date(0).toISOString() });
}

const json = (data, status = 200, headers = {}) =>
  new Response(JSON.stringify(data), {
    status,
    headers: { "content-type": "application/json; charset=utf-8", ...headers },
  });

const notFound = (path) => json({ error: "not found", path }, 404);

const routes = [
  ["GET", /^\/$/, () => json({ name: "json-api example", endpoints: ["GET /items", "GET /items/:id", "POST /items"] })],
  ["GET", /^\/items$/, () => json({ items: [...items.values()] })],
  ["GET", /^\/items\/([^/]+)$/, (_req, [id]) => {
    const item = items.get(decodeURIComponent(id));
    return item ? json(item) : json({ error: "item not found", id }, 404);
  }],
  ["POST", /^\/items$/, async (req) => {
    let body;
    try {
      body = await req.json();
    } catch {
      return json({ error: "body must be JSON" }, 400);
    }
    if (!body || typeof body.name !== "string" || body.name.length === 0) {
      return json({ error: "field 'name' (non-empty string) is required" }, 422);
    }
    const id = crypto.randomUUID();
    const item = { id, name: body.name, createdAt: new Date().toISOString() };
    items.set(id, item);
    return json(item, 201, { location: `/items/${id}` });
  }],
];

export default {
  async fetch(request) {
    const { pathname } = new URL(request.url);
    let pathMatched = false;
    for (const [method, pattern, handler] of routes) {
      const m = pathname.match(pattern);
      if (!m) continue;
      pathMatched = true;
      if (method === request.method) return handler(request, m.slice(1));
    }
    if (pathMatched) return json({ error: "method not allowed", method: request.method }, 405);
    return notFound(pathname);
  },
};
