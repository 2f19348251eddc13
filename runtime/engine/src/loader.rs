//! Loads a user's script and the modules it imports, as ES modules.
//!
//! Only `file:` modules inside the script's own directory tree are loaded,
//! and only while the worker is being created: once the module graph is
//! evaluated the loader is sealed, so code running in a request cannot import
//! anything new (no `node:`, no other files, no network).
//!
//! A module's `//# sourceMappingURL=` is honoured, so stacks point at the
//! original sources of a bundle (esbuild, wrangler): `data:` maps are decoded
//! by deno_core, and a map file next to the bundle is read by the engine (not
//! by the script) when a stack is first formatted, from inside the script's
//! directory only.
//!
//! The process keeps V8's code cache of each JavaScript module it compiled,
//! so that the next isolate loading the same source (a cold worker, an
//! evicted one coming back, every request with `isolation = "request"`)
//! deserializes its compiled top level instead of parsing it again.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use deno_core::error::ModuleLoaderError;
use deno_core::{
  resolve_import, ModuleLoadOptions, ModuleLoadReferrer, ModuleLoadResponse, ModuleLoader,
  ModuleResolveResponse, ModuleSource, ModuleSourceCode, ModuleSpecifier, ModuleType,
  ResolutionKind, SourceCodeCacheInfo,
};
use deno_error::JsErrorBox;

/// Code caches kept, over all modules: past it, new caches are not kept.
const CODE_CACHE_BUDGET: usize = 64 << 20;

/// V8 code caches by module URL, each with the hash of the source it was
/// made from. V8 checks a cache against its source's length only, so a
/// cache is offered for the very source it came from and no other (a file
/// changed in place to one of the same length must not run the old code).
#[derive(Default)]
struct CodeCaches {
  by_url: HashMap<String, (u64, Arc<[u8]>)>,
  bytes: usize,
}

static CODE_CACHES: Mutex<Option<CodeCaches>> = Mutex::new(None);

/// A hash of a module's source, to match it with its code cache: it tells
/// versions of one module apart (a module is only ever matched with caches
/// made under its own URL), it is no defence against a crafted collision.
fn source_hash(code: &[u8]) -> u64 {
  let mut hasher = rustc_hash::FxHasher::default();
  hasher.write(code);
  hasher.write_usize(code.len());
  hasher.finish()
}

/// The code cache made from exactly this source, if there is one.
fn cached_code(url: &str, hash: u64) -> Option<Arc<[u8]>> {
  let caches = CODE_CACHES.lock().unwrap();
  let (cached_hash, data) = caches.as_ref()?.by_url.get(url)?;
  (*cached_hash == hash).then(|| data.clone())
}

fn keep_code_cache(url: &str, hash: u64, data: &[u8]) {
  let mut caches = CODE_CACHES.lock().unwrap();
  let caches = caches.get_or_insert_with(CodeCaches::default);
  let replaced = caches.by_url.get(url).map_or(0, |(_, old)| old.len());
  if caches.bytes - replaced + data.len() > CODE_CACHE_BUDGET {
    return;
  }
  caches.bytes = caches.bytes - replaced + data.len();
  caches.by_url.insert(url.to_string(), (hash, data.into()));
}

/// The module files of one version of a worker, as they were when it
/// loaded (`runtime dev`): its isolates load them from here rather than from
/// the disk, so the version that loaded keeps serving while the files on
/// disk are half-edited or broken.
#[derive(Debug, Default)]
pub struct ModuleFiles(HashMap<PathBuf, Arc<[u8]>>);

impl ModuleFiles {
  pub fn contains(&self, path: &Path) -> bool {
    self.0.contains_key(path)
  }

  pub fn len(&self) -> usize {
    self.0.len()
  }

  pub fn is_empty(&self) -> bool {
    self.0.is_empty()
  }
}

/// Where a loader reads modules from.
enum Files {
  Disk,
  /// The disk, keeping a copy of each file read.
  Recording(HashMap<PathBuf, Arc<[u8]>>),
  /// A version recorded before.
  Version(Arc<ModuleFiles>),
}

pub struct ScriptLoader {
  root: RefCell<PathBuf>,
  sealed: Cell<bool>,
  files: RefCell<Files>,
}

impl ScriptLoader {
  /// `root`: the directory imports may reach (the main script's directory).
  pub fn new(root: PathBuf) -> Self {
    Self {
      root: RefCell::new(root),
      sealed: Cell::new(false),
      files: RefCell::new(Files::Disk),
    }
  }

  /// Keeps a copy of every module file read, for [`Self::take_recorded`].
  pub fn record(&self) {
    *self.files.borrow_mut() = Files::Recording(HashMap::new());
  }

  /// Reads modules from `version` instead of the disk.
  pub fn read_from(&self, version: Arc<ModuleFiles>) {
    *self.files.borrow_mut() = Files::Version(version);
  }

  /// The files read since [`Self::record`].
  pub fn take_recorded(&self) -> Option<ModuleFiles> {
    let mut files = self.files.borrow_mut();
    match std::mem::replace(&mut *files, Files::Disk) {
      Files::Recording(recorded) => Some(ModuleFiles(recorded)),
      other => {
        *files = other;
        None
      }
    }
  }

  fn read(&self, path: &Path) -> Result<Vec<u8>, ModuleLoaderError> {
    let mut files = self.files.borrow_mut();
    if let Files::Version(version) = &*files {
      return version
        .0
        .get(path)
        .map(|code| code.to_vec())
        .ok_or_else(|| {
          JsErrorBox::generic(format!(
            "Cannot read module {}: it is not part of the version that loaded",
            path.display()
          ))
        });
    }
    let code = std::fs::read(path)
      .map_err(|e| JsErrorBox::generic(format!("Cannot read module {}: {e}", path.display())))?;
    if let Files::Recording(recorded) = &mut *files {
      recorded.insert(path.to_path_buf(), code.as_slice().into());
    }
    Ok(code)
  }

  /// Points a loader made for a spare isolate at its script's directory.
  pub fn set_root(&self, root: PathBuf) {
    *self.root.borrow_mut() = root;
  }

  /// Refuse every load from now on.
  pub fn seal(&self) {
    self.sealed.set(true);
  }

  /// Allows loads again, for the worker's script loaded anew in a fresh
  /// realm (sealed again once its top level has run).
  pub fn unseal(&self) {
    self.sealed.set(false);
  }

  fn check(&self, specifier: &ModuleSpecifier) -> Result<PathBuf, ModuleLoaderError> {
    if self.sealed.get() {
      return Err(JsErrorBox::type_error(format!(
        "Module loading is not allowed after start-up: {specifier}"
      )));
    }
    if specifier.scheme() != "file" {
      return Err(JsErrorBox::type_error(format!(
        "Unsupported module specifier {specifier}: only relative imports of the script's own files are allowed"
      )));
    }
    let path = specifier
      .to_file_path()
      .map_err(|_| JsErrorBox::type_error(format!("Invalid module path {specifier}")))?;
    let root = self.root.borrow();
    if root.as_os_str().is_empty() || !path.starts_with(&*root) {
      return Err(JsErrorBox::type_error(format!(
        "Module {specifier} is outside the script's directory {}",
        root.display()
      )));
    }
    Ok(path)
  }

  /// The path of a source map file the script's modules refer to, if it is
  /// inside the script's directory.
  fn source_map_path(&self, url: &str) -> Option<PathBuf> {
    let path = ModuleSpecifier::parse(url).ok()?.to_file_path().ok()?;
    let root = self.root.borrow();
    (!root.as_os_str().is_empty() && path.starts_with(&*root)).then_some(path)
  }
}

/// TypeScript's own resolution for a file that does not exist, as tsc and
/// bundlers resolve it: `./lib.js` may name `./lib.ts` (how TypeScript asks
/// to import its own modules), and `./lib` may name `./lib.ts`, `./lib.js`
/// or an `index` in `./lib/`. Anything else resolves as written.
fn with_typescript_resolution(resolved: ModuleSpecifier) -> ModuleSpecifier {
  let Ok(path) = resolved.to_file_path() else {
    return resolved;
  };
  if resolved.scheme() != "file" || path.exists() {
    return resolved;
  }
  let name = path.to_string_lossy().into_owned();
  let candidates: Vec<String> = match path.extension().and_then(|e| e.to_str()) {
    Some("js") => vec![format!("{}.ts", &name[..name.len() - 3])],
    Some("mjs") => vec![format!("{}.mts", &name[..name.len() - 4])],
    Some("cjs") => vec![format!("{}.cts", &name[..name.len() - 4])],
    Some("ts" | "mts" | "cts" | "json" | "wasm") => Vec::new(),
    _ => ["ts", "js", "mts", "mjs"]
      .iter()
      .map(|ext| format!("{name}.{ext}"))
      .chain(
        ["index.ts", "index.js"]
          .iter()
          .map(|f| format!("{name}/{f}")),
      )
      .collect(),
  };
  candidates
    .into_iter()
    .map(PathBuf::from)
    .find(|candidate| candidate.is_file())
    .and_then(|found| ModuleSpecifier::from_file_path(found).ok())
    .unwrap_or(resolved)
}

fn module_type(path: &Path, options: &ModuleLoadOptions) -> ModuleType {
  match path.extension().and_then(|e| e.to_str()) {
    Some("json") => ModuleType::Json,
    Some("wasm") => ModuleType::Wasm,
    _ => match &options.requested_module_type {
      deno_core::RequestedModuleType::Text => ModuleType::Text,
      deno_core::RequestedModuleType::Bytes => ModuleType::Bytes,
      _ => ModuleType::JavaScript,
    },
  }
}

impl ModuleLoader for ScriptLoader {
  fn resolve(
    &self,
    specifier: &str,
    referrer: &str,
    _kind: ResolutionKind,
  ) -> ModuleResolveResponse {
    let resolved = resolve_import(specifier, referrer).map_err(JsErrorBox::from_err)?;
    Ok(with_typescript_resolution(resolved))
  }

  fn load(
    &self,
    specifier: &ModuleSpecifier,
    _referrer: Option<&ModuleLoadReferrer>,
    options: ModuleLoadOptions,
  ) -> ModuleLoadResponse {
    let result = self.check(specifier).and_then(|path| {
      let mut code = self.read(&path)?;
      let module_type = module_type(&path, &options);
      if matches!(module_type, ModuleType::JavaScript) && crate::typescript::is_typescript(&path) {
        let source = String::from_utf8(code)
          .map_err(|_| JsErrorBox::generic(format!("Module {} is not UTF-8", path.display())))?;
        code = crate::typescript::javascript_for(&path, &source)
          .map_err(|e| JsErrorBox::new("SyntaxError", e))?
          .as_bytes()
          .to_vec();
      }
      // deno_core makes a cache when it gets none (or V8 rejects the one it
      // got) and hands it to `code_cache_ready`.
      let code_cache = matches!(module_type, ModuleType::JavaScript).then(|| {
        let hash = source_hash(&code);
        let data = cached_code(specifier.as_str(), hash).map(|data| Cow::Owned(data.to_vec()));
        if data.is_some() {
          tracing::debug!("{specifier}: compiled from the code cache");
        }
        SourceCodeCacheInfo { hash, data }
      });
      Ok(ModuleSource::new(
        module_type,
        ModuleSourceCode::Bytes(code.into_boxed_slice().into()),
        specifier,
        code_cache,
      ))
    });
    ModuleLoadResponse::Sync(result)
  }

  fn code_cache_ready(
    &self,
    specifier: ModuleSpecifier,
    hash: u64,
    code_cache: &[u8],
  ) -> Pin<Box<dyn std::future::Future<Output = ()>>> {
    keep_code_cache(specifier.as_str(), hash, code_cache);
    Box::pin(std::future::ready(()))
  }

  fn load_external_source_map(&self, source_map_url: &str) -> Option<Cow<'_, [u8]>> {
    let path = self.source_map_path(source_map_url)?;
    std::fs::read(path).ok().map(Cow::Owned)
  }

  /// The sources a map names are shown whether or not they were deployed
  /// with the bundle (they rarely are): the original file is what a stack
  /// should point at.
  fn source_map_source_exists(&self, _source_url: &str) -> Option<bool> {
    Some(true)
  }
}
