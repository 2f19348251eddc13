//! `runtime dev`: serves like `serve`, and watches each worker's folder and
//! the config file. A change to a file of a worker's module graph loads that
//! worker again, apart from the server, from the files as they are now; if
//! it loads, that version replaces the old one (each thread lets its warm
//! isolate of the worker finish what it has in flight, and the next request
//! starts the new version; the listening sockets stay); if it does not, the
//! error is printed with file, line and column and the previous version
//! keeps serving, from the copy of its files it was loaded from.
//!
//! A change to the config file (runtime.toml or a wrangler project) loads it
//! again and every worker with it: bindings, KV namespaces, limits, the main
//! module. Only once all of them load does the new configuration serve, as
//! new versions of the same workers; a config that fails to parse or a
//! worker that fails to load is printed and the previous configuration
//! keeps serving. The set of workers, their routes and cron triggers, the
//! listening address and the caches are fixed at start: a change to those
//! is reported, and applies on a restart.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use anyhow::Context as _;

use crate::config::{EngineConfig, WorkerConfig};
use crate::loader::ModuleFiles;
use crate::worker::{Worker, WorkerContext};

/// Changes that come together (an editor's save is often several events)
/// are handled once, after this quiet time.
const SETTLE: Duration = Duration::from_millis(150);

/// Loads the config file again (as the command line loaded it first).
pub type ConfigLoader = Box<dyn Fn() -> anyhow::Result<EngineConfig> + Send>;

/// The version of a worker that serves: its files, its config once the
/// config file was reloaded, and a generation that grows with each new
/// version (a warm isolate of an older one is let go).
#[derive(Default)]
pub struct DevVersion {
  files: Mutex<Option<Arc<ModuleFiles>>>,
  config: Mutex<Option<Arc<WorkerConfig>>>,
  generation: AtomicU64,
}

impl std::fmt::Debug for DevVersion {
  // Not the config: it holds this version again.
  fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    f.debug_struct("DevVersion")
      .field("generation", &self.generation())
      .finish()
  }
}

impl DevVersion {
  pub fn new() -> Arc<Self> {
    Arc::default()
  }

  /// The files the serving version was loaded from (none before the first
  /// load: that one reads the disk and records them).
  pub fn files(&self) -> Option<Arc<ModuleFiles>> {
    self.files.lock().unwrap().clone()
  }

  pub fn generation(&self) -> u64 {
    self.generation.load(Ordering::Acquire)
  }

  /// The worker's config from the reloaded config file, if it was reloaded
  /// (else the one it started with serves).
  pub fn config(&self) -> Option<Arc<WorkerConfig>> {
    self.config.lock().unwrap().clone()
  }

  /// Makes `files` (and `config`, if the config file was reloaded) the
  /// serving version.
  fn publish(&self, files: ModuleFiles, config: Option<WorkerConfig>) {
    *self.files.lock().unwrap() = Some(Arc::new(files));
    if let Some(config) = config {
      *self.config.lock().unwrap() = Some(Arc::new(config));
    }
    self.generation.fetch_add(1, Ordering::AcqRel);
  }
}

/// Loads `config`'s worker from the disk in a scratch isolate on this
/// thread, and returns the files it read.
async fn load_version(config: &WorkerConfig, ctx: &WorkerContext) -> anyhow::Result<ModuleFiles> {
  let mut scratch = config.clone();
  scratch.dev = Some(DevVersion::new());
  // A scratch isolate is no debugger target.
  scratch.inspector = None;
  let mut worker = Worker::load(&scratch, ctx).await?;
  Ok(worker.take_loaded_files().unwrap_or_default())
}

/// Loads every worker once and makes what each read its first version
/// (instead of the server's start-up check).
pub fn load_first_versions(workers: &[WorkerConfig]) -> anyhow::Result<()> {
  run_local(|ctx| async move {
    for worker in workers {
      let files = load_version(worker, &ctx).await?;
      if let Some(dev) = &worker.dev {
        dev.publish(files, None);
      }
    }
    Ok(())
  })
}

fn run_local<'a, F, Fut>(f: F) -> anyhow::Result<()>
where
  F: FnOnce(WorkerContext) -> Fut,
  Fut: std::future::Future<Output = anyhow::Result<()>> + 'a,
{
  let rt = tokio::runtime::Builder::new_current_thread()
    .enable_all()
    .build()?;
  let local = tokio::task::LocalSet::new();
  local.block_on(&rt, f(WorkerContext::for_current_thread()))
}

/// Watches the workers' folders and `config_file` on a thread of its own for
/// the life of the process.
pub fn watch(
  mut workers: Vec<WorkerConfig>,
  config_file: Option<PathBuf>,
  load_config: Option<ConfigLoader>,
) -> anyhow::Result<()> {
  let (tx, rx) = mpsc::channel();
  let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
    if let Ok(event) = event {
      if !matches!(event.kind, notify::EventKind::Access(_)) {
        let _ = tx.send(event.paths);
      }
    }
  })?;
  let mut folders: Vec<PathBuf> = workers
    .iter()
    .filter_map(|w| w.main.parent().map(Path::to_path_buf))
    .collect();
  folders.sort();
  folders.dedup();
  for folder in &folders {
    watcher.watch(folder, RecursiveMode::Recursive)?;
  }
  let config_file = config_file.and_then(|f| std::fs::canonicalize(f).ok());
  if let Some(folder) = config_file.as_deref().and_then(Path::parent) {
    // Its folder, not the file: an editor that saves by renaming a new
    // file over the old one would end a watch on the file itself.
    if !folders.iter().any(|f| folder.starts_with(f)) {
      watcher.watch(folder, RecursiveMode::NonRecursive)?;
    }
  }
  tracing::info!(
    "dev: watching {} for changes",
    folders
      .iter()
      .map(|f| f.display().to_string())
      .collect::<Vec<_>>()
      .join(", ")
  );
  std::thread::Builder::new()
    .name("dev-watch".into())
    .spawn(move || {
      // The watcher lives as long as this thread.
      let _watcher = watcher;
      let result = run_local(|ctx| async move {
        while let Ok(first) = rx.recv() {
          let mut changed = first;
          while let Ok(more) = rx.recv_timeout(SETTLE) {
            changed.extend(more);
          }
          changed.sort();
          changed.dedup();
          reload_changed(
            &mut workers,
            config_file.as_deref(),
            load_config.as_ref(),
            &changed,
            &ctx,
          )
          .await;
        }
        Ok(())
      });
      if let Err(error) = result {
        tracing::error!("dev: the watcher stopped: {error:#}");
      }
    })?;
  Ok(())
}

async fn reload_changed(
  workers: &mut Vec<WorkerConfig>,
  config_file: Option<&Path>,
  load_config: Option<&ConfigLoader>,
  changed: &[PathBuf],
  ctx: &WorkerContext,
) {
  if let (Some(file), Some(load)) = (config_file, load_config) {
    // A wrangler project's secrets for development live beside it
    // (`.dev.vars`, or `.dev.vars.<env>`).
    let is_dev_vars = |p: &Path| {
      p.parent() == file.parent()
        && p
          .file_name()
          .and_then(|n| n.to_str())
          .is_some_and(|n| n == ".dev.vars" || n.starts_with(".dev.vars."))
    };
    if changed.iter().any(|p| p == file || is_dev_vars(p)) {
      match reload_config(workers, load, ctx).await {
        Ok(()) => tracing::info!(
          "dev: {} reloaded ({} workers)",
          file.display(),
          workers.len()
        ),
        Err(error) => tracing::error!(
          "dev: {}: {error:#}; the previous configuration keeps serving",
          file.display()
        ),
      }
      // Every worker was loaded from the disk as it is now.
      return;
    }
  }
  for worker in workers.iter() {
    let Some(dev) = &worker.dev else { continue };
    let affected = dev
      .files()
      .is_some_and(|files| changed.iter().any(|path| files.contains(path)));
    if !affected {
      continue;
    }
    match load_version(worker, ctx).await {
      Ok(files) => {
        let modules = files.len();
        dev.publish(files, None);
        tracing::info!(worker = %worker.name, "dev: reloaded ({modules} modules)");
      }
      Err(error) => tracing::error!(
        worker = %worker.name,
        "dev: reload failed, the previous version keeps serving: {error:#}"
      ),
    }
  }
}

/// Loads the config file again, and each of its workers in a scratch
/// isolate; if all of them load, each becomes the serving version of the
/// worker of its name, and `workers` the current configs.
async fn reload_config(
  workers: &mut Vec<WorkerConfig>,
  load: &ConfigLoader,
  ctx: &WorkerContext,
) -> anyhow::Result<()> {
  let mut next = load()?.workers;
  let names = |list: &[WorkerConfig]| list.iter().map(|w| w.name.clone()).collect::<Vec<_>>();
  if names(&next) != names(workers) {
    anyhow::bail!(
      "its workers are now {:?} (were {:?}): restart `runtime dev` to add, remove or rename workers",
      names(&next),
      names(workers)
    );
  }
  for (new, old) in next.iter_mut().zip(workers.iter()) {
    // What stays for the life of the process (see the module's comment).
    new.dev = old.dev.clone();
    new.inspector = old.inspector.clone();
    new.cache = old.cache.clone();
    new.quotas = old.quotas.clone();
    if new.inspector.is_some() {
      new.limits.cpu_ms = old.limits.cpu_ms;
      new.limits.startup_ms = old.limits.startup_ms;
      new.limits.scheduled_cpu_ms = old.limits.scheduled_cpu_ms;
    }
    let shown = |w: &WorkerConfig| {
      (
        format!("{:?}", w.routes),
        w.crons
          .iter()
          .map(|c| c.expression.clone())
          .collect::<Vec<_>>(),
      )
    };
    if shown(new) != shown(old) {
      tracing::warn!(
        worker = %new.name,
        "dev: its routes or cron triggers changed: they apply when `runtime dev` restarts"
      );
    }
  }
  let mut versions = Vec::with_capacity(next.len());
  for worker in &next {
    let files = load_version(worker, ctx)
      .await
      .with_context(|| format!("worker {:?} failed to load", worker.name))?;
    versions.push(files);
  }
  for (worker, files) in next.iter().zip(versions) {
    if let Some(dev) = &worker.dev {
      dev.publish(files, Some(worker.clone()));
    }
  }
  *workers = next;
  Ok(())
}
