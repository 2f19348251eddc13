//! The in-process Cache API store: every worker's caches in one map behind
//! a mutex, shared by the server threads (a put on one thread is a hit on
//! another), least recently used entries evicted once their bytes
//! (`Entry::weight`) pass the capacity (`[cache] memory_mb`). Expired
//! entries are dropped when met and as eviction reaches them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::cache::{now_ms, CacheBackend, CacheFuture, CacheId, Entry};

type Key = (CacheId, String);

struct Slot {
  entry: Entry,
  weight: usize,
  /// Position in `lru` (larger: used more recently).
  used: u64,
  /// Position in its cache's put order.
  put: u64,
}

#[derive(Default)]
struct Inner {
  entries: HashMap<Key, Slot>,
  lru: BTreeMap<u64, Key>,
  /// Each cache's URLs by put order.
  by_cache: HashMap<CacheId, BTreeMap<u64, String>>,
  /// Each namespace's named caches, in the order opened.
  names: HashMap<Arc<str>, Vec<String>>,
  bytes: usize,
  tick: u64,
}

impl Inner {
  fn next(&mut self) -> u64 {
    self.tick += 1;
    self.tick
  }

  fn remove(&mut self, key: &Key) -> bool {
    let Some(slot) = self.entries.remove(key) else {
      return false;
    };
    self.lru.remove(&slot.used);
    if let Some(urls) = self.by_cache.get_mut(&key.0) {
      urls.remove(&slot.put);
      if urls.is_empty() {
        self.by_cache.remove(&key.0);
      }
    }
    self.bytes -= slot.weight;
    true
  }
}

pub struct MemoryStore {
  capacity: usize,
  inner: Mutex<Inner>,
}

impl MemoryStore {
  pub fn new(capacity_bytes: u64) -> Self {
    Self {
      capacity: capacity_bytes as usize,
      inner: Mutex::new(Inner::default()),
    }
  }

  fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
    self.inner.lock().unwrap_or_else(|e| e.into_inner())
  }

  /// Bytes held (for tests and logs).
  pub fn bytes(&self) -> usize {
    self.lock().bytes
  }

  pub fn put_now(&self, cache: CacheId, url: String, entry: Entry) {
    let weight = entry.weight(&url);
    if weight > self.capacity {
      return;
    }
    let mut inner = self.lock();
    let key = (cache, url);
    inner.remove(&key);
    while inner.bytes + weight > self.capacity {
      let Some((_, oldest)) = inner.lru.first_key_value() else {
        break;
      };
      let oldest = oldest.clone();
      inner.remove(&oldest);
    }
    let used = inner.next();
    let put = inner.next();
    inner.lru.insert(used, key.clone());
    inner
      .by_cache
      .entry(key.0.clone())
      .or_default()
      .insert(put, key.1.clone());
    inner.bytes += weight;
    inner.entries.insert(
      key,
      Slot {
        entry,
        weight,
        used,
        put,
      },
    );
  }

  pub fn get_now(&self, cache: CacheId, url: String) -> Option<Entry> {
    let mut inner = self.lock();
    let key = (cache, url);
    let now = now_ms();
    let expired = match inner.entries.get(&key) {
      None => return None,
      Some(slot) => slot.entry.expires_at_ms <= now,
    };
    if expired {
      inner.remove(&key);
      return None;
    }
    let used = inner.next();
    let slot = inner.entries.get_mut(&key).expect("present");
    let old = std::mem::replace(&mut slot.used, used);
    let entry = slot.entry.clone();
    inner.lru.remove(&old);
    inner.lru.insert(used, key);
    Some(entry)
  }
}

fn ready<T: Send + 'static>(value: T) -> CacheFuture<T> {
  Box::pin(std::future::ready(Ok(value)))
}

impl CacheBackend for MemoryStore {
  fn put(&self, cache: CacheId, url: String, entry: Entry) -> CacheFuture<()> {
    self.put_now(cache, url, entry);
    ready(())
  }

  fn get(&self, cache: CacheId, url: String) -> CacheFuture<Option<Entry>> {
    ready(self.get_now(cache, url))
  }

  fn delete(&self, cache: CacheId, url: String) -> CacheFuture<bool> {
    let mut inner = self.lock();
    let key = (cache, url);
    let live = inner
      .entries
      .get(&key)
      .is_some_and(|s| s.entry.expires_at_ms > now_ms());
    inner.remove(&key);
    ready(live)
  }

  fn urls(&self, cache: CacheId) -> CacheFuture<Vec<String>> {
    let mut inner = self.lock();
    let now = now_ms();
    let urls: Vec<String> = inner
      .by_cache
      .get(&cache)
      .map(|urls| urls.values().cloned().collect())
      .unwrap_or_default();
    let mut live = Vec::with_capacity(urls.len());
    for url in urls {
      let key = (cache.clone(), url);
      if inner
        .entries
        .get(&key)
        .is_some_and(|s| s.entry.expires_at_ms > now)
      {
        live.push(key.1);
      } else {
        inner.remove(&key);
      }
    }
    ready(live)
  }

  fn open(&self, cache: CacheId) -> CacheFuture<()> {
    if let Some(name) = cache.name {
      let mut inner = self.lock();
      let names = inner.names.entry(cache.namespace).or_default();
      if !names.contains(&name) {
        names.push(name);
      }
    }
    ready(())
  }

  fn has(&self, cache: CacheId) -> CacheFuture<bool> {
    let inner = self.lock();
    let has = match &cache.name {
      Some(name) => inner
        .names
        .get(&cache.namespace)
        .is_some_and(|n| n.contains(name)),
      None => true,
    };
    ready(has)
  }

  fn delete_cache(&self, cache: CacheId) -> CacheFuture<bool> {
    let mut inner = self.lock();
    let existed = match (&cache.name, inner.names.get_mut(&cache.namespace)) {
      (Some(name), Some(names)) => {
        let before = names.len();
        names.retain(|n| n != name);
        before != names.len()
      }
      _ => false,
    };
    let urls: Vec<String> = inner
      .by_cache
      .get(&cache)
      .map(|u| u.values().cloned().collect())
      .unwrap_or_default();
    for url in urls {
      inner.remove(&(cache.clone(), url));
    }
    ready(existed)
  }

  fn names(&self, namespace: Arc<str>) -> CacheFuture<Vec<String>> {
    let inner = self.lock();
    ready(inner.names.get(&namespace).cloned().unwrap_or_default())
  }

  fn max_entry_bytes(&self) -> usize {
    self.capacity
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use bytes::Bytes;

  fn entry(len: usize) -> Entry {
    Entry {
      status: 200,
      status_text: String::new(),
      headers: Vec::new(),
      vary: Vec::new(),
      body: Bytes::from(vec![0u8; len]),
      stored_at_ms: 0,
      expires_at_ms: u64::MAX,
    }
  }

  #[test]
  fn evicts_least_recently_used_by_bytes() {
    let store = MemoryStore::new(10_000);
    let id = CacheId {
      namespace: "w".into(),
      name: None,
    };
    store.put_now(id.clone(), "a".into(), entry(3000));
    store.put_now(id.clone(), "b".into(), entry(3000));
    store.put_now(id.clone(), "c".into(), entry(3000));
    assert!(store.get_now(id.clone(), "a".into()).is_some());
    store.put_now(id.clone(), "d".into(), entry(3000));
    // b was the least recently used.
    assert!(store.get_now(id.clone(), "b".into()).is_none());
    assert!(store.get_now(id.clone(), "a".into()).is_some());
    assert!(store.get_now(id.clone(), "d".into()).is_some());
    assert!(store.bytes() <= 10_000);
  }
}
