//! `runtime dev`: serves like `serve`, and watches each worker's folder and
//! the config file. A change to a file of a worker's module graph loads that
//! worker again, apart from the server, from the files as they are now; if
//! it loads, that version replaces the old one (each thread lets its warm
//! isolate of the worker finish what it has in flight, and the next request
//! starts the new version; the listening sockets stay); if it does not, the
//! error is printed with file, line and column and the previous version
//! keeps serving, from the copy of its files it was loaded from.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use crate::config::WorkerConfig;
use crate::loader::ModuleFiles;
use crate::worker::{Worker, WorkerContext};

/// Changes that come together (an editor's save is often several events)
/// are handled once, after this quiet time.
const SETTLE: Duration = Duration::from_millis(150);

/// The version of a worker that serves: its files, and a generation that
/// grows with each new version (a warm isolate of an older one is let go).
#[derive(Debug, Default)]
pub struct DevVersion {
  files: Mutex<Option<Arc<ModuleFiles>>>,
  generation: AtomicU64,
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

  /// Makes `files` the serving version.
  fn publish(&self, files: ModuleFiles) {
    *self.files.lock().unwrap() = Some(Arc::new(files));
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
        dev.publish(files);
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
pub fn watch(workers: Vec<WorkerConfig>, config_file: Option<PathBuf>) -> anyhow::Result<()> {
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
  if let Some(file) = &config_file {
    watcher.watch(file, RecursiveMode::NonRecursive)?;
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
          reload_changed(&workers, config_file.as_deref(), &changed, &ctx).await;
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
  workers: &[WorkerConfig],
  config_file: Option<&Path>,
  changed: &[PathBuf],
  ctx: &WorkerContext,
) {
  if config_file.is_some_and(|file| changed.iter().any(|p| p == file)) {
    tracing::warn!(
      "dev: {} changed: restart `runtime dev` to apply a config change (its workers' code reloads on its own)",
      config_file.unwrap_or(Path::new("")).display()
    );
  }
  for worker in workers {
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
        dev.publish(files);
        tracing::info!(worker = %worker.name, "dev: reloaded ({modules} modules)");
      }
      Err(error) => tracing::error!(
        worker = %worker.name,
        "dev: reload failed, the previous version keeps serving: {error:#}"
      ),
    }
  }
}
