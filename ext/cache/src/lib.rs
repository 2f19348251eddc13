//! The Cache API's stores beyond the in-process one (which is
//! `runtime_ext::cache_memory`): Redis, so that every runtime process
//! behind a load balancer shares one cache, and [`open_store`], which
//! picks the store `[cache]` in runtime.toml names.
//!
//! Redis is driven on a thread of its own (a one-thread tokio runtime), so
//! an isolate thread only awaits the result; every call is bounded by
//! [`RedisStore::TIMEOUT`], so an unreachable Redis rejects the script's
//! promise with a clear error instead of hanging it, and the connection
//! manager reconnects once Redis is back.
//!
//! Layout, for a namespace `ns` (a worker's name, or "" when shared) and a
//! cache (`d` for `caches.default`, `n<len>:<name>` for a named one), under
//! `P = rtcache:<len(ns)>:<ns>:<cache>`:
//! - `P|e|<url>`: a hash, `meta` (JSON: status, headers, Vary, times) and
//!   `body`, expiring (PEXPIREAT) when the response goes stale;
//! - `P|i`: a sorted set of the cache's URLs, scored by put time (stale
//!   members are dropped when listed);
//! - `rtcache:<len(ns)>:<ns>|names`: the namespace's named caches, scored
//!   by the time each was first opened.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;
use runtime_ext::cache::{now_ms, CacheBackend, CacheError, CacheFuture, CacheId, Entry};
use runtime_ext::cache_memory::MemoryStore;
use serde::{Deserialize, Serialize};

/// `[cache]` of runtime.toml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
  /// Capacity of the in-process store, in MiB.
  pub memory_mb: u64,
  /// `redis://host:port/db`: one cache shared by every process.
  pub store: Option<String>,
  /// All workers share one set of caches (else each worker has its own).
  pub shared: bool,
}

impl Default for CacheSettings {
  fn default() -> Self {
    Self {
      memory_mb: runtime_ext::cache::DEFAULT_MEMORY_MB,
      store: None,
      shared: false,
    }
  }
}

/// The store `settings` name. Nothing is connected yet: Redis is reached on
/// the first call (and a bad URL is an error here).
pub fn open_store(settings: &CacheSettings) -> Result<Arc<dyn CacheBackend>, String> {
  match &settings.store {
    None => Ok(Arc::new(MemoryStore::new(settings.memory_mb << 20))),
    Some(url) if url.starts_with("redis://") || url.starts_with("redis+unix://") => {
      Ok(Arc::new(RedisStore::new(url)?))
    }
    Some(url) => Err(format!(
      "[cache] store: {url:?} is not a redis:// URL (leave it out for the in-process store)"
    )),
  }
}

pub struct RedisStore {
  client: redis::Client,
  /// The Redis thread's runtime.
  handle: tokio::runtime::Handle,
  conn: Arc<tokio::sync::Mutex<Option<ConnectionManager>>>,
  url: Arc<str>,
}

#[derive(Serialize, Deserialize)]
struct Meta {
  s: u16,
  t: String,
  h: Vec<(String, String)>,
  v: Vec<(String, Option<String>)>,
  a: u64,
  x: u64,
}

fn ns_prefix(namespace: &str) -> String {
  format!("rtcache:{}:{}", namespace.len(), namespace)
}

fn cache_prefix(cache: &CacheId) -> String {
  match &cache.name {
    None => format!("{}:d", ns_prefix(&cache.namespace)),
    Some(name) => format!("{}:n{}:{}", ns_prefix(&cache.namespace), name.len(), name),
  }
}

fn entry_key(cache: &CacheId, url: &str) -> String {
  format!("{}|e|{}", cache_prefix(cache), url)
}

fn index_key(cache: &CacheId) -> String {
  format!("{}|i", cache_prefix(cache))
}

fn names_key(namespace: &str) -> String {
  format!("{}|names", ns_prefix(namespace))
}

impl RedisStore {
  /// Bound on every call, connecting included.
  pub const TIMEOUT: Duration = Duration::from_secs(2);
  /// Largest entry: Redis strings hold at most 512 MiB.
  const MAX_ENTRY: usize = 512 << 20;

  pub fn new(url: &str) -> Result<Self, String> {
    let client = redis::Client::open(url)
      .map_err(|e| format!("[cache] store: invalid Redis URL {url:?}: {e}"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
      .name("cache-redis".into())
      .spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
          .enable_all()
          .build()
          .expect("tokio runtime for Redis");
        let _ = tx.send(rt.handle().clone());
        // Drives the connection for the life of the process.
        rt.block_on(std::future::pending::<()>());
      })
      .map_err(|e| format!("cannot start the Redis thread: {e}"))?;
    let handle = rx
      .recv()
      .map_err(|_| "the Redis thread did not start".to_string())?;
    Ok(Self {
      client,
      handle,
      conn: Arc::new(tokio::sync::Mutex::new(None)),
      url: redact(url).into(),
    })
  }

  /// Runs `f` with a connection on the Redis thread, within `TIMEOUT`.
  fn run<T, F, Fut>(&self, what: &'static str, f: F) -> CacheFuture<T>
  where
    T: Send + 'static,
    F: FnOnce(ConnectionManager) -> Fut + Send + 'static,
    Fut: Future<Output = redis::RedisResult<T>> + Send,
  {
    let client = self.client.clone();
    let slot = self.conn.clone();
    let url = self.url.clone();
    let task = self.handle.spawn(async move {
      let work = async {
        let conn = connection(&client, &slot).await?;
        let result = f(conn).await;
        if let Err(e) = &result {
          if e.is_unrecoverable_error() || e.is_connection_dropped() || e.is_io_error() {
            // Reconnect from scratch next time.
            slot.lock().await.take();
          }
        }
        result
      };
      match tokio::time::timeout(Self::TIMEOUT, work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(CacheError(format!(
          "the cache's Redis store at {url} failed to {what}: {e}"
        ))),
        Err(_) => Err(CacheError(format!(
          "the cache's Redis store at {url} did not answer within {} s ({what})",
          Self::TIMEOUT.as_secs()
        ))),
      }
    });
    Box::pin(async move {
      task
        .await
        .unwrap_or_else(|e| Err(CacheError(format!("the cache's Redis task failed: {e}"))))
    })
  }
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
  match (url.find("://"), url.rfind('@')) {
    (Some(scheme), Some(at)) if at > scheme => {
      format!("{}://***@{}", &url[..scheme], &url[at + 1..])
    }
    _ => url.to_string(),
  }
}

async fn connection(
  client: &redis::Client,
  slot: &tokio::sync::Mutex<Option<ConnectionManager>>,
) -> redis::RedisResult<ConnectionManager> {
  let mut slot = slot.lock().await;
  if let Some(conn) = &*slot {
    return Ok(conn.clone());
  }
  let config = ConnectionManagerConfig::new()
    .set_connection_timeout(Some(RedisStore::TIMEOUT))
    .set_response_timeout(Some(RedisStore::TIMEOUT))
    .set_number_of_retries(1)
    .set_max_delay(Duration::from_millis(500));
  let conn = client.get_connection_manager_with_config(config).await?;
  *slot = Some(conn.clone());
  Ok(conn)
}

impl CacheBackend for RedisStore {
  fn put(&self, cache: CacheId, url: String, entry: Entry) -> CacheFuture<()> {
    let meta = Meta {
      s: entry.status,
      t: entry.status_text,
      h: entry.headers,
      v: entry.vary,
      a: entry.stored_at_ms,
      x: entry.expires_at_ms,
    };
    let meta = serde_json::to_vec(&meta).expect("JSON of strings and numbers");
    let body = entry.body;
    let expires = entry.expires_at_ms;
    self.run("store a response", move |mut conn| async move {
      let key = entry_key(&cache, &url);
      redis::pipe()
        .atomic()
        .del(&key)
        .ignore()
        .hset_multiple(&key, &[("meta", meta.as_slice()), ("body", body.as_ref())])
        .ignore()
        .cmd("PEXPIREAT")
        .arg(&key)
        .arg(expires)
        .ignore()
        .zadd(index_key(&cache), &url, now_ms())
        .ignore()
        .query_async::<()>(&mut conn)
        .await
    })
  }

  fn get(&self, cache: CacheId, url: String) -> CacheFuture<Option<Entry>> {
    self.run("read a response", move |mut conn| async move {
      let (meta, body): (Option<Vec<u8>>, Option<Vec<u8>>) = redis::cmd("HMGET")
        .arg(entry_key(&cache, &url))
        .arg("meta")
        .arg("body")
        .query_async(&mut conn)
        .await?;
      let (Some(meta), Some(body)) = (meta, body) else {
        return Ok(None);
      };
      let Ok(meta) = serde_json::from_slice::<Meta>(&meta) else {
        return Ok(None);
      };
      if meta.x <= now_ms() {
        return Ok(None);
      }
      Ok(Some(Entry {
        status: meta.s,
        status_text: meta.t,
        headers: meta.h,
        vary: meta.v,
        body: Bytes::from(body),
        stored_at_ms: meta.a,
        expires_at_ms: meta.x,
      }))
    })
  }

  fn delete(&self, cache: CacheId, url: String) -> CacheFuture<bool> {
    self.run("delete a response", move |mut conn| async move {
      let (deleted, _): (u32, u32) = redis::pipe()
        .atomic()
        .del(entry_key(&cache, &url))
        .zrem(index_key(&cache), &url)
        .query_async(&mut conn)
        .await?;
      Ok(deleted > 0)
    })
  }

  fn urls(&self, cache: CacheId) -> CacheFuture<Vec<String>> {
    self.run("list a cache", move |mut conn| async move {
      let urls: Vec<String> = conn.zrange(index_key(&cache), 0, -1).await?;
      if urls.is_empty() {
        return Ok(urls);
      }
      let mut pipe = redis::pipe();
      for url in &urls {
        pipe.exists(entry_key(&cache, url));
      }
      let live: Vec<bool> = pipe.query_async(&mut conn).await?;
      let (mut keep, mut stale) = (Vec::new(), Vec::new());
      for (url, live) in urls.into_iter().zip(live) {
        if live {
          keep.push(url);
        } else {
          stale.push(url);
        }
      }
      if !stale.is_empty() {
        let _: () = conn.zrem(index_key(&cache), stale).await?;
      }
      Ok(keep)
    })
  }

  fn open(&self, cache: CacheId) -> CacheFuture<()> {
    let Some(name) = cache.name else {
      return Box::pin(std::future::ready(Ok(())));
    };
    self.run("open a cache", move |mut conn| async move {
      redis::cmd("ZADD")
        .arg(names_key(&cache.namespace))
        .arg("NX")
        .arg(now_ms())
        .arg(name)
        .query_async::<()>(&mut conn)
        .await
    })
  }

  fn has(&self, cache: CacheId) -> CacheFuture<bool> {
    let Some(name) = cache.name else {
      return Box::pin(std::future::ready(Ok(true)));
    };
    self.run("look up a cache", move |mut conn| async move {
      let score: Option<f64> = conn.zscore(names_key(&cache.namespace), name).await?;
      Ok(score.is_some())
    })
  }

  fn delete_cache(&self, cache: CacheId) -> CacheFuture<bool> {
    self.run("delete a cache", move |mut conn| async move {
      let existed: u32 = match &cache.name {
        Some(name) => conn.zrem(names_key(&cache.namespace), name).await?,
        None => 0,
      };
      let urls: Vec<String> = conn.zrange(index_key(&cache), 0, -1).await?;
      let mut pipe = redis::pipe();
      for url in &urls {
        pipe.del(entry_key(&cache, url)).ignore();
      }
      pipe.del(index_key(&cache)).ignore();
      pipe.query_async::<()>(&mut conn).await?;
      Ok(existed > 0)
    })
  }

  fn names(&self, namespace: Arc<str>) -> CacheFuture<Vec<String>> {
    self.run("list caches", move |mut conn| async move {
      conn.zrange(names_key(&namespace), 0, -1).await
    })
  }

  fn max_entry_bytes(&self) -> usize {
    Self::MAX_ENTRY
  }
}
