//! The embedded store: one SQLite file per namespace, in WAL mode, with one
//! writer connection and a few readers (WAL lets them read while it
//! writes), each used on the KV runtime's blocking pool. Keys are BLOBs, so
//! SQLite orders them by their bytes, as Workers lists them. Expired rows
//! are never read (every query filters on the time) and are deleted by a
//! sweeper in the background.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::{now_ms, Durability, Entry, ListPage, ListedKey};

const READERS: usize = 4;

pub struct SqliteStore {
  path: PathBuf,
  writer: Mutex<Connection>,
  readers: Vec<Mutex<Connection>>,
  next_reader: AtomicUsize,
}

impl SqliteStore {
  pub fn open(
    path: &Path,
    durability: Durability,
    min_ttl_seconds: u64,
  ) -> Result<Arc<Self>, String> {
    let at = |e: &dyn std::fmt::Display| format!("KV store {}: {e}", path.display());
    if let Some(dir) = path.parent() {
      std::fs::create_dir_all(dir).map_err(|e| at(&e))?;
    }
    let synchronous = match durability {
      Durability::Normal => "NORMAL",
      Durability::Full => "FULL",
    };
    let writer = Connection::open(path).map_err(|e| at(&e))?;
    writer
      .execute_batch(&format!(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = {synchronous};
         PRAGMA busy_timeout = 5000;
         CREATE TABLE IF NOT EXISTS kv (
           key BLOB PRIMARY KEY,
           value BLOB NOT NULL,
           expires INTEGER,
           metadata TEXT
         ) WITHOUT ROWID;
         CREATE INDEX IF NOT EXISTS kv_expires ON kv (expires) WHERE expires IS NOT NULL;"
      ))
      .map_err(|e| at(&e))?;
    let mut readers = Vec::with_capacity(READERS);
    for _ in 0..READERS {
      let reader = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
      )
      .map_err(|e| at(&e))?;
      reader
        .execute_batch("PRAGMA busy_timeout = 5000;")
        .map_err(|e| at(&e))?;
      readers.push(Mutex::new(reader));
    }
    let store = Arc::new(Self {
      path: path.to_path_buf(),
      writer: Mutex::new(writer),
      readers,
      next_reader: AtomicUsize::new(0),
    });
    spawn_sweeper(Arc::downgrade(&store), min_ttl_seconds);
    Ok(store)
  }

  pub fn path(&self) -> &Path {
    &self.path
  }

  fn error(&self, op: &str, e: impl std::fmt::Display) -> String {
    format!(
      "KV {op} failed: the SQLite store {}: {e}",
      self.path.display()
    )
  }

  /// A free reader if there is one, else the next in turn.
  fn reader(&self) -> std::sync::MutexGuard<'_, Connection> {
    for reader in &self.readers {
      if let Ok(guard) = reader.try_lock() {
        return guard;
      }
    }
    let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
    self.readers[i].lock().unwrap_or_else(|e| e.into_inner())
  }

  fn writer(&self) -> std::sync::MutexGuard<'_, Connection> {
    self.writer.lock().unwrap_or_else(|e| e.into_inner())
  }

  fn sweep(&self) -> rusqlite::Result<usize> {
    self.writer().execute(
      "DELETE FROM kv WHERE expires IS NOT NULL AND expires <= ?1",
      params![now_ms()],
    )
  }
}

/// Deletes expired rows every few seconds (as often as the namespace's least
/// TTL, between 1 and 60 s) while the store is open.
fn spawn_sweeper(store: Weak<SqliteStore>, min_ttl_seconds: u64) {
  let every = Duration::from_secs(min_ttl_seconds.clamp(1, 60));
  crate::kv_runtime().spawn(async move {
    let mut interval = tokio::time::interval(every);
    interval.tick().await;
    loop {
      interval.tick().await;
      let Some(store) = store.upgrade() else { return };
      let swept = tokio::task::spawn_blocking(move || store.sweep()).await;
      if let Ok(Err(error)) = swept {
        tracing::warn!("KV: sweeping expired keys failed: {error}");
      }
    }
  });
}

/// Runs `work` on the KV runtime's blocking pool: one hop from the isolate's
/// thread.
async fn blocking<T: Send + 'static>(
  work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
  crate::kv_runtime()
    .spawn_blocking(work)
    .await
    .map_err(|e| format!("the KV operation failed: {e}"))?
}

pub async fn get(store: Arc<SqliteStore>, keys: Vec<String>) -> Result<Vec<Option<Entry>>, String> {
  blocking(move || {
    let db = store.reader();
    let mut query = db
      .prepare_cached(
        "SELECT value, metadata FROM kv WHERE key = ?1 AND (expires IS NULL OR expires > ?2)",
      )
      .map_err(|e| store.error("GET", e))?;
    let now = now_ms();
    keys
      .iter()
      .map(|key| {
        query
          .query_row(params![key.as_bytes(), now], |row| {
            Ok(Entry {
              value: row.get(0)?,
              metadata: row.get(1)?,
            })
          })
          .optional()
          .map_err(|e| store.error("GET", e))
      })
      .collect()
  })
  .await
}

pub async fn put(
  store: Arc<SqliteStore>,
  key: String,
  value: Vec<u8>,
  expires_ms: Option<i64>,
  metadata: Option<String>,
) -> Result<(), String> {
  blocking(move || {
    let db = store.writer();
    db.prepare_cached(
      "INSERT OR REPLACE INTO kv (key, value, expires, metadata) VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut q| q.execute(params![key.as_bytes(), value, expires_ms, metadata]))
    .map_err(|e| store.error("PUT", e))?;
    Ok(())
  })
  .await
}

pub async fn delete(store: Arc<SqliteStore>, key: String) -> Result<(), String> {
  blocking(move || {
    let db = store.writer();
    db.prepare_cached("DELETE FROM kv WHERE key = ?1")
      .and_then(|mut q| q.execute(params![key.as_bytes()]))
      .map_err(|e| store.error("DELETE", e))?;
    Ok(())
  })
  .await
}

pub async fn list(
  store: Arc<SqliteStore>,
  prefix: String,
  limit: usize,
  after: Option<String>,
) -> Result<ListPage, String> {
  blocking(move || {
    let db = store.reader();
    // UTF-8 never holds the byte 0xFF: every key starting with the prefix
    // sorts below prefix + 0xFF, and every other key above the prefix
    // sorts above it.
    let mut end = prefix.as_bytes().to_vec();
    end.push(0xFF);
    let after = after.unwrap_or_default();
    let mut query = db
      .prepare_cached(
        "SELECT key, expires, metadata FROM kv
         WHERE key >= ?1 AND key < ?2 AND key > ?3 AND (expires IS NULL OR expires > ?4)
         ORDER BY key LIMIT ?5",
      )
      .map_err(|e| store.error("LIST", e))?;
    let rows = query
      .query_map(
        params![
          prefix.as_bytes(),
          end,
          after.as_bytes(),
          now_ms(),
          (limit + 1) as i64
        ],
        |row| {
          let name: Vec<u8> = row.get(0)?;
          Ok(ListedKey {
            name: String::from_utf8_lossy(&name).into_owned(),
            expires_ms: row.get(1)?,
            metadata: row.get(2)?,
          })
        },
      )
      .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
      .map_err(|e| store.error("LIST", e))?;
    let mut keys = rows;
    let more = keys.len() > limit;
    keys.truncate(limit);
    Ok(ListPage { keys, more })
  })
  .await
}
