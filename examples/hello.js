// Service-worker syntax: the smallest possible script.
//   runtime serve examples/hello.js
addEventListener("fetch", (event) => {
  event.respondWith(new Response("Hello, world!", {
    headers: { "content-type": "text/plain; charset=utf-8" },
  }));
});
