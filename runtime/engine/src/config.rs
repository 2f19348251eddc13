//! What to serve: `runtime.toml` (wrangler's names where they exist), or the
//! one-worker shorthand `runtime serve script.js`. Everything is checked at
//! start-up: unknown keys, wrong types and missing scripts are errors naming
//! the key or the file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use serde::Deserialize;

use std::sync::Arc;

use runtime_cache::CacheSettings;
use runtime_ext::cache::CacheScope;
use runtime_ext::outbound::OutboundPolicy;
use runtime_ext::quota::{QuotaLimits, WorkerQuotas};
use runtime_ext::websocket::WebSocketLimits;
use runtime_kv::{Durability, Namespace, NamespaceConfig, StoreSpec};

use crate::routes::RoutePattern;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
  #[serde(default)]
  server: ServerSection,
  #[serde(default)]
  engine: EngineSection,
  #[serde(default)]
  cache: CacheSection,
  #[serde(default)]
  workers: Vec<WorkerSection>,
  /// KV namespaces by name.
  #[serde(default)]
  kv: BTreeMap<String, KvSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KvSection {
  /// `sqlite:path/to.db` (relative to the config file) or `redis://...`.
  store: String,
  min_ttl_seconds: Option<u64>,
  #[serde(default)]
  durability: DurabilitySetting,
}

/// SQLite's `synchronous` setting for a namespace's file.
#[derive(Debug, Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum DurabilitySetting {
  #[default]
  Normal,
  Full,
}

/// `[cache]`: the Cache API's store.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CacheSection {
  memory_mb: Option<u64>,
  store: Option<String>,
  shared: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ServerSection {
  listen: Option<SocketAddr>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct EngineSection {
  max_isolates: Option<usize>,
  max_memory_mb: Option<u64>,
  /// The outbound policy of workers that set none (default `["public"]`).
  outbound: Option<Vec<String>>,
  /// Whether workers that set none see frozen clocks (default true).
  coarse_time: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkerSection {
  name: String,
  main: PathBuf,
  #[serde(default)]
  routes: Vec<String>,
  #[serde(default)]
  vars: BTreeMap<String, String>,
  #[serde(default)]
  secrets: Vec<String>,
  #[serde(default)]
  isolation: Isolation,
  #[serde(default)]
  limits: LimitsSection,
  /// Cron triggers: the worker's `scheduled` handler runs at each.
  #[serde(default)]
  crons: Vec<String>,
  /// KV bindings: binding name -> namespace name.
  #[serde(default)]
  kv: BTreeMap<String, String>,
  /// Where its fetch() may connect (default: the engine's).
  outbound: Option<Vec<String>>,
  /// Clocks frozen while JavaScript runs (default: the engine's).
  coarse_time: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LimitsSection {
  cpu_ms: Option<u64>,
  startup_ms: Option<u64>,
  scheduled_cpu_ms: Option<u64>,
  memory_mb: Option<u64>,
  subrequests: Option<u32>,
  websocket_message_kb: Option<u64>,
  websocket_buffer_kb: Option<u64>,
  websocket_idle_s: Option<u64>,
  concurrent_requests: Option<usize>,
  websockets: Option<usize>,
  subrequests_in_flight: Option<usize>,
  pending_response_bytes: Option<usize>,
}

/// How much a worker's requests share.
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
  /// Requests share a warm isolate (module state persists between them).
  #[default]
  Isolate,
  /// Every request gets a fresh isolate from the snapshot: nothing carries
  /// over.
  Request,
}

/// Per-worker hard limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerLimits {
  /// CPU time one request may use without yielding, in ms.
  pub cpu_ms: u64,
  /// CPU time a new isolate's start-up (module evaluation and top-level
  /// code, top-level `await` included) may use in all, in ms: apart from
  /// `cpu_ms`, as Workers gives start-up a budget of its own.
  pub startup_ms: u64,
  /// CPU time a scheduled event may use without yielding, in ms (cron work
  /// gets more than a request, as on Workers).
  pub scheduled_cpu_ms: u64,
  /// Heap (and ArrayBuffer) memory of the worker's isolate, in MiB.
  pub memory_mb: u64,
  /// `fetch()` calls per request.
  pub subrequests: u32,
  /// Message size, send buffer and idle timeout of its WebSockets.
  pub websocket: WebSocketLimits,
  /// What it may hold at once, across the process: requests in flight,
  /// open WebSockets, fetches in flight.
  pub quotas: QuotaLimits,
}

impl WorkerLimits {
  pub const DEFAULT_MEMORY_MB: u64 = 128;
  pub const DEFAULT_STARTUP_MS: u64 = 1000;
}

impl Default for WorkerLimits {
  fn default() -> Self {
    Self {
      cpu_ms: 50,
      startup_ms: Self::DEFAULT_STARTUP_MS,
      scheduled_cpu_ms: 30_000,
      memory_mb: Self::DEFAULT_MEMORY_MB,
      subrequests: 50,
      websocket: WebSocketLimits::default(),
      quotas: QuotaLimits::default(),
    }
  }
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
  pub name: String,
  /// Absolute path of the main module.
  pub main: PathBuf,
  pub routes: Vec<RoutePattern>,
  /// Bindings: `vars` and `secrets`, as `env` (module syntax) or globals
  /// (service-worker syntax).
  pub bindings: Vec<(String, String)>,
  /// Bindings whose values are JSON (wrangler's non-string `vars`): the
  /// script sees the parsed value.
  pub json_bindings: Vec<(String, String)>,
  /// KV bindings: binding name and the namespace it reaches, as `env`
  /// (module syntax) or globals (service-worker syntax).
  pub kv: Vec<(String, Arc<Namespace>)>,
  pub isolation: Isolation,
  pub limits: WorkerLimits,
  /// When its `scheduled` handler runs.
  pub crons: Vec<CronTrigger>,
  /// The caches the worker reaches (set by `EngineConfig::open_cache`; a
  /// process-wide in-process store when unset).
  pub cache: Option<CacheScope>,
  /// Where its `fetch()` may connect.
  pub outbound: Arc<OutboundPolicy>,
  /// The counts of `limits.quotas`, shared by its isolates on every thread.
  pub quotas: Arc<WorkerQuotas>,
  /// `Date.now()` and `performance.now()` give the time of the last I/O
  /// event and stand still while JavaScript runs, as in Workers (no timer
  /// fine enough for Spectre-class attacks).
  pub coarse_time: bool,
  /// Under `runtime dev`: the version that serves (its files, kept), which
  /// the watcher replaces when the files change.
  pub dev: Option<Arc<crate::dev::DevVersion>>,
  /// Under `--inspect`: where its isolates register for debuggers.
  pub inspector: Option<Arc<crate::inspector::Inspector>>,
}

/// One cron trigger: Workers' five fields (minute hour day-of-month month
/// day-of-week, in UTC), parsed by `croner`.
#[derive(Debug, Clone)]
pub struct CronTrigger {
  /// As written: what `controller.cron` shows.
  pub expression: String,
  pub schedule: croner::Cron,
}

impl CronTrigger {
  pub fn parse(expression: &str) -> anyhow::Result<Self> {
    let schedule = croner::parser::CronParser::builder()
      .seconds(croner::parser::Seconds::Disallowed)
      .build()
      .parse(expression)
      .map_err(|e| anyhow!("invalid cron expression {expression:?}: {e}"))?;
    Ok(Self {
      expression: expression.to_string(),
      schedule,
    })
  }

  /// The first time after `after` that it fires.
  pub fn next_after(
    &self,
    after: chrono::DateTime<chrono::Utc>,
  ) -> Option<chrono::DateTime<chrono::Utc>> {
    self.schedule.find_next_occurrence(&after, false).ok()
  }
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
  pub listen: Option<SocketAddr>,
  pub max_isolates: usize,
  pub max_memory_mb: Option<u64>,
  pub cache: CacheSettings,
  pub workers: Vec<WorkerConfig>,
}

pub const DEFAULT_MAX_ISOLATES: usize = 1000;

/// With pointer compression (the `heap-cage` feature, on by default) every
/// isolate of the process allocates its heap from one 4 GiB cage, and V8
/// aborts the whole process when the cage is full.
pub const HEAP_CAGE_MB: Option<u64> = if cfg!(feature = "heap-cage") {
  Some(4096)
} else {
  None
};

/// The part of the cage warm isolates may hold (their committed heap pages,
/// summed over the process): past it the least recently used are evicted.
/// The rest is headroom for heaps that grow between two measurements (every
/// 100 ms), isolates being made, the spares and the read-only heap.
pub const HEAP_CAGE_BUDGET_MB: Option<u64> = match HEAP_CAGE_MB {
  Some(cage) => Some(cage / 4 * 3),
  None => None,
};

impl EngineConfig {
  /// The one-worker shorthand: every request goes to `script`. Each of
  /// `kv` is a binding to a SQLite namespace of its name in
  /// `state_dir/kv/NAME.sqlite`.
  pub fn single(
    script: &Path,
    isolation: Isolation,
    limits: WorkerLimits,
    crons: Vec<CronTrigger>,
    kv: &[String],
    state_dir: &Path,
    outbound: OutboundPolicy,
  ) -> anyhow::Result<Self> {
    let main = absolute_script(script, Path::new("."))?;
    // The shorthand's worker is named after its file: log lines are tagged
    // with the script.
    let name = main
      .file_name()
      .map(|n| n.to_string_lossy().into_owned())
      .unwrap_or_else(|| "worker".into());
    let mut bindings = Vec::new();
    for binding in kv {
      check_binding_name(binding).with_context(|| format!("--kv {binding}"))?;
      if bindings.iter().any(|(b, _)| b == binding) {
        bail!("--kv {binding}: given twice");
      }
      let namespace =
        local_namespace(state_dir, binding, binding).map_err(|e| anyhow!("--kv {binding}: {e}"))?;
      bindings.push((binding.clone(), namespace));
    }
    Ok(Self {
      listen: None,
      max_isolates: DEFAULT_MAX_ISOLATES,
      max_memory_mb: None,
      cache: CacheSettings::default(),
      workers: vec![WorkerConfig {
        name,
        main,
        routes: vec![RoutePattern::parse("*/*")?],
        bindings: Vec::new(),
        json_bindings: Vec::new(),
        kv: bindings,
        isolation,
        limits,
        crons,
        cache: None,
        outbound: Arc::new(outbound),
        // A script you run yourself: its clocks are fine-grained.
        coarse_time: false,
        dev: None,
        inspector: None,
        quotas: WorkerQuotas::new(limits.quotas),
      }],
    })
  }

  /// Reads `runtime.toml`; `env` looks up secrets (the process environment
  /// in production, a map in tests).
  pub fn load(path: &Path, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
    let text =
      std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Self::parse(&text, path, env)
  }

  pub fn parse(
    text: &str,
    path: &Path,
    env: impl Fn(&str) -> Option<String>,
  ) -> anyhow::Result<Self> {
    let file: ConfigFile =
      toml::from_str(text).map_err(|e| anyhow!("{}: {}", path.display(), e.to_string().trim()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    if file.workers.is_empty() {
      bail!("{}: no [[workers]] defined", path.display());
    }
    let mut namespaces = BTreeMap::new();
    let mut sqlite_files: BTreeMap<PathBuf, String> = BTreeMap::new();
    for (name, section) in &file.kv {
      let at = format!("{}: kv.{name}", path.display());
      let store = StoreSpec::parse(&section.store, base).map_err(|e| anyhow!("{at}.store: {e}"))?;
      if let StoreSpec::Sqlite(file) = &store {
        if let Some(other) = sqlite_files.insert(file.clone(), name.clone()) {
          bail!(
            "{at}.store: {} is already the store of kv.{other}",
            file.display()
          );
        }
      }
      let min_ttl_seconds = section
        .min_ttl_seconds
        .unwrap_or(runtime_kv::DEFAULT_MIN_TTL_SECONDS);
      if min_ttl_seconds == 0 {
        bail!("{at}.min_ttl_seconds must be at least 1");
      }
      let namespace = Namespace::open(&NamespaceConfig {
        name: name.clone(),
        store,
        min_ttl_seconds,
        durability: match section.durability {
          DurabilitySetting::Normal => Durability::Normal,
          DurabilitySetting::Full => Durability::Full,
        },
      })
      .map_err(|e| anyhow!("{at}: {e}"))?;
      namespaces.insert(name.clone(), namespace);
    }
    let engine_outbound = match &file.engine.outbound {
      Some(entries) => OutboundPolicy::parse(entries)
        .map_err(|e| anyhow!("{}: engine.outbound: {e}", path.display()))?,
      None => OutboundPolicy::public(),
    };
    let engine_outbound = Arc::new(engine_outbound);
    let mut names = std::collections::HashSet::new();
    let mut workers = Vec::new();
    for (i, w) in file.workers.into_iter().enumerate() {
      let at = format!("{}: workers[{i}] ({})", path.display(), w.name);
      if w.name.is_empty() {
        bail!("{}: workers[{i}].name must not be empty", path.display());
      }
      if !names.insert(w.name.clone()) {
        bail!("{at}: duplicate worker name");
      }
      let main = absolute_script(&w.main, base).with_context(|| format!("{at}.main"))?;
      let routes = if w.routes.is_empty() {
        Vec::new()
      } else {
        w.routes
          .iter()
          .map(|r| RoutePattern::parse(r).with_context(|| format!("{at}.routes")))
          .collect::<anyhow::Result<_>>()?
      };
      let mut bindings: Vec<(String, String)> = w.vars.into_iter().collect();
      for secret in &w.secrets {
        let value = env(secret).ok_or_else(|| {
          anyhow!("{at}.secrets: {secret} is not set in the runtime's environment")
        })?;
        bindings.push((secret.clone(), value));
      }
      let mut kv = Vec::new();
      for (binding, namespace) in &w.kv {
        check_binding_name(binding).with_context(|| format!("{at}.kv"))?;
        if bindings.iter().any(|(name, _)| name == binding) {
          bail!("{at}.kv: {binding} is also a var or secret");
        }
        let namespace = namespaces.get(namespace).ok_or_else(|| {
          anyhow!(
            "{at}.kv.{binding}: no KV namespace {namespace:?} ([kv.{namespace}] is not defined)"
          )
        })?;
        kv.push((binding.clone(), namespace.clone()));
      }
      let defaults = WorkerLimits::default();
      let limits = WorkerLimits {
        cpu_ms: w.limits.cpu_ms.unwrap_or(defaults.cpu_ms),
        startup_ms: w.limits.startup_ms.unwrap_or(defaults.startup_ms),
        scheduled_cpu_ms: w
          .limits
          .scheduled_cpu_ms
          .unwrap_or(defaults.scheduled_cpu_ms),
        memory_mb: w.limits.memory_mb.unwrap_or(defaults.memory_mb),
        subrequests: w.limits.subrequests.unwrap_or(defaults.subrequests),
        websocket: WebSocketLimits {
          max_message_bytes: w
            .limits
            .websocket_message_kb
            .map_or(defaults.websocket.max_message_bytes, |kb| {
              (kb as usize) << 10
            }),
          max_buffered_bytes: w
            .limits
            .websocket_buffer_kb
            .map_or(defaults.websocket.max_buffered_bytes, |kb| {
              (kb as usize) << 10
            }),
          idle_timeout: w
            .limits
            .websocket_idle_s
            .map_or(defaults.websocket.idle_timeout, Duration::from_secs),
        },
        quotas: QuotaLimits {
          concurrent_requests: w
            .limits
            .concurrent_requests
            .unwrap_or(defaults.quotas.concurrent_requests),
          websockets: w.limits.websockets.unwrap_or(defaults.quotas.websockets),
          subrequests_in_flight: w
            .limits
            .subrequests_in_flight
            .unwrap_or(defaults.quotas.subrequests_in_flight),
          pending_response_bytes: w
            .limits
            .pending_response_bytes
            .unwrap_or(defaults.quotas.pending_response_bytes),
        },
      };
      if limits.quotas.concurrent_requests == 0
        || limits.quotas.websockets == 0
        || limits.quotas.subrequests_in_flight == 0
        || limits.quotas.pending_response_bytes == 0
      {
        bail!(
          "{at}.limits: concurrent_requests, websockets, subrequests_in_flight and pending_response_bytes must be positive"
        );
      }
      if limits.websocket.max_message_bytes == 0
        || limits.websocket.max_buffered_bytes == 0
        || limits.websocket.idle_timeout.is_zero()
      {
        bail!("{at}.limits: websocket_message_kb, websocket_buffer_kb and websocket_idle_s must be positive");
      }
      if limits.cpu_ms == 0
        || limits.startup_ms == 0
        || limits.scheduled_cpu_ms == 0
        || limits.memory_mb == 0
      {
        bail!("{at}.limits: cpu_ms, startup_ms, scheduled_cpu_ms and memory_mb must be positive");
      }
      let crons = w
        .crons
        .iter()
        .map(|c| CronTrigger::parse(c).with_context(|| format!("{at}.crons")))
        .collect::<anyhow::Result<_>>()?;
      check_against_cage(&format!("{at}.limits.memory_mb"), limits.memory_mb)?;
      let outbound = match &w.outbound {
        Some(entries) => {
          Arc::new(OutboundPolicy::parse(entries).map_err(|e| anyhow!("{at}.outbound: {e}"))?)
        }
        None => engine_outbound.clone(),
      };
      workers.push(WorkerConfig {
        name: w.name,
        main,
        routes,
        bindings,
        json_bindings: Vec::new(),
        kv,
        isolation: w.isolation,
        limits,
        crons,
        cache: None,
        outbound,
        quotas: WorkerQuotas::new(limits.quotas),
        coarse_time: w.coarse_time.or(file.engine.coarse_time).unwrap_or(true),
        dev: None,
        inspector: None,
      });
    }
    if let Some(mb) = file.engine.max_memory_mb {
      check_against_cage(&format!("{}: engine.max_memory_mb", path.display()), mb)?;
    }
    Ok(Self {
      listen: file.server.listen,
      max_isolates: file
        .engine
        .max_isolates
        .unwrap_or(DEFAULT_MAX_ISOLATES)
        .max(1),
      max_memory_mb: file.engine.max_memory_mb,
      cache: {
        let defaults = CacheSettings::default();
        let memory_mb = file.cache.memory_mb.unwrap_or(defaults.memory_mb);
        if memory_mb == 0 {
          bail!("{}: cache.memory_mb must be positive", path.display());
        }
        if let Some(store) = &file.cache.store {
          if !store.starts_with("redis://") && !store.starts_with("redis+unix://") {
            bail!(
              "{}: cache.store: {store:?} is not a redis:// URL (leave it out for the in-process store)",
              path.display()
            );
          }
        }
        CacheSettings {
          memory_mb,
          store: file.cache.store,
          shared: file.cache.shared.unwrap_or(defaults.shared),
        }
      },
      workers,
    })
  }

  /// Opens the Cache API's store (once per process: every server thread
  /// shares it) and gives each worker its scope: its own namespace (its
  /// name), or the shared one with `[cache] shared = true`.
  pub fn open_cache(&mut self) -> anyhow::Result<()> {
    let backend = runtime_cache::open_store(&self.cache).map_err(|e| anyhow!(e))?;
    for worker in &mut self.workers {
      let namespace: &str = if self.cache.shared {
        runtime_ext::cache::SHARED_NAMESPACE
      } else {
        &worker.name
      };
      worker.cache = Some(CacheScope {
        backend: backend.clone(),
        namespace: namespace.into(),
      });
    }
    Ok(())
  }
}

/// A memory figure the process could never honour: more heap than the cage
/// lets all its isolates hold together.
pub fn check_against_cage(what: &str, mb: u64) -> anyhow::Result<()> {
  match (HEAP_CAGE_MB, HEAP_CAGE_BUDGET_MB) {
    (Some(cage), Some(budget)) if mb > budget => bail!(
      "{what} = {mb} MiB is more than one process can hold: its isolates share one {cage} MiB \
       pointer cage, of which warm isolates may fill {budget} MiB (run more processes for more heap)"
    ),
    _ => Ok(()),
  }
}

/// A namespace kept locally, as `wrangler dev` keeps its state: the SQLite
/// file `state_dir/kv/<file_stem>.sqlite`, with the default TTL floor and
/// durability.
pub(crate) fn local_namespace(
  state_dir: &Path,
  file_stem: &str,
  name: &str,
) -> anyhow::Result<Arc<Namespace>> {
  let path = state_dir.join("kv").join(format!("{file_stem}.sqlite"));
  Namespace::open(&NamespaceConfig {
    name: name.to_string(),
    store: StoreSpec::Sqlite(std::path::absolute(&path)?),
    min_ttl_seconds: runtime_kv::DEFAULT_MIN_TTL_SECONDS,
    durability: Durability::Normal,
  })
  .map_err(|e| anyhow!(e))
}

/// A binding is a JavaScript identifier (a global, in service-worker syntax).
pub(crate) fn check_binding_name(name: &str) -> anyhow::Result<()> {
  let mut chars = name.chars();
  let valid = chars
    .next()
    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
    && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
  if !valid {
    bail!("binding name {name:?} is not a JavaScript identifier");
  }
  Ok(())
}

pub(crate) fn absolute_script(script: &Path, base: &Path) -> anyhow::Result<PathBuf> {
  let joined = if script.is_absolute() {
    script.to_path_buf()
  } else {
    base.join(script)
  };
  let path =
    std::path::absolute(&joined).with_context(|| format!("cannot resolve {}", joined.display()))?;
  if !path.is_file() {
    bail!("script not found: {}", path.display());
  }
  // Canonical, so that module URLs (which resolve `..`) and the loader's
  // root directory agree.
  std::fs::canonicalize(&path).with_context(|| format!("cannot resolve {}", path.display()))
}

#[cfg(test)]
mod tests {
  use super::*;

  fn parse(text: &str) -> anyhow::Result<EngineConfig> {
    let dir = std::env::temp_dir().join("runtime-config-test");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.js"), "export default { fetch() {} }").unwrap();
    EngineConfig::parse(text, &dir.join("runtime.toml"), |k| {
      (k == "TOKEN").then(|| "s3cret".to_string())
    })
  }

  #[test]
  fn full_config() {
    let c = parse(
      r#"
      [server]
      listen = "127.0.0.1:9000"
      [engine]
      max_isolates = 10
      [[workers]]
      name = "api"
      main = "a.js"
      routes = ["api.example.com/*", "*/v1/*"]
      vars = { GREETING = "hello" }
      secrets = ["TOKEN"]
      isolation = "request"
      limits = { cpu_ms = 10, startup_ms = 300, memory_mb = 64, subrequests = 5 }
      "#,
    )
    .unwrap();
    assert_eq!(c.max_isolates, 10);
    assert_eq!(c.listen.unwrap().port(), 9000);
    let w = &c.workers[0];
    assert_eq!(w.isolation, Isolation::Request);
    assert_eq!(w.limits.cpu_ms, 10);
    assert_eq!(w.limits.startup_ms, 300);
    assert_eq!(w.routes.len(), 2);
    assert!(w.bindings.contains(&("TOKEN".into(), "s3cret".into())));
    assert!(w.bindings.contains(&("GREETING".into(), "hello".into())));
  }

  #[test]
  fn errors_name_the_key_or_file() {
    let e = parse("[[workers]]\nname = \"a\"\nmain = \"a.js\"\ncpu = 3\n").unwrap_err();
    assert!(format!("{e:#}").contains("cpu"), "{e:#}");
    let e = parse("[[workers]]\nname = \"a\"\nmain = \"missing.js\"\n").unwrap_err();
    assert!(format!("{e:#}").contains("missing.js"), "{e:#}");
    let e =
      parse("[engine]\nmax_isolates = \"many\"\n[[workers]]\nname = \"a\"\nmain = \"a.js\"\n")
        .unwrap_err();
    assert!(format!("{e:#}").contains("max_isolates"), "{e:#}");
    let e =
      parse("[[workers]]\nname = \"a\"\nmain = \"a.js\"\nsecrets = [\"NOPE\"]\n").unwrap_err();
    assert!(format!("{e:#}").contains("NOPE"), "{e:#}");
  }
}
