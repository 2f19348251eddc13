# `workerd serve` config for bench/http: one ES-module worker, the same hello-world handler as
# bench/hello.js, behind a socket named "http". bench/http overrides the address with
#   workerd serve bench/workerd/config.capnp -s http=127.0.0.1:PORT
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [ (name = "hello", worker = .helloWorker) ],
  sockets = [ (name = "http", address = "127.0.0.1:8080", http = (), service = "hello") ],
);

const helloWorker :Workerd.Worker = (
  modules = [ (name = "hello.js", esModule = embed "../hello.js") ],
  compatibilityDate = "2024-09-23",
);
