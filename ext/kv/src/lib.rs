//! Workers KV namespaces: a namespace is a store (an embedded SQLite file,
//! or a Redis database shared by many runtime processes) plus the limits
//! Workers applies to it. The ops behind `env.NAMESPACE` (`ops.rs`) find a
//! worker's namespaces in its isolate's `OpState` ([`KvBindings`]): an
//! isolate holds only the namespaces bound to its worker, so no script can
//! name another's.
//!
//! Every operation runs off the isolate thread, on one small tokio runtime
//! of its own ([`kv_runtime`]): SQLite on its blocking pool (handed there
//! straight from the isolate's thread), Redis on its I/O thread.

mod limits;
pub mod ops;
mod redis_store;
mod sqlite;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

pub use limits::*;

/// What a key holds, as a get reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
  pub value: Vec<u8>,
  /// The metadata as JSON text.
  pub metadata: Option<String>,
}

/// One key of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedKey {
  pub name: String,
  /// Milliseconds since the epoch.
  pub expires_ms: Option<i64>,
  pub metadata: Option<String>,
}

/// A page of a list, in byte order of the keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
  pub keys: Vec<ListedKey>,
  /// More keys follow the last one.
  pub more: bool,
}

/// Where a namespace keeps its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
  /// A SQLite file (absolute path).
  Sqlite(PathBuf),
  /// A Redis URL, `redis://host:port/db`.
  Redis(String),
}

impl StoreSpec {
  /// `sqlite:path` (relative to `base`) or `redis://...`.
  pub fn parse(text: &str, base: &Path) -> Result<Self, String> {
    if let Some(path) = text.strip_prefix("sqlite:") {
      if path.is_empty() {
        return Err("sqlite: needs a file path, as in \"sqlite:data/kv.db\"".into());
      }
      let path = Path::new(path);
      let path = if path.is_absolute() {
        path.to_path_buf()
      } else {
        base.join(path)
      };
      let path = std::path::absolute(&path).map_err(|e| format!("{}: {e}", path.display()))?;
      Ok(Self::Sqlite(path))
    } else if text.starts_with("redis://") || text.starts_with("rediss://") {
      redis::Client::open(text).map_err(|e| format!("invalid Redis URL {text:?}: {e}"))?;
      Ok(Self::Redis(text.to_string()))
    } else {
      Err(format!(
        "unknown store {text:?}: expected \"sqlite:path/to.db\" or \"redis://host:port/db\""
      ))
    }
  }
}

/// How hard SQLite works to keep an acknowledged write (`PRAGMA synchronous`
/// in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
  /// Acknowledged writes survive a killed process; the last ones may be
  /// lost if the machine loses power (no fsync per commit).
  #[default]
  Normal,
  /// Every commit is fsynced before it is acknowledged: writes survive
  /// power loss too.
  Full,
}

/// A namespace as configured.
#[derive(Debug, Clone)]
pub struct NamespaceConfig {
  pub name: String,
  pub store: StoreSpec,
  /// The least `expirationTtl` (and how far ahead an `expiration` must be).
  pub min_ttl_seconds: u64,
  pub durability: Durability,
}

/// An open namespace.
pub struct Namespace {
  name: String,
  min_ttl_seconds: u64,
  store: Store,
}

impl std::fmt::Debug for Namespace {
  fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    f.debug_struct("Namespace")
      .field("name", &self.name)
      .field("store", &self.store.describe())
      .finish()
  }
}

enum Store {
  Sqlite(Arc<sqlite::SqliteStore>),
  Redis(Arc<redis_store::RedisStore>),
}

impl Store {
  fn describe(&self) -> String {
    match self {
      Store::Sqlite(s) => format!("sqlite:{}", s.path().display()),
      Store::Redis(r) => r.url().to_string(),
    }
  }
}

impl Namespace {
  /// Opens the store: a SQLite file is created (with its folder) and checked
  /// now; a Redis server is connected to in the background (one that is
  /// down at start-up fails the operations, with a clear error, until it
  /// is up).
  pub fn open(config: &NamespaceConfig) -> Result<Arc<Self>, String> {
    let store = match &config.store {
      StoreSpec::Sqlite(path) => Store::Sqlite(sqlite::SqliteStore::open(
        path,
        config.durability,
        config.min_ttl_seconds,
      )?),
      StoreSpec::Redis(url) => Store::Redis(redis_store::RedisStore::open(url, &config.name)?),
    };
    Ok(Arc::new(Self {
      name: config.name.clone(),
      min_ttl_seconds: config.min_ttl_seconds,
      store,
    }))
  }

  pub fn name(&self) -> &str {
    &self.name
  }

  pub fn min_ttl_seconds(&self) -> u64 {
    self.min_ttl_seconds
  }

  pub async fn get(&self, keys: Vec<String>) -> Result<Vec<Option<Entry>>, String> {
    match &self.store {
      Store::Sqlite(s) => sqlite::get(s.clone(), keys).await,
      Store::Redis(r) => on_kv_runtime(r.clone().get(keys)).await,
    }
  }

  pub async fn put(
    &self,
    key: String,
    value: Vec<u8>,
    expires_ms: Option<i64>,
    metadata: Option<String>,
  ) -> Result<(), String> {
    match &self.store {
      Store::Sqlite(s) => sqlite::put(s.clone(), key, value, expires_ms, metadata).await,
      Store::Redis(r) => on_kv_runtime(r.clone().put(key, value, expires_ms, metadata)).await,
    }
  }

  pub async fn delete(&self, key: String) -> Result<(), String> {
    match &self.store {
      Store::Sqlite(s) => sqlite::delete(s.clone(), key).await,
      Store::Redis(r) => on_kv_runtime(r.clone().delete(key)).await,
    }
  }

  /// Up to `limit` keys starting with `prefix`, after `after` (a cursor's
  /// key) if given.
  pub async fn list(
    &self,
    prefix: String,
    limit: usize,
    after: Option<String>,
  ) -> Result<ListPage, String> {
    match &self.store {
      Store::Sqlite(s) => sqlite::list(s.clone(), prefix, limit, after).await,
      Store::Redis(r) => on_kv_runtime(r.clone().list(prefix, limit, after)).await,
    }
  }
}

/// The namespaces bound to the worker whose isolate this is, by the index
/// its JavaScript bindings carry.
#[derive(Default, Clone)]
pub struct KvBindings(pub Vec<Arc<Namespace>>);

/// The runtime every KV operation runs on: one I/O thread and a blocking
/// pool (SQLite), shared by all server threads, so that no store work ever
/// runs on an isolate's thread.
pub fn kv_runtime() -> &'static tokio::runtime::Runtime {
  static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
  RUNTIME.get_or_init(|| {
    tokio::runtime::Builder::new_multi_thread()
      .worker_threads(1)
      .max_blocking_threads(16)
      .thread_name("kv")
      .enable_all()
      .build()
      .expect("the KV runtime")
  })
}

async fn on_kv_runtime<T: Send + 'static>(
  work: impl Future<Output = Result<T, String>> + Send + 'static,
) -> Result<T, String> {
  match kv_runtime().spawn(work).await {
    Ok(result) => result,
    Err(error) => Err(format!("the KV operation failed: {error}")),
  }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
  std::time::SystemTime::now()
    .duration_since(std::time::UNIX_EPOCH)
    .map_or(0, |d| d.as_millis() as i64)
}
