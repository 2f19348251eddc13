// Benchmark handler for `runtime serve` (same as hello-deno.js).
export default { fetch() { return new Response("Hello, world!") } }
