// A streamed response: chunks are produced over time with setTimeout.
//   runtime serve examples/streaming.js
//   curl -N http://127.0.0.1:8080/          (chunks appear one by one)
//   curl -N 'http://127.0.0.1:8080/?count=10&interval=100'

const encoder = new TextEncoder();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export default {
  fetch(request) {
    const url = new URL(request.url);
    const count = Math.min(Number(url.searchParams.get("count") ?? 5) || 5, 1000);
    const interval = Math.min(Number(url.searchParams.get("interval") ?? 200) || 0, 10_000);

    let i = 0;
    const body = new ReadableStream({
      async pull(controller) {
        if (i > 0) await sleep(interval);
        i += 1;
        controller.enqueue(encoder.encode(`chunk ${i} of ${count} at ${new Date().toISOString()}\n`));
        if (i === count) controller.close();
      },
      cancel(reason) {
        console.log(`client went away after ${i} chunks: ${reason}`);
      },
    });

    return new Response(body, {
      headers: {
        "content-type": "text/plain; charset=utf-8",
        "cache-control": "no-store",
      },
    });
  },
};
