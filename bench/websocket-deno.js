// bench/websocket: the same echo for `deno serve` (Deno.upgradeWebSocket).
export default {
  fetch(request) {
    if (request.headers.get("upgrade") !== "websocket") return new Response("ok");
    const { socket, response } = Deno.upgradeWebSocket(request);
    socket.onmessage = (event) => socket.send(event.data);
    return response;
  },
};
