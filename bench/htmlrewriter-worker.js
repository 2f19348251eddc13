// bench/htmlrewriter's worker: GET /<mode>?mb=N streams an N MiB HTML document made as it is sent
// (64 KiB chunks of rows with a link, a paragraph and a comment), through
//   /plain    no rewriter (the cost of making and sending the document),
//   /parse    a rewriter whose one selector never matches (lol_html parses, no handler runs),
//   /rewrite  three handlers: a[href] setAttribute, text chunks of <p>, the document's comments.
const row = '<div class="row"><a href="http://example.com/page">a link</a><p>Some text in a paragraph.</p><!-- note --></div>\n';
const chunk = new TextEncoder().encode(row.repeat(Math.ceil(65536 / row.length)));

function documentStream(mb) {
  const total = mb * 1024 * 1024;
  let sent = 0;
  return new ReadableStream({
    pull(c) {
      if (sent >= total) return c.close();
      sent += chunk.length;
      c.enqueue(chunk);
    },
  }, { highWaterMark: 0 });
}

export default {
  fetch(request) {
    const url = new URL(request.url);
    const mb = Number(url.searchParams.get("mb") ?? "16");
    const response = new Response(documentStream(mb), { headers: { "content-type": "text/html" } });
    switch (url.pathname) {
      case "/plain":
        return response;
      case "/parse":
        return new HTMLRewriter().on("never-matches", { element() {} }).transform(response);
      case "/rewrite": {
        let chars = 0;
        return new HTMLRewriter()
          .on("a[href]", {
            element(e) {
              e.setAttribute("href", e.getAttribute("href").replace("http:", "https:"));
            },
          })
          .on("p", {
            text(t) {
              chars += t.text.length;
            },
          })
          .onDocument({
            comments(c) {
              c.remove();
            },
          })
          .transform(response);
      }
      default:
        return new Response("unknown mode", { status: 404 });
    }
  },
};
