//! Per-tenant quotas against the real binary: two tenants of one config, `small` with tiny
//! limits and `roomy` with the defaults. Each quota trips with its error and a log line while the
//! other tenant is served, and gives its room back once what held it is done. Fixture:
//! tests/fixtures/quota/tenant.js; every connection is to loopback.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

fn config() -> PathBuf {
  let main = fixture("quota/tenant.js").display().to_string();
  let path = scratch_dir("quota").join("runtime.toml");
  std::fs::write(
    &path,
    format!(
      "[engine]\noutbound = [\"local\"]\n\
       [[workers]]\nname = \"small\"\nmain = {main:?}\nroutes = [\"*/small/*\"]\n\
       limits = {{ concurrent_requests = 2, websockets = 2, subrequests_in_flight = 2, pending_response_bytes = 12582912 }}\n\
       [[workers]]\nname = \"roomy\"\nmain = {main:?}\nroutes = [\"*/roomy/*\"]\n"
    ),
  )
  .unwrap();
  path
}

/// A loopback HTTP server that answers every request after `delay`.
async fn slow_upstream(delay: Duration) -> u16 {
  let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
  let port = listener.local_addr().unwrap().port();
  tokio::spawn(async move {
    while let Ok((mut socket, _)) = listener.accept().await {
      tokio::spawn(async move {
        if read_request_head(&mut socket).await.is_none() {
          return;
        }
        tokio::time::sleep(delay).await;
        let _ = socket
          .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nupstream")
          .await;
      });
    }
  });
  port
}

#[tokio::test(flavor = "multi_thread")]
async fn past_its_concurrent_requests_a_tenant_gets_503s_and_the_other_is_served() {
  within(60, async {
    let mut cmd = serve_config_cmd(&config());
    cmd.args(["--admin", "127.0.0.1:0"]);
    let mut srv = serve(cmd);
    let c = client();
    let slow: Vec<_> = (0..2)
      .map(|_| tokio::spawn(c.get(srv.url("/small/slow?ms=2000")).send()))
      .collect();
    // Both are in flight once the server logs nothing yet and a third is refused.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refused = c.get(srv.url("/small/")).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused
      .text()
      .await
      .unwrap()
      .contains("too many requests in flight"));
    let other = c.get(srv.url("/roomy/")).send().await.unwrap();
    assert_eq!(other.status(), 200);
    assert_eq!(other.text().await.unwrap(), "ok");
    for request in slow {
      let response = request.await.unwrap().unwrap();
      assert_eq!(response.status(), 200);
      assert_eq!(response.text().await.unwrap(), "slow done");
    }
    // The room is given back.
    let again = c.get(srv.url("/small/")).send().await.unwrap();
    assert_eq!(again.status(), 200);
    let lines = srv.log_lines_with(&[
      "worker=small",
      "too many requests in flight: this worker's limit is 2 (limits.concurrent_requests)",
    ]);
    assert_eq!(lines.len(), 1, "{}", srv.stderr());
    // /metrics counts the refusal, by worker and quota.
    let admin = srv.admin_url().await;
    let metrics = c.get(format!("{admin}/metrics")).send().await.unwrap().text().await.unwrap();
    for (worker, refusals) in [("small", 1), ("roomy", 0)] {
      let sample = format!(
        "runtime_quota_refusals_total{{worker=\"{worker}\",quota=\"concurrent_requests\"}} {refusals}\n"
      );
      assert!(metrics.contains(&sample), "no {sample:?} in\n{metrics}");
    }
    srv.stop_cleanly().await;
  })
  .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn past_its_websockets_a_tenants_upgrade_fails_until_one_closes() {
  within(60, async {
    let mut srv = serve(serve_config_cmd(&config()));
    let url = |worker: &str| format!("ws://127.0.0.1:{}/{worker}/ws", srv.port);
    let mut open = Vec::new();
    for _ in 0..2 {
      let (mut socket, _) = tokio_tungstenite::connect_async(url("small"))
        .await
        .unwrap();
      socket.send(Message::text("hi")).await.unwrap();
      let echoed = deadline(10, "an echo", socket.next()).await;
      assert!(matches!(echoed, Some(Ok(Message::Text(t))) if t.as_str() == "hi"));
      open.push(socket);
    }
    let refused = tokio_tungstenite::connect_async(url("small")).await;
    match refused {
      Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
        assert_eq!(response.status(), 500)
      }
      other => panic!("a third socket should be refused, got {other:?}"),
    }
    srv
      .wait_for_stderr(
        "too many open WebSockets: this worker's limit is 2 (limits.websockets)",
        10,
      )
      .await;
    // The other tenant still gets sockets.
    let (mut roomy, _) = tokio_tungstenite::connect_async(url("roomy"))
      .await
      .unwrap();
    roomy.send(Message::text("there")).await.unwrap();
    assert!(matches!(
      deadline(10, "an echo", roomy.next()).await,
      Some(Ok(Message::Text(t))) if t.as_str() == "there"
    ));
    // Closing one makes room (once the server has seen the close).
    let mut first = open.remove(0);
    first.close(None).await.unwrap();
    while let Some(Ok(_)) = deadline(10, "the close reply", first.next()).await {}
    let mut reopened = None;
    for _ in 0..50 {
      if let Ok((socket, _)) = tokio_tungstenite::connect_async(url("small")).await {
        reopened = Some(socket);
        break;
      }
      tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reopened.is_some(), "no room after a socket closed");
    // Shutdown does not wait on clients that never read: the sockets still
    // held get a 1001 and the server exits once the close replies time out.
    srv.stop_cleanly().await;
    for mut socket in [roomy, open.remove(0), reopened.unwrap()] {
      let mut code = None;
      while let Some(Ok(message)) = deadline(10, "the server's close", socket.next()).await {
        if let Message::Close(Some(frame)) = message {
          code = Some(u16::from(frame.code));
        }
      }
      assert_eq!(code, Some(1001));
    }
  })
  .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn past_its_subrequests_in_flight_a_tenants_fetch_rejects_and_the_others_complete() {
  within(60, async {
    let upstream = slow_upstream(Duration::from_millis(700)).await;
    let mut srv = serve(serve_config_cmd(&config()));
    let c = client();
    let target = format!("http://127.0.0.1:{upstream}/");
    let fanout = |worker: &str, n: usize| {
      c.get(srv.url(&format!("/{worker}/fanout")))
        .query(&[("url", target.as_str()), ("n", &n.to_string())])
        .send()
    };
    let results: Value = fanout("small", 3).await.unwrap().json().await.unwrap();
    let results = results.as_array().unwrap();
    let ok = results.iter().filter(|r| *r == "upstream").count();
    let refused: Vec<_> = results
      .iter()
      .filter(|r| *r != "upstream")
      .map(|r| r.as_str().unwrap())
      .collect();
    assert_eq!(ok, 2, "{results:?}");
    assert_eq!(refused.len(), 1, "{results:?}");
    assert!(
      refused[0].starts_with("TypeError: fetch failed: ")
        && refused[0].ends_with(
          "too many fetch() calls in flight: this worker's limit is 2 (limits.subrequests_in_flight)"
        ),
      "{refused:?}"
    );
    // The other tenant's five all go out at once.
    let results: Value = fanout("roomy", 5).await.unwrap().json().await.unwrap();
    assert!(
      results.as_array().unwrap().iter().all(|r| r == "upstream"),
      "{results}"
    );
    // Done fetches give their room back.
    let results: Value = fanout("small", 2).await.unwrap().json().await.unwrap();
    assert!(
      results.as_array().unwrap().iter().all(|r| r == "upstream"),
      "{results}"
    );
    assert_eq!(
      srv
        .log_lines_with(&["worker=small", "limits.subrequests_in_flight"])
        .len(),
      1,
      "{}",
      srv.stderr()
    );
    srv.stop_cleanly().await;
  })
  .await;
}

/// Sends a GET on a connection with a small receive buffer and reads just
/// the response head: the body waits in the server for a reader.
async fn get_without_reading(port: u16, path: &str) -> (tokio::net::TcpStream, String) {
  let socket = tokio::net::TcpSocket::new_v4().unwrap();
  socket.set_recv_buffer_size(16 * 1024).unwrap();
  let mut stream = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
  stream
    .write_all(format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n").as_bytes())
    .await
    .unwrap();
  let mut head = Vec::new();
  let mut byte = [0u8; 1];
  while !head.ends_with(b"\r\n\r\n") {
    assert_eq!(
      stream.read(&mut byte).await.unwrap(),
      1,
      "connection closed"
    );
    head.push(byte[0]);
  }
  (stream, String::from_utf8(head).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn past_its_pending_response_bytes_a_tenant_gets_503s_until_a_slow_client_reads() {
  within(60, async {
    let mut srv = serve(serve_config_cmd(&config()));
    const MIB: usize = 1 << 20;
    // 8 MiB that the client does not read: more than the sockets' buffers
    // take, so most of it waits in the server, counted.
    let (mut slow, head) = get_without_reading(srv.port, "/small/big?mb=8").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Another 8 MiB would pass small's 12 MiB.
    let (_, head) = get_without_reading(srv.port, "/small/big?mb=8").await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    srv
      .wait_for_stderr(
        "too many response bytes waiting for slow clients: this worker's limit is 12582912 (limits.pending_response_bytes)",
        10,
      )
      .await;
    assert_eq!(srv.log_lines_with(&["worker=small", "503:", "limits.pending_response_bytes"]).len(), 1);
    // The other tenant's big bodies go out.
    let c = client();
    for _ in 0..2 {
      let body = c.get(srv.url("/roomy/big?mb=8")).send().await.unwrap().bytes().await.unwrap();
      assert_eq!(body.len(), 8 * MIB);
    }
    // Once the slow client has read its body, small has room again.
    let mut body = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while body.len() < 8 * MIB {
      let n = slow.read(&mut buf).await.unwrap();
      assert!(n > 0, "the body ended after {} bytes", body.len());
      body.extend_from_slice(&buf[..n]);
    }
    assert!(body.iter().all(|&b| b == b'x'));
    drop(slow);
    let response = c.get(srv.url("/small/big?mb=8")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().len(), 8 * MIB);
    srv.stop_cleanly().await;
  })
  .await;
}
