# Started by `runtime wpt ROOT [CERT KEY]`: serves the WPT directory on
# loopback with wptserve (its file, .asis and .py handlers, `.sub.`
# substitution and the stash), on two HTTP ports (ports[http][0] and [1]) and,
# given a certificate and its key, two HTTPS ports (ports[https][0] and [1]);
# prints {"http": [...], "https": [...]} on one line once it is ready, and
# exits when its stdin closes (the runner ended).
import json
import logging
import os
import ssl
import sys

from wptserve import server, stash
from wptserve.config import Config, ConfigBuilder
from wptserve.utils import get_port


def _shutdown_request(self, request, _plain=server.WebTestServer.shutdown_request):
    # End TLS with close_notify before closing, as a browser's peer would:
    # a body delimited by the connection's end is otherwise a truncation to a
    # strict client (rustls).
    if isinstance(request, ssl.SSLSocket):
        try:
            request = request.unwrap()
        except (OSError, ValueError):
            pass
    _plain(self, request)


server.WebTestServer.shutdown_request = _shutdown_request

root = sys.argv[1]
cert, key = (sys.argv[2], sys.argv[3]) if len(sys.argv) > 3 else (None, None)
logging.basicConfig(level=logging.CRITICAL)
logger = logging.getLogger()
logger.setLevel(logging.CRITICAL)

httpds = [
    server.WebTestHttpd(host="127.0.0.1", port=0, doc_root=root, use_ssl=False)
    for _ in range(2)
]
ports = [h.port for h in httpds]
httpsds = [
    server.WebTestHttpd(host="127.0.0.1", port=0, doc_root=root, use_ssl=True,
                        key_file=key, certificate=cert)
    for _ in range(2)
] if cert else []
builder = ConfigBuilder(
    logger,
    browser_host="localhost",
    alternate_hosts={"alt": "not-web-platform.test"},
    doc_root=root,
    ports={"http": ports},
    subdomains={"www", "www1", "www2", "天気の良い日", "élève"},
    not_subdomains={"nonexistent"},
)
with builder as built:
    # Without a certificate the https ports (and always the ws/wss ones) are
    # free ports nothing listens on, so `{{ports[https][0]}}` substitutes (as
    # in a full WPT setup) and fetches to them fail to connect.
    data = dict(built.__dict__)
    data["ports"] = dict(built.ports)
    data["ports"]["https"] = [h.port for h in httpsds] or [
        get_port("127.0.0.1"), get_port("127.0.0.1")]
    for scheme in ("ws", "wss"):
        data["ports"][scheme] = [get_port("127.0.0.1"), get_port("127.0.0.1")]
    config = Config(data)
    server.Server.config = config

stash_server = stash.StashServer(("127.0.0.1", 0), authkey=b"wpt-runner")
stash_server.__enter__()
for h in httpds + httpsds:
    h.start()
print(json.dumps({"http": ports, "https": config.ports["https"]}), flush=True)
sys.stdin.read()
# Stop the stash's manager process; the rest goes with this process (waiting
# for the server threads could hang on a client's open connection).
try:
    stash_server.manager.shutdown()
finally:
    os._exit(0)
