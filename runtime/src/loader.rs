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

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};

use deno_core::error::ModuleLoaderError;
use deno_core::{
  resolve_import, ModuleLoadOptions, ModuleLoadReferrer, ModuleLoadResponse, ModuleLoader,
  ModuleResolveResponse, ModuleSource, ModuleSourceCode, ModuleSpecifier, ModuleType,
  ResolutionKind,
};
use deno_error::JsErrorBox;

pub struct ScriptLoader {
  root: RefCell<PathBuf>,
  sealed: Cell<bool>,
}

impl ScriptLoader {
  /// `root`: the directory imports may reach (the main script's directory).
  pub fn new(root: PathBuf) -> Self {
    Self {
      root: RefCell::new(root),
      sealed: Cell::new(false),
    }
  }

  /// Points a loader made for a spare isolate at its script's directory.
  pub fn set_root(&self, root: PathBuf) {
    *self.root.borrow_mut() = root;
  }

  /// Refuse every load from now on.
  pub fn seal(&self) {
    self.sealed.set(true);
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
    resolve_import(specifier, referrer).map_err(JsErrorBox::from_err)
  }

  fn load(
    &self,
    specifier: &ModuleSpecifier,
    _referrer: Option<&ModuleLoadReferrer>,
    options: ModuleLoadOptions,
  ) -> ModuleLoadResponse {
    let result = self.check(specifier).and_then(|path| {
      let code = std::fs::read(&path)
        .map_err(|e| JsErrorBox::generic(format!("Cannot read module {}: {e}", path.display())))?;
      Ok(ModuleSource::new(
        module_type(&path, &options),
        ModuleSourceCode::Bytes(code.into_boxed_slice().into()),
        specifier,
        None,
      ))
    });
    ModuleLoadResponse::Sync(result)
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
