//! What to serve: `runtime.toml` (wrangler's names where they exist), or the
//! one-worker shorthand `runtime serve script.js`. Everything is checked at
//! start-up: unknown keys, wrong types and missing scripts are errors naming
//! the key or the file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use serde::Deserialize;

use runtime_cache::CacheSettings;
use runtime_ext::cache::CacheScope;

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
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LimitsSection {
  cpu_ms: Option<u64>,
  memory_mb: Option<u64>,
  subrequests: Option<u32>,
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
  /// Heap (and ArrayBuffer) memory of the worker's isolate, in MiB.
  pub memory_mb: u64,
  /// `fetch()` calls per request.
  pub subrequests: u32,
}

impl WorkerLimits {
  pub const DEFAULT_MEMORY_MB: u64 = 128;
}

impl Default for WorkerLimits {
  fn default() -> Self {
    Self {
      cpu_ms: 50,
      memory_mb: Self::DEFAULT_MEMORY_MB,
      subrequests: 50,
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
  pub isolation: Isolation,
  pub limits: WorkerLimits,
  /// The caches the worker reaches (set by `EngineConfig::open_cache`; a
  /// process-wide in-process store when unset).
  pub cache: Option<CacheScope>,
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

impl EngineConfig {
  /// The one-worker shorthand: every request goes to `script`.
  pub fn single(script: &Path, isolation: Isolation, limits: WorkerLimits) -> anyhow::Result<Self> {
    let main = absolute_script(script, Path::new("."))?;
    // The shorthand's worker is named after its file: log lines are tagged
    // with the script.
    let name = main
      .file_name()
      .map(|n| n.to_string_lossy().into_owned())
      .unwrap_or_else(|| "worker".into());
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
        isolation,
        limits,
        cache: None,
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
      let defaults = WorkerLimits::default();
      let limits = WorkerLimits {
        cpu_ms: w.limits.cpu_ms.unwrap_or(defaults.cpu_ms),
        memory_mb: w.limits.memory_mb.unwrap_or(defaults.memory_mb),
        subrequests: w.limits.subrequests.unwrap_or(defaults.subrequests),
      };
      if limits.cpu_ms == 0 || limits.memory_mb == 0 {
        bail!("{at}.limits: cpu_ms and memory_mb must be positive");
      }
      workers.push(WorkerConfig {
        name: w.name,
        main,
        routes,
        bindings,
        isolation: w.isolation,
        limits,
        cache: None,
      });
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

fn absolute_script(script: &Path, base: &Path) -> anyhow::Result<PathBuf> {
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
      limits = { cpu_ms = 10, memory_mb = 64, subrequests = 5 }
      "#,
    )
    .unwrap();
    assert_eq!(c.max_isolates, 10);
    assert_eq!(c.listen.unwrap().port(), 9000);
    let w = &c.workers[0];
    assert_eq!(w.isolation, Isolation::Request);
    assert_eq!(w.limits.cpu_ms, 10);
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
