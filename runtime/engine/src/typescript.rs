//! TypeScript modules (`.ts`, `.mts`, `.cts`) run directly: their types are
//! stripped by oxc (parser, semantic analysis, the TypeScript transform and
//! codegen; no type checking, as `wrangler dev`, Deno and Bun do), with an
//! inline source map so that stacks point at the `.ts` line and column.
//!
//! oxc rather than deno_ast (swc): it is one family of crates with no ties
//! to deno_core's own dependency versions, it builds in about a third of the
//! time, and it strips types faster; we need nothing from swc that oxc lacks.
//!
//! A module is transpiled once per process: the output is kept by path and
//! source hash, so every isolate loading it (a cold worker, an evicted one
//! coming back, `isolation = "request"`) gets the same JavaScript, which the
//! loader's code cache then serves compiled.

use std::collections::HashMap;
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use oxc::allocator::Allocator;
use oxc::codegen::{Codegen, CodegenOptions};
use oxc::diagnostics::OxcDiagnostic;
use oxc::parser::Parser;
use oxc::semantic::SemanticBuilder;
use oxc::span::SourceType;
use oxc::transformer::{TransformOptions, Transformer};

/// Transpiled output kept, over all modules; past it, output is not kept
/// (and is made again per isolate).
const OUTPUT_BUDGET: usize = 64 << 20;

#[derive(Default)]
struct Transpiled {
  by_path: HashMap<PathBuf, (u64, Arc<str>)>,
  bytes: usize,
}

static TRANSPILED: Mutex<Option<Transpiled>> = Mutex::new(None);

/// Is `path` a module to transpile?
pub fn is_typescript(path: &Path) -> bool {
  matches!(
    path.extension().and_then(|e| e.to_str()),
    Some("ts" | "mts" | "cts")
  )
}

/// The JavaScript for the TypeScript module at `path`, from the process's
/// cache when this very source was transpiled before.
pub fn javascript_for(path: &Path, source: &str) -> Result<Arc<str>, String> {
  let hash = {
    let mut hasher = rustc_hash::FxHasher::default();
    hasher.write(source.as_bytes());
    hasher.finish()
  };
  if let Some((cached_hash, code)) = TRANSPILED
    .lock()
    .unwrap()
    .as_ref()
    .and_then(|t| t.by_path.get(path))
  {
    if *cached_hash == hash {
      return Ok(code.clone());
    }
  }
  let started = std::time::Instant::now();
  // A bug in the transpiler must fail this module's load, not the process.
  let code: Arc<str> = std::panic::catch_unwind(|| transpile(path, source))
    .map_err(|_| {
      format!(
        "{}: the TypeScript transpiler failed on this file",
        path.display()
      )
    })??
    .into();
  tracing::debug!(
    "{}: transpiled {} bytes of TypeScript in {:.2} ms",
    path.display(),
    source.len(),
    started.elapsed().as_secs_f64() * 1e3
  );
  let mut cache = TRANSPILED.lock().unwrap();
  let cache = cache.get_or_insert_with(Transpiled::default);
  let replaced = cache.by_path.get(path).map_or(0, |(_, old)| old.len());
  if cache.bytes - replaced + code.len() <= OUTPUT_BUDGET {
    cache.bytes = cache.bytes - replaced + code.len();
    cache
      .by_path
      .insert(path.to_path_buf(), (hash, code.clone()));
  }
  Ok(code)
}

/// Strips the types of one module: JavaScript ending in an inline source map
/// back to `path`. An error names `path:line:column`, as V8's do.
pub fn transpile(path: &Path, source: &str) -> Result<String, String> {
  let allocator = Allocator::default();
  let source_type = SourceType::from_path(path)
    .map_err(|e| format!("{}: {e}", path.display()))?
    // Workers modules are ES modules, whatever the extension says.
    .with_module(true);
  let parsed = Parser::new(&allocator, source, source_type).parse();
  if let Some(error) = parsed.diagnostics.errors().next() {
    return Err(describe(path, source, error));
  }
  let mut program = parsed.program;
  // The enum transform needs the enums' values evaluated; the transforms add
  // scopes and symbols, so room is made for them up front (as oxc's own
  // transformer example does).
  let semantic = SemanticBuilder::new()
    .with_excess_capacity(2.0)
    .with_enum_eval(true)
    .build(&program);
  if let Some(error) = semantic.diagnostics.errors().next() {
    return Err(describe(path, source, error));
  }
  let scoping = semantic.semantic.into_scoping();
  // Types only: no JSX, no lowering of newer syntax (V8 runs it as is).
  let options = TransformOptions::default();
  let transformed =
    Transformer::new(&allocator, path, &options).build_with_scoping(scoping, &mut program);
  if let Some(error) = transformed.diagnostics.errors().next() {
    return Err(describe(path, source, error));
  }
  let output = Codegen::new()
    .with_options(CodegenOptions {
      source_map_path: Some(path.to_path_buf()),
      ..CodegenOptions::default()
    })
    .build(&program);
  let mut code = output.code;
  if let Some(mut map) = output.map {
    // The map's source is the file's URL, as the module's own name is, so
    // a stack shows file:///.../worker.ts:LINE:COLUMN.
    if let Ok(url) = deno_core::ModuleSpecifier::from_file_path(path) {
      map.set_sources(vec![url.as_str()]);
    }
    map.set_source_contents(vec![Some(source)]);
    if !code.ends_with('\n') {
      code.push('\n');
    }
    code.push_str("//# sourceMappingURL=");
    code.push_str(&map.to_data_url());
    code.push('\n');
  }
  Ok(code)
}

/// `path:line:column: message` for the first label of `error` (1-based, as
/// V8's syntax errors are reported).
fn describe(path: &Path, source: &str, error: &OxcDiagnostic) -> String {
  let offset = error.labels.first().map_or(0, |label| label.offset()) as usize;
  let before = &source[..offset.min(source.len())];
  let line = before.matches('\n').count() + 1;
  let column = before
    .rfind('\n')
    .map_or(before.len(), |nl| before.len() - nl - 1)
    + 1;
  let mut text = format!("{}:{line}:{column}: {}", path.display(), error.message);
  if let Some(help) = &error.help {
    text.push_str(&format!(" ({help})"));
  }
  text
}
