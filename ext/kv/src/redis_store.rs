//! The shared store: a namespace in a Redis database, which every runtime
//! process pointed at it reads and writes at once. Each key is a hash
//! (`v` value, `m` metadata, `k` a marker that the hash exists) that Redis
//! itself expires (`PEXPIREAT`), and a sorted set of the key names (all of
//! score 0, so ordered by their bytes) lists them; a name whose hash has
//! expired is dropped from the set when a list meets it.
//!
//! One `ConnectionManager` (a multiplexed connection that reconnects by
//! itself) per namespace, on the KV runtime. Every command is bounded in
//! time: a Redis that is down or does not answer fails the operation with a
//! clear error within [`OP_TIMEOUT`], never a hang.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands as _;
use tokio::sync::Mutex;

use crate::{Entry, ListPage, ListedKey};

/// Removes from the name set (KEYS[1]) each name (ARGV[2..]) whose hash
/// (ARGV[1] .. name) does not exist.
const FORGET_GONE: &str = "for i = 2, #ARGV do \
  if redis.call('EXISTS', ARGV[1] .. ARGV[i]) == 0 then redis.call('ZREM', KEYS[1], ARGV[i]) end \
end";

/// The longest any operation waits on Redis.
pub const OP_TIMEOUT: Duration = Duration::from_secs(3);

pub struct RedisStore {
  url: String,
  /// Where the server is, without any password, for error messages.
  shown: String,
  client: redis::Client,
  connection: Mutex<Option<ConnectionManager>>,
  /// `runtime-kv:{namespace}:`
  prefix: String,
}

impl RedisStore {
  pub fn open(url: &str, namespace: &str) -> Result<Arc<Self>, String> {
    let client = redis::Client::open(url).map_err(|e| format!("invalid Redis URL {url:?}: {e}"))?;
    let info = client.get_connection_info();
    let shown = format!("redis://{}/{}", info.addr, info.redis.db);
    let store = Arc::new(Self {
      url: url.to_string(),
      shown,
      client,
      connection: Mutex::new(None),
      prefix: format!("runtime-kv:{namespace}:"),
    });
    // Connect now, in the background, so that the first request does not
    // wait for it; a Redis that is down is retried by the operations.
    let early = store.clone();
    crate::kv_runtime().spawn(async move {
      if let Err(error) = early.connection().await {
        tracing::warn!("KV: {error}");
      }
    });
    Ok(store)
  }

  pub fn url(&self) -> &str {
    &self.url
  }

  fn hash_key(&self, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(self.prefix.len() + 2 + key.len());
    k.extend_from_slice(self.prefix.as_bytes());
    k.extend_from_slice(b"v:");
    k.extend_from_slice(key.as_bytes());
    k
  }

  fn names_key(&self) -> String {
    format!("{}keys", self.prefix)
  }

  fn error(&self, op: &str, e: impl std::fmt::Display) -> String {
    format!("KV {op} failed: Redis at {}: {e}", self.shown)
  }

  async fn connection(&self) -> Result<ConnectionManager, String> {
    let mut slot = self.connection.lock().await;
    if let Some(connection) = slot.as_ref() {
      return Ok(connection.clone());
    }
    let config = ConnectionManagerConfig::new()
      .set_connection_timeout(Duration::from_secs(2))
      .set_response_timeout(OP_TIMEOUT)
      .set_number_of_retries(1)
      .set_max_delay(500);
    let connect = ConnectionManager::new_with_config(self.client.clone(), config);
    let connection = match tokio::time::timeout(OP_TIMEOUT, connect).await {
      Ok(Ok(connection)) => connection,
      Ok(Err(e)) => return Err(format!("cannot connect to Redis at {}: {e}", self.shown)),
      Err(_) => {
        return Err(format!(
          "cannot connect to Redis at {}: no answer within {} s",
          self.shown,
          OP_TIMEOUT.as_secs()
        ))
      }
    };
    *slot = Some(connection.clone());
    Ok(connection)
  }

  /// Runs `command` on the connection within [`OP_TIMEOUT`].
  async fn run<T, F>(
    &self,
    op: &str,
    command: impl FnOnce(ConnectionManager) -> F,
  ) -> Result<T, String>
  where
    F: std::future::Future<Output = redis::RedisResult<T>>,
  {
    let work = async {
      let connection = self
        .connection()
        .await
        .map_err(|e| format!("KV {op} failed: {e}"))?;
      command(connection).await.map_err(|e| self.error(op, e))
    };
    match tokio::time::timeout(OP_TIMEOUT, work).await {
      Ok(result) => result,
      Err(_) => Err(self.error(
        op,
        format_args!("no answer within {} s", OP_TIMEOUT.as_secs()),
      )),
    }
  }

  pub async fn get(self: Arc<Self>, keys: Vec<String>) -> Result<Vec<Option<Entry>>, String> {
    let hashes: Vec<Vec<u8>> = keys.iter().map(|k| self.hash_key(k)).collect();
    let rows: Vec<(Option<Vec<u8>>, Option<String>)> = self
      .run("GET", |mut c| async move {
        let mut pipe = redis::pipe();
        for hash in &hashes {
          pipe.cmd("HMGET").arg(hash).arg("v").arg("m");
        }
        pipe.query_async(&mut c).await
      })
      .await?;
    Ok(
      rows
        .into_iter()
        .map(|(value, metadata)| value.map(|value| Entry { value, metadata }))
        .collect(),
    )
  }

  pub async fn put(
    self: Arc<Self>,
    key: String,
    value: Vec<u8>,
    expires_ms: Option<i64>,
    metadata: Option<String>,
  ) -> Result<(), String> {
    let hash = self.hash_key(&key);
    let names = self.names_key();
    self
      .run("PUT", |mut c| async move {
        let mut pipe = redis::pipe();
        pipe.atomic().del(&hash).ignore();
        let set = pipe
          .cmd("HSET")
          .arg(&hash)
          .arg("k")
          .arg(1)
          .arg("v")
          .arg(&value);
        if let Some(metadata) = &metadata {
          set.arg("m").arg(metadata);
        }
        if let Some(at) = expires_ms {
          set.arg("e").arg(at);
        }
        set.ignore();
        if let Some(at) = expires_ms {
          pipe.cmd("PEXPIREAT").arg(&hash).arg(at).ignore();
        }
        pipe.zadd(&names, key.as_bytes(), 0).ignore();
        pipe.query_async::<()>(&mut c).await
      })
      .await
  }

  pub async fn delete(self: Arc<Self>, key: String) -> Result<(), String> {
    let hash = self.hash_key(&key);
    let names = self.names_key();
    self
      .run("DELETE", |mut c| async move {
        redis::pipe()
          .atomic()
          .del(&hash)
          .ignore()
          .zrem(&names, key.as_bytes())
          .ignore()
          .query_async::<()>(&mut c)
          .await
      })
      .await
  }

  pub async fn list(
    self: Arc<Self>,
    prefix: String,
    limit: usize,
    after: Option<String>,
  ) -> Result<ListPage, String> {
    let names = self.names_key();
    let mut end = b"(".to_vec();
    end.extend_from_slice(prefix.as_bytes());
    end.push(0xFF);
    // Where the page starts: after the cursor's key, or at the prefix.
    let mut start = match after {
      Some(after) if after.as_str() >= prefix.as_str() => {
        let mut s = b"(".to_vec();
        s.extend_from_slice(after.as_bytes());
        s
      }
      _ => {
        let mut s = b"[".to_vec();
        s.extend_from_slice(prefix.as_bytes());
        s
      }
    };
    let mut keys = Vec::new();
    loop {
      let want = limit + 1 - keys.len();
      let batch: Vec<Vec<u8>> = self
        .run("LIST", |mut c| {
          let (names, start, end) = (names.clone(), start.clone(), end.clone());
          async move {
            c.zrangebylex_limit(&names, start, end, 0, want as isize)
              .await
          }
        })
        .await?;
      let exhausted = batch.len() < want;
      if let Some(last) = batch.last() {
        start = b"(".to_vec();
        start.extend_from_slice(last);
      }
      let hashes: Vec<Vec<u8>> = batch
        .iter()
        .map(|name| self.hash_key(&String::from_utf8_lossy(name)))
        .collect();
      type Row = (Option<u8>, Option<String>, Option<i64>);
      let rows: Vec<Row> = if hashes.is_empty() {
        Vec::new()
      } else {
        self
          .run("LIST", |mut c| async move {
            let mut pipe = redis::pipe();
            for hash in &hashes {
              pipe.cmd("HMGET").arg(hash).arg("k").arg("m").arg("e");
            }
            pipe.query_async(&mut c).await
          })
          .await?
      };
      let mut gone = Vec::new();
      for (name, (marker, metadata, expires)) in batch.into_iter().zip(rows) {
        if marker.is_none() {
          gone.push(name);
          continue;
        }
        keys.push(ListedKey {
          name: String::from_utf8_lossy(&name).into_owned(),
          expires_ms: expires,
          metadata,
        });
      }
      if !gone.is_empty() {
        // Expired (or deleted between the two reads): drop the names whose
        // hash is still gone (one written again meanwhile stays).
        let (names, prefix) = (names.clone(), format!("{}v:", self.prefix));
        let _ = self
          .run("LIST", |mut c| async move {
            redis::cmd("EVAL")
              .arg(FORGET_GONE)
              .arg(1)
              .arg(&names)
              .arg(prefix)
              .arg(gone)
              .query_async::<()>(&mut c)
              .await
          })
          .await;
      }
      if keys.len() > limit || exhausted {
        break;
      }
    }
    let more = keys.len() > limit;
    keys.truncate(limit);
    Ok(ListPage { keys, more })
  }
}
