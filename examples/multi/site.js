// Service-worker syntax.
addEventListener("fetch", (event) => {
  event.respondWith(new Response(`site: ${new URL(event.request.url).pathname}\n`));
});
