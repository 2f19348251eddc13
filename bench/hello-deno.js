// Benchmark handler for `deno serve` (same as hello.js).
export default { fetch() { return new Response("Hello, world!") } }
