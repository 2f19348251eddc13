// Module syntax: bindings arrive as `env`.
export default {
  fetch(request, env) {
    const { pathname } = new URL(request.url);
    return Response.json({ worker: "api", greeting: env.GREETING, path: pathname });
  },
};
