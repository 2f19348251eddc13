//! WebSockets through the real server with a real client (tokio-tungstenite):
//! Workers' WebSocketPair on the server side, `new WebSocket` and `fetch()`
//! upgrades on the client side, limits, backpressure, vanished peers and
//! shutdown. Fixture: tests/fixtures/websocket/echo.js.

mod common;

use std::time::Duration;

use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn ws_url(server: &Server, path: &str) -> String {
  format!("ws://127.0.0.1:{}{}", server.port, path)
}

async fn connect(server: &Server, path: &str) -> Socket {
  let (socket, response) = tokio_tungstenite::connect_async(ws_url(server, path))
    .await
    .expect("the WebSocket handshake succeeds");
  assert_eq!(response.status(), 101);
  socket
}

/// The next message that is not a pong.
async fn next(socket: &mut Socket) -> Message {
  loop {
    match deadline(10, "a WebSocket message", socket.next()).await {
      Some(Ok(Message::Pong(_))) => continue,
      Some(Ok(message)) => return message,
      other => panic!("expected a message, got {other:?}"),
    }
  }
}

async fn close_frame(socket: &mut Socket) -> (u16, String) {
  loop {
    match deadline(10, "a close frame", socket.next()).await {
      Some(Ok(Message::Close(Some(frame)))) => {
        return (u16::from(frame.code), frame.reason.to_string())
      }
      Some(Ok(Message::Close(None))) => return (1005, String::new()),
      Some(Ok(_)) => continue,
      other => panic!("expected a close frame, got {other:?}"),
    }
  }
}

/// The server's `/events` once it lists `n` close events.
async fn events_with_closes(server: &Server, n: usize) -> Value {
  let c = client();
  deadline(15, "the server's close events", async {
    loop {
      let (_, events) = get_json(&c, &server.url("/events")).await;
      if events["closes"].as_array().is_some_and(|a| a.len() >= n) {
        return events;
      }
      tokio::time::sleep(Duration::from_millis(50)).await;
    }
  })
  .await
}

#[tokio::test]
async fn echo_text_binary_fragments_pings_and_a_client_close() {
  let server = serve_one_isolate(&fixture("websocket/echo.js"));
  let mut socket = connect(&server, "/echo").await;

  socket.send(Message::text("hi ✓")).await.unwrap();
  assert_eq!(next(&mut socket).await, Message::text("hi ✓"));
  socket
    .send(Message::binary(vec![0u8, 1, 2, 255]))
    .await
    .unwrap();
  assert_eq!(
    next(&mut socket).await,
    Message::binary(vec![0u8, 1, 2, 255])
  );

  // Messages much larger than a read (2 KiB), just under the 1 MiB limit, arrive whole and
  // in order.
  let big: Vec<u8> = (0..(1 << 20) - 64).map(|i| (i % 251) as u8).collect();
  let text = "x".repeat(300_000) + "✓";
  socket.send(Message::binary(big.clone())).await.unwrap();
  socket.send(Message::text(text.clone())).await.unwrap();
  assert_eq!(next(&mut socket).await, Message::binary(big));
  assert_eq!(next(&mut socket).await, Message::text(text));

  // A message in three frames arrives whole.
  for (part, opcode, fin) in [
    ("frag", OpCode::Data(Data::Text), false),
    ("ment", OpCode::Data(Data::Continue), false),
    ("ed", OpCode::Data(Data::Continue), true),
  ] {
    socket
      .send(Message::Frame(Frame::message(
        part.as_bytes().to_vec(),
        opcode,
        fin,
      )))
      .await
      .unwrap();
  }
  assert_eq!(next(&mut socket).await, Message::text("fragmented"));

  // A ping is answered with its payload.
  socket
    .send(Message::Ping(b"are you there".to_vec().into()))
    .await
    .unwrap();
  let pong = deadline(10, "a pong", socket.next()).await;
  assert!(
    matches!(&pong, Some(Ok(Message::Pong(p))) if p.as_ref() == b"are you there"),
    "{pong:?}"
  );

  socket
    .close(Some(CloseFrame {
      code: CloseCode::Normal,
      reason: "client bye".into(),
    }))
    .await
    .unwrap();
  let (code, _) = close_frame(&mut socket).await;
  assert_eq!(code, 1000, "the server answers the close handshake");
  let events = events_with_closes(&server, 1).await;
  assert_eq!(
    events["closes"][0],
    json!({"code": 1000, "reason": "client bye", "wasClean": true})
  );
}

#[tokio::test]
async fn the_server_closes_with_its_code_and_sees_the_clean_close() {
  let server = serve_one_isolate(&fixture("websocket/echo.js"));
  let mut socket = connect(&server, "/echo").await;
  socket.send(Message::text("close:4001")).await.unwrap();
  assert_eq!(close_frame(&mut socket).await, (4001, "bye".to_string()));
  // tungstenite replies to the close; the server's socket then hears of it.
  let _ = deadline(10, "the end of the stream", socket.next()).await;
  let events = events_with_closes(&server, 1).await;
  assert_eq!(events["closes"][0]["code"], 4001, "{events}");
  assert_eq!(events["closes"][0]["wasClean"], true, "{events}");
}

/// Messages sent just before `close()` go out, and then the close with its code: none of the
/// three is lost when they are queued together.
#[tokio::test]
async fn messages_then_a_close_sent_at_once_all_arrive_in_order() {
  let server = serve_one_isolate(&fixture("websocket/echo.js"));
  let mut socket = connect(&server, "/echo").await;
  socket.send(Message::text("last-words")).await.unwrap();
  assert_eq!(next(&mut socket).await, Message::text("one"));
  assert_eq!(next(&mut socket).await, Message::text("two"));
  assert_eq!(close_frame(&mut socket).await, (4002, "said".to_string()));
}

#[tokio::test]
async fn a_vanished_client_gives_the_script_a_close_event() {
  let server = serve_one_isolate(&fixture("websocket/echo.js"));
  let mut socket = connect(&server, "/echo").await;
  socket.send(Message::text("ping")).await.unwrap();
  assert_eq!(next(&mut socket).await, Message::text("ping"));
  // No close frame: the TCP connection just goes.
  drop(socket);
  let events = events_with_closes(&server, 1).await;
  assert_eq!(events["closes"][0]["code"], 1006, "{events}");
  assert_eq!(events["closes"][0]["wasClean"], false, "{events}");
}

#[tokio::test]
async fn a_101_needs_an_upgrade_request_and_a_websocket() {
  let server = serve_one_isolate(&fixture("websocket/echo.js"));
  let c = client();
  let (status, _) = get_text(&c, &server.url("/bad-101")).await;
  assert_eq!(status, 500);
  server
    .wait_for_stderr("the request is not a WebSocket upgrade", 10)
    .await;
  let (status, _) = get_text(&c, &server.url("/no-socket-101")).await;
  assert_eq!(status, 500);
  server
    .wait_for_stderr("status 101 needs a webSocket", 10)
    .await;
  // A plain request to the upgrade route is the handler's to answer.
  let (status, _) = get_text(&c, &server.url("/echo")).await;
  assert_eq!(status, 426);
}

fn limited_server() -> Server {
  let mut cmd = serve_config_cmd(&fixture("websocket/limits.toml"));
  cmd.args(["--threads", "1"]);
  serve(cmd)
}

#[tokio::test]
async fn an_oversized_message_closes_with_1009() {
  let server = limited_server();
  let mut socket = connect(&server, "/echo").await;
  socket
    .send(Message::binary(vec![7u8; 32 * 1024]))
    .await
    .unwrap();
  assert_eq!(
    next(&mut socket).await,
    Message::binary(vec![7u8; 32 * 1024])
  );
  // Over the worker's websocket_message_kb = 64.
  socket
    .send(Message::binary(vec![7u8; 100 * 1024]))
    .await
    .unwrap();
  let (code, _) = close_frame(&mut socket).await;
  assert_eq!(code, 1009);
  let events = events_with_closes(&server, 1).await;
  assert_eq!(events["closes"][0]["code"], 1009, "{events}");
  assert!(
    events["errors"][0]
      .as_str()
      .unwrap_or("")
      .contains("too big"),
    "{events}"
  );
}

#[tokio::test]
async fn a_client_that_stops_reading_cannot_make_the_server_buffer_without_bound() {
  let server = limited_server();
  let rss_before = server.proc_status_kib("VmRSS");
  let mut socket = connect(&server, "/echo").await;
  // 200 messages of 256 KiB (50 MiB) at once to a client that reads none:
  // past websocket_buffer_kb = 1024 the socket is aborted with 1011.
  socket.send(Message::text("flood:200:256")).await.unwrap();
  let events = events_with_closes(&server, 1).await;
  assert_eq!(events["closes"][0]["code"], 1011, "{events}");
  assert!(
    events["closes"][0]["reason"]
      .as_str()
      .unwrap_or("")
      .contains("not reading"),
    "{events}"
  );
  assert!(
    events["maxBuffered"].as_u64().unwrap_or(0) > 1024 * 1024,
    "bufferedAmount grows: {events}"
  );
  let growth_mib = server.proc_status_kib("VmRSS").saturating_sub(rss_before) / 1024;
  assert!(
    growth_mib < 30,
    "the server's RSS grew by {growth_mib} MiB for 50 MiB sent to a client that does not read"
  );
  server
    .wait_for_stderr("WebSocket aborted (1011): the peer is not reading", 10)
    .await;
  drop(socket);
}

#[tokio::test]
async fn an_idle_socket_is_closed_with_1001() {
  let server = limited_server();
  let mut socket = connect(&server, "/echo").await;
  // websocket_idle_s = 2.
  let (code, reason) = close_frame(&mut socket).await;
  assert_eq!((code, reason.as_str()), (1001, "idle timeout"));
}

#[tokio::test]
async fn a_message_handler_that_loops_is_stopped_and_its_sockets_get_1011() {
  let server = limited_server();
  let mut socket = connect(&server, "/echo").await;
  socket.send(Message::text("spin")).await.unwrap();
  let (code, _) = close_frame(&mut socket).await;
  assert_eq!(code, 1011);
  server.wait_for_stderr("CPU time limit", 10).await;
  // The next connection gets a fresh isolate.
  let mut again = connect(&server, "/echo").await;
  again.send(Message::text("still here")).await.unwrap();
  assert_eq!(next(&mut again).await, Message::text("still here"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_sockets_on_one_worker() {
  let server = serve_one_isolate(&fixture("websocket/echo.js"));
  let url = ws_url(&server, "/echo");
  within(120, async {
    let mut sockets = Vec::new();
    for chunk in 0..10 {
      let opened =
        futures::future::join_all((0..100).map(|_| tokio_tungstenite::connect_async(url.clone())))
          .await;
      for (i, result) in opened.into_iter().enumerate() {
        let (socket, _) = result.unwrap_or_else(|e| panic!("socket {}: {e}", chunk * 100 + i));
        sockets.push(socket);
      }
    }
    // Every socket is open at once and each gets its own echo.
    let echoed = futures::future::join_all(sockets.iter_mut().enumerate().map(
      |(i, socket)| async move {
        socket.send(Message::text(format!("n{i}"))).await.unwrap();
        next(socket).await
      },
    ))
    .await;
    for (i, message) in echoed.into_iter().enumerate() {
      assert_eq!(message, Message::text(format!("n{i}")));
    }
    for socket in &mut sockets {
      socket.close(None).await.unwrap();
    }
  })
  .await;
  let events = events_with_closes(&server, 1000).await;
  assert_eq!(events["closes"].as_array().unwrap().len(), 1000);
}

#[tokio::test]
async fn graceful_shutdown_closes_sockets_with_1001() {
  let mut server = serve_one_isolate(&fixture("websocket/echo.js"));
  let mut socket = connect(&server, "/echo").await;
  socket.send(Message::text("before")).await.unwrap();
  assert_eq!(next(&mut socket).await, Message::text("before"));
  server.signal("TERM");
  let (code, _) = close_frame(&mut socket).await;
  assert_eq!(code, 1001);
  drop(socket);
  server.assert_clean_exit(20, "TERM").await;
}

// ---------------------------------------------------------------------------
// Client sockets

/// A WebSocket echo server on loopback (plain, or TLS with the test CA's
/// certificate) that picks the subprotocol "chat" when offered.
#[allow(clippy::result_large_err)] // tungstenite's callback type
async fn upstream(tls: bool) -> std::net::SocketAddr {
  use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
  let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
  let addr = listener.local_addr().unwrap();
  let acceptor = tls.then(tls_acceptor);
  tokio::spawn(async move {
    while let Ok((stream, _)) = listener.accept().await {
      let acceptor = acceptor.clone();
      tokio::spawn(async move {
        let choose = |request: &Request, mut response: Response| {
          let offered = request
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
          if offered.split(',').any(|p| p.trim() == "chat") {
            response
              .headers_mut()
              .insert("sec-websocket-protocol", "chat".parse().unwrap());
          }
          Ok(response)
        };
        match acceptor {
          Some(acceptor) => {
            let Ok(tls) = acceptor.accept(stream).await else {
              return;
            };
            if let Ok(ws) = tokio_tungstenite::accept_hdr_async(tls, choose).await {
              echo_until_closed(ws).await;
            }
          }
          None => {
            if let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, choose).await {
              echo_until_closed(ws).await;
            }
          }
        }
      });
    }
  });
  addr
}

async fn echo_until_closed<S>(mut ws: WebSocketStream<S>)
where
  S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
  while let Some(Ok(message)) = ws.next().await {
    if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
      return;
    }
  }
}

fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
  use rustls::pki_types::pem::PemObject;
  use rustls::pki_types::{CertificateDer, PrivateKeyDer};
  let tls = fixture("tls");
  let certs = CertificateDer::pem_file_iter(tls.join("cert.pem"))
    .unwrap()
    .collect::<Result<Vec<_>, _>>()
    .unwrap();
  let key = PrivateKeyDer::from_pem_file(tls.join("key.pem")).unwrap();
  let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
    rustls::crypto::ring::default_provider(),
  ))
  .with_safe_default_protocol_versions()
  .unwrap()
  .with_no_client_auth()
  .with_single_cert(certs, key)
  .unwrap();
  tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))
}

fn encode(url: &str) -> String {
  url
    .bytes()
    .map(|b| match b {
      b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
        (b as char).to_string()
      }
      _ => format!("%{b:02X}"),
    })
    .collect()
}

fn expected_client_result() -> Value {
  json!({
    "opened": true,
    "protocol": "chat",
    "messages": ["hello", "binary:1,2,3"],
    "close": {"code": 1000, "reason": "done", "wasClean": true},
    "error": null,
  })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_websocket_and_fetch_upgrade_reach_an_upstream() {
  let up = upstream(false).await;
  let server = serve_one_isolate(&fixture("websocket/echo.js"));
  let c = client();
  let target = encode(&format!("ws://127.0.0.1:{}/", up.port()));
  let (status, v) = get_json(&c, &server.url(&format!("/client?url={target}"))).await;
  assert_eq!(status, 200, "{v}");
  assert_eq!(v, expected_client_result());

  let (status, mut v) =
    get_json(&c, &server.url(&format!("/client?url={target}&mode=fetch"))).await;
  assert_eq!(status, 200, "{v}");
  assert_eq!(v["status"], 101, "{v}");
  v.as_object_mut().unwrap().remove("status");
  assert_eq!(v, expected_client_result());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_with_the_operators_ca_and_refused_without_it() {
  let up = upstream(true).await;
  let target = encode(&format!("wss://127.0.0.1:{}/", up.port()));
  let c = client();

  let mut cmd = serve_script_cmd(&fixture("websocket/echo.js"));
  cmd
    .args(["--threads", "1"])
    .env("RUNTIME_CA_CERTS", fixture("tls/ca.pem"));
  let trusting = serve(cmd);
  let (status, v) = get_json(&c, &trusting.url(&format!("/client?url={target}"))).await;
  assert_eq!(status, 200, "{v}");
  assert_eq!(v, expected_client_result());

  let plain = serve_one_isolate(&fixture("websocket/echo.js"));
  let (status, v) = get_json(&c, &plain.url(&format!("/client?url={target}"))).await;
  assert_eq!(status, 502, "{v}");
  assert!(
    v["error"].as_str().unwrap_or("").contains("certificate"),
    "{v}"
  );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_client_socket_to_loopback_is_denied() {
  let up = upstream(false).await;
  let mut cmd = serve_config_cmd(&fixture("websocket/tenant.toml"));
  cmd.args(["--threads", "1"]);
  let server = serve(cmd);
  let c = client();
  let target = encode(&format!("ws://127.0.0.1:{}/", up.port()));
  for mode in ["", "&mode=fetch"] {
    let (status, v) = get_json(&c, &server.url(&format!("/client?url={target}{mode}"))).await;
    assert_eq!(status, 502, "{v}");
    let error = v["error"].as_str().unwrap_or("");
    assert!(
      error.contains("127.0.0.1") && error.contains("outbound policy [\"public\"]"),
      "{v}"
    );
  }
  server
    .wait_for_stderr("not allowed by this worker's outbound policy", 10)
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_proxies_a_socket_to_an_upstream() {
  let up = upstream(false).await;
  let server = serve_one_isolate(&fixture("websocket/echo.js"));
  let target = encode(&format!("ws://127.0.0.1:{}/", up.port()));
  let mut socket = connect(&server, &format!("/proxy?url={target}")).await;
  for i in 0..5 {
    socket
      .send(Message::text(format!("through {i}")))
      .await
      .unwrap();
    assert_eq!(
      next(&mut socket).await,
      Message::text(format!("through {i}"))
    );
  }
  socket.send(Message::binary(vec![9u8, 8, 7])).await.unwrap();
  assert_eq!(next(&mut socket).await, Message::binary(vec![9u8, 8, 7]));
  socket
    .close(Some(CloseFrame {
      code: CloseCode::Normal,
      reason: "done".into(),
    }))
    .await
    .unwrap();
  let (code, _) = close_frame(&mut socket).await;
  assert_eq!(code, 1000);
}

#[tokio::test]
async fn hono_upgrade_websocket_for_cloudflare_workers_runs_unchanged() {
  let server = serve_one_isolate(&fixture("hono-websocket.js"));
  let c = client();
  let (status, text) = get_text(&c, &server.url("/")).await;
  assert_eq!((status, text.as_str()), (200, "hono with websockets"));
  let mut socket = connect(&server, "/ws").await;
  socket.send(Message::text("hi")).await.unwrap();
  assert_eq!(next(&mut socket).await, Message::text("echo: hi"));
  socket.send(Message::text("count")).await.unwrap();
  assert_eq!(next(&mut socket).await, Message::text("count: 2"));
  socket.close(None).await.unwrap();
  let _ = close_frame(&mut socket).await;
}
