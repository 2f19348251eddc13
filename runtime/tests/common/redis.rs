//! A real `redis-server` for the tests, on a free loopback port, in a temporary directory, with
//! no persistence (`--save '' --appendonly no`). Found on PATH; when it is missing, installed with
//! `apt-get install -y redis-server` (the Debian package) first. Killed on drop; `stop()` and
//! `start()` take it down and bring it back on the same port, for outage tests.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Redis {
  pub port: u16,
  dir: PathBuf,
  child: Option<Child>,
}

/// The `redis-server` binary: on PATH, or installed once.
fn redis_server() -> PathBuf {
  static INSTALL: Mutex<()> = Mutex::new(());
  let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
  let find = || {
    std::env::var_os("PATH").and_then(|path| {
      std::env::split_paths(&path)
        .map(|dir| dir.join("redis-server"))
        .find(|p| p.is_file())
    })
  };
  if let Some(found) = find() {
    return found;
  }
  eprintln!("redis-server is not on PATH: installing it with apt-get");
  let installed = Command::new("apt-get")
    .args(["install", "-y", "redis-server"])
    .env("DEBIAN_FRONTEND", "noninteractive")
    .status()
    .is_ok_and(|s| s.success())
    || (Command::new("apt-get")
      .arg("update")
      .status()
      .is_ok_and(|s| s.success())
      && Command::new("apt-get")
        .args(["install", "-y", "redis-server"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success()));
  assert!(
    installed,
    "redis-server is missing and `apt-get install -y redis-server` failed"
  );
  find().expect("redis-server installed but not on PATH")
}

fn free_port() -> u16 {
  TcpListener::bind("127.0.0.1:0")
    .unwrap()
    .local_addr()
    .unwrap()
    .port()
}

impl Redis {
  /// Starts a server and waits until it accepts connections.
  pub fn start_new() -> Redis {
    let dir = crate::common::scratch_dir("redis");
    let mut redis = Redis {
      port: free_port(),
      dir,
      child: None,
    };
    redis.start();
    redis
  }

  /// `redis://127.0.0.1:PORT/DB`.
  pub fn url(&self, db: u32) -> String {
    format!("redis://127.0.0.1:{}/{db}", self.port)
  }

  /// (Re)starts the server on its port.
  pub fn start(&mut self) {
    assert!(self.child.is_none(), "redis-server is already running");
    let child = Command::new(redis_server())
      .args(["--port", &self.port.to_string()])
      .args(["--bind", "127.0.0.1"])
      .args(["--save", ""])
      .args(["--appendonly", "no"])
      .args(["--dir", self.dir.to_str().unwrap()])
      .stdin(Stdio::null())
      .stdout(Stdio::null())
      .stderr(Stdio::null())
      .spawn()
      .expect("failed to start redis-server");
    self.child = Some(child);
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
      assert!(
        start.elapsed() < Duration::from_secs(20),
        "redis-server did not listen on port {} within 20s",
        self.port
      );
      std::thread::sleep(Duration::from_millis(20));
    }
  }

  /// Freezes the server (SIGSTOP): it keeps its connections and port but answers nothing.
  pub fn pause(&self) {
    self.signal("STOP");
  }

  /// Thaws a paused server (SIGCONT).
  pub fn resume(&self) {
    self.signal("CONT");
  }

  fn signal(&self, sig: &str) {
    let pid = self.child.as_ref().expect("redis-server is running").id();
    let status = Command::new("kill")
      .arg(format!("-{sig}"))
      .arg(pid.to_string())
      .status()
      .unwrap();
    assert!(status.success(), "kill -{sig} redis-server failed");
  }

  /// Kills the server (the port stays reserved for `start`).
  pub fn stop(&mut self) {
    if let Some(mut child) = self.child.take() {
      let _ = Command::new("kill")
        .arg("-CONT")
        .arg(child.id().to_string())
        .status();
      let _ = child.kill();
      let _ = child.wait();
    }
  }
}

impl Drop for Redis {
  fn drop(&mut self) {
    self.stop();
    let _ = std::fs::remove_dir_all(&self.dir);
  }
}
