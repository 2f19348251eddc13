//! Tenants cannot reach the host: the outbound network policy, against the real binary with a
//! two-tenant config (tests/fixtures/outbound/). Every address tried is on loopback (127.0.0.1,
//! 127.0.0.2, ::1 and their other spellings), so a broken policy can reach nothing but this
//! machine's test servers; the address classifier itself is unit-tested in ext/src/outbound.rs.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

/// A loopback HTTP server on `ip` that counts its requests: `/redirect?to=URL` answers a 302 to
/// URL, anything else a 200 "upstream".
struct Upstream {
  port: u16,
  hits: Arc<AtomicUsize>,
}

async fn upstream(ip: &str) -> Upstream {
  let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
  let port = listener.local_addr().unwrap().port();
  let hits = Arc::new(AtomicUsize::new(0));
  let counted = hits.clone();
  tokio::spawn(async move {
    loop {
      let Ok((mut socket, _)) = listener.accept().await else {
        return;
      };
      counted.fetch_add(1, Ordering::SeqCst);
      tokio::spawn(async move {
        let Some(head) = read_request_head(&mut socket).await else {
          return;
        };
        let head = String::from_utf8_lossy(&head);
        let target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
        let reply = match target.strip_prefix("/redirect?to=") {
          Some(to) => format!(
            "HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
          ),
          None => {
            "HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nupstream".to_string()
          }
        };
        let _ = socket.write_all(reply.as_bytes()).await;
      });
    }
  });
  Upstream { port, hits }
}

fn fetcher() -> PathBuf {
  fixture("outbound/fetcher.js")
}

/// Two tenants: `tenant` with the default policy, `trusted` allowed one loopback address.
fn two_tenants(extra_trusted: &str) -> PathBuf {
  let main = fetcher().display().to_string();
  scratch_config(
    "outbound",
    &format!(
      "[[workers]]\nname = \"tenant\"\nmain = {main:?}\nroutes = [\"tenant.test/*\"]\n\
       [[workers]]\nname = \"trusted\"\nmain = {main:?}\nroutes = [\"trusted.test/*\"]\n\
       outbound = [\"127.0.0.2/32\"{extra_trusted}]\n"
    ),
  )
}

fn scratch_config(name: &str, toml: &str) -> PathBuf {
  let path = scratch_dir(name).join("runtime.toml");
  std::fs::write(&path, toml).unwrap();
  path
}

async fn try_fetch(srv: &Server, host: &str, url: &str) -> Value {
  let c = client();
  let response = c
    .get(srv.url("/fetch"))
    .query(&[("url", url)])
    .header("host", host)
    .send()
    .await
    .unwrap();
  assert_eq!(response.status(), 200);
  response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_cannot_reach_loopback_by_any_spelling_and_nothing_is_sent() {
  within(60, async {
    let local = upstream("127.0.0.1").await;
    let port = local.port;
    let mut srv = serve(serve_config_cmd(&two_tenants("")));
    for url in [
      format!("http://127.0.0.1:{port}/"),
      format!("http://[::1]:{port}/"),
      format!("http://[::ffff:127.0.0.1]:{port}/"),
      format!("http://2130706433:{port}/"),
      format!("http://0x7f.1:{port}/"),
      format!("http://localhost:{port}/"),
      format!("http://0.0.0.0:{port}/"),
    ] {
      let body = try_fetch(&srv, "tenant.test", &url).await;
      let error = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{url}: {body}"));
      assert!(
        error.contains("is not allowed by this worker's outbound policy [\"public\"]"),
        "{url}: {error}"
      );
    }
    assert_eq!(
      local.hits.load(Ordering::SeqCst),
      0,
      "a denied fetch reached the upstream"
    );
    let denials = srv.log_lines_with(&["outbound policy", "worker=tenant"]);
    assert!(denials.len() >= 7, "{denials:?}");
    srv.stop_cleanly().await;
  })
  .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_allowed_address_is_reached_but_a_redirect_from_it_to_a_denied_one_is_not() {
  within(60, async {
    let local = upstream("127.0.0.1").await;
    let allowed = upstream("127.0.0.2").await;
    let mut srv = serve(serve_config_cmd(&two_tenants("")));
    let body = try_fetch(
      &srv,
      "trusted.test",
      &format!("http://127.0.0.2:{}/", allowed.port),
    )
    .await;
    assert_eq!(body["status"], 200, "{body}");
    assert_eq!(body["body"], "upstream");
    // The other tenant is denied the same address.
    let body = try_fetch(
      &srv,
      "tenant.test",
      &format!("http://127.0.0.2:{}/", allowed.port),
    )
    .await;
    assert!(body["error"].as_str().is_some(), "{body}");
    // Each redirect hop is checked on its own.
    let to = format!("http://127.0.0.1:{}/", local.port);
    let body = try_fetch(
      &srv,
      "trusted.test",
      &format!("http://127.0.0.2:{}/redirect?to={to}", allowed.port),
    )
    .await;
    let error = body["error"].as_str().unwrap_or_else(|| panic!("{body}"));
    assert!(
      error.contains("127.0.0.1 (loopback) is not allowed"),
      "{error}"
    );
    assert_eq!(local.hits.load(Ordering::SeqCst), 0);
    assert_eq!(allowed.hits.load(Ordering::SeqCst), 2);
    srv.stop_cleanly().await;
  })
  .await;
}

/// A host name entry allows that name and port whatever it resolves to (localhost here).
#[tokio::test(flavor = "multi_thread")]
async fn a_host_name_entry_allows_that_host_and_port_only() {
  within(60, async {
    let local = upstream("127.0.0.1").await;
    let config = two_tenants(&format!(", \"localhost:{}\"", local.port));
    let mut srv = serve(serve_config_cmd(&config));
    let body = try_fetch(
      &srv,
      "trusted.test",
      &format!("http://localhost:{}/", local.port),
    )
    .await;
    assert_eq!(body["status"], 200, "{body}");
    let body = try_fetch(
      &srv,
      "trusted.test",
      &format!("http://127.0.0.1:{}/", local.port),
    )
    .await;
    assert!(body["error"].as_str().is_some(), "{body}");
    srv.stop_cleanly().await;
  })
  .await;
}

/// A script you run yourself may fetch anything; `--outbound` restricts it.
#[tokio::test(flavor = "multi_thread")]
async fn the_shorthand_fetches_loopback_unless_told_otherwise() {
  within(60, async {
    let local = upstream("127.0.0.1").await;
    let url = format!("http://127.0.0.1:{}/", local.port);
    let mut srv = serve(serve_script_cmd(&fetcher()));
    let body = try_fetch(&srv, "any.test", &url).await;
    assert_eq!(body["status"], 200, "{body}");
    srv.stop_cleanly().await;

    let mut cmd = serve_script_cmd(&fetcher());
    cmd.args(["--outbound", "public"]);
    let mut srv = serve(cmd);
    let body = try_fetch(&srv, "any.test", &url).await;
    assert!(body["error"].as_str().is_some(), "{body}");
    srv.stop_cleanly().await;
  })
  .await;
}

#[test]
fn a_bad_outbound_entry_is_a_start_up_error_naming_it() {
  let main = fetcher().display().to_string();
  let config = scratch_config(
    "outbound-bad",
    &format!("[[workers]]\nname = \"w\"\nmain = {main:?}\noutbound = [\"10.1.2.0/40\"]\n"),
  );
  let stderr = serve_fails(serve_config_cmd(&config));
  assert!(
    stderr.contains("workers[0] (w).outbound") && stderr.contains("\"10.1.2.0/40\""),
    "{stderr}"
  );
}
