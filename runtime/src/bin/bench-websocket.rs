//! The load client of `bench/websocket` (a real WebSocket client,
//! tokio-tungstenite, on one thread):
//!
//! - `bench-websocket echo URL CONNECTIONS SECONDS`: each connection sends a
//!   64-byte text message and waits for its echo, again and again; prints
//!   the round trips completed and per second as one JSON object.
//! - `bench-websocket idle URL N`: opens N connections, sends one message
//!   on each and reads its echo (so every socket is open end to end), prints
//!   `ready N`, and holds them until its standard input closes.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn open(url: &str) -> Socket {
  let uri: http::Uri = url.parse().expect("a ws:// URL");
  let host = uri.host().expect("a host");
  let port = uri.port_u16().unwrap_or(80);
  let tcp = tokio::net::TcpStream::connect((host, port))
    .await
    .expect("connect");
  tcp.set_nodelay(true).ok();
  let (socket, _) = tokio_tungstenite::client_async(url, tcp)
    .await
    .expect("the WebSocket handshake");
  socket
}

async fn round_trip(socket: &mut Socket, message: &str) {
  socket.send(Message::text(message)).await.expect("send");
  loop {
    match socket.next().await {
      Some(Ok(Message::Text(_))) | Some(Ok(Message::Binary(_))) => return,
      Some(Ok(_)) => continue,
      other => panic!("the echo did not come: {other:?}"),
    }
  }
}

async fn echo(url: String, connections: usize, seconds: u64) {
  let payload = "x".repeat(64);
  let end = Instant::now() + Duration::from_secs(seconds);
  let start = Instant::now();
  let counts = futures::future::join_all((0..connections).map(|_| {
    let (url, payload) = (url.clone(), payload.clone());
    async move {
      let mut socket = open(&url).await;
      let mut n = 0u64;
      while Instant::now() < end {
        round_trip(&mut socket, &payload).await;
        n += 1;
      }
      let _ = socket.close(None).await;
      n
    }
  }))
  .await;
  let total: u64 = counts.iter().sum();
  let elapsed = start.elapsed().as_secs_f64();
  println!(
    "{{\"round_trips\": {total}, \"round_trips_per_s\": {:.0}, \"seconds\": {elapsed:.2}}}",
    total as f64 / elapsed
  );
}

async fn idle(url: String, n: usize) {
  let mut sockets = Vec::with_capacity(n);
  for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
    let opened = futures::future::join_all(chunk.iter().map(|_| async {
      let mut socket = open(&url).await;
      round_trip(&mut socket, "hello").await;
      socket
    }))
    .await;
    sockets.extend(opened);
  }
  println!("ready {}", sockets.len());
  let mut sink = Vec::new();
  let _ = tokio::io::stdin().read_to_end(&mut sink).await;
  drop(sockets);
}

fn main() {
  let args: Vec<String> = std::env::args().collect();
  let usage = "usage: bench-websocket echo URL CONNECTIONS SECONDS | idle URL N";
  let rt = tokio::runtime::Builder::new_current_thread()
    .enable_all()
    .build()
    .expect("tokio runtime");
  match args.get(1).map(String::as_str) {
    Some("echo") if args.len() == 5 => rt.block_on(echo(
      args[2].clone(),
      args[3].parse().expect(usage),
      args[4].parse().expect(usage),
    )),
    Some("idle") if args.len() == 4 => {
      rt.block_on(idle(args[2].clone(), args[3].parse().expect(usage)))
    }
    _ => {
      eprintln!("{usage}");
      std::process::exit(2);
    }
  }
}
