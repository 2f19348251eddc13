//! A real `redis-server` for the tests: found on PATH (else installed with
//! `apt-get install -y redis-server`), started on a free loopback port in a
//! temporary directory with persistence off, and killed on drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
  child: Option<Child>,
  port: u16,
  dir: PathBuf,
  binary: PathBuf,
}

fn find_on_path(name: &str) -> Option<PathBuf> {
  let path = std::env::var_os("PATH")?;
  std::env::split_paths(&path)
    .map(|dir| dir.join(name))
    .find(|candidate| candidate.is_file())
}

fn redis_binary() -> PathBuf {
  if let Some(found) = find_on_path("redis-server") {
    return found;
  }
  let _ = Command::new("apt-get")
    .args(["install", "-y", "redis-server"])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .status();
  find_on_path("redis-server")
    .or_else(|| Some(PathBuf::from("/usr/bin/redis-server")).filter(|p| p.is_file()))
    .expect("redis-server is not installed (apt-get install -y redis-server)")
}

fn free_port() -> u16 {
  TcpListener::bind("127.0.0.1:0")
    .unwrap()
    .local_addr()
    .unwrap()
    .port()
}

/// Does a Redis answer PING on `port`?
fn pings(port: u16) -> bool {
  let Ok(mut stream) =
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
  else {
    return false;
  };
  let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
  if stream.write_all(b"PING\r\n").is_err() {
    return false;
  }
  let mut buf = [0u8; 16];
  matches!(stream.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

impl RedisServer {
  pub fn start() -> RedisServer {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
      "runtime-test-redis-{}-{}",
      std::process::id(),
      COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut server = RedisServer {
      child: None,
      port: free_port(),
      dir,
      binary: redis_binary(),
    };
    server.launch();
    server
  }

  fn launch(&mut self) {
    let child = Command::new(&self.binary)
      .args([
        "--port",
        &self.port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
      ])
      .arg(&self.dir)
      .stdout(Stdio::null())
      .stderr(Stdio::null())
      .spawn()
      .expect("starting redis-server");
    self.child = Some(child);
    let start = Instant::now();
    while !pings(self.port) {
      if start.elapsed() > Duration::from_secs(10) {
        panic!(
          "redis-server did not answer on port {} within 10 s",
          self.port
        );
      }
      std::thread::sleep(Duration::from_millis(20));
    }
  }

  /// `redis://127.0.0.1:PORT/DB`.
  pub fn url(&self, db: u8) -> String {
    format!("redis://127.0.0.1:{}/{db}", self.port)
  }

  pub fn port(&self) -> u16 {
    self.port
  }

  /// Kills the server (its data goes with it).
  pub fn stop(&mut self) {
    if let Some(mut child) = self.child.take() {
      let _ = child.kill();
      let _ = child.wait();
    }
  }

  /// Starts it again on the same port.
  pub fn restart(&mut self) {
    self.stop();
    self.launch();
  }
}

impl Drop for RedisServer {
  fn drop(&mut self) {
    self.stop();
    let _ = std::fs::remove_dir_all(&self.dir);
  }
}
