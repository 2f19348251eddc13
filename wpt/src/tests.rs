//! Finding the tests: `*.any.js` and `*.worker.js` files under the WPT
//! directory, their `// META:` lines, and their variants.

use std::path::Path;

use anyhow::Context as _;

/// What a test file's leading `// META: key=value` lines say.
#[derive(Debug, Clone, Default)]
pub struct Meta {
  /// `script=`: classic scripts run before the test, in order.
  pub scripts: Vec<String>,
  /// `timeout=long`.
  pub long_timeout: bool,
  /// `title=`.
  pub title: Option<String>,
  /// `global=`, split on commas (None: the default, window and dedicatedworker).
  pub globals: Option<Vec<String>>,
  /// `variant=`: each one a separate test (`?...` or `#...`).
  pub variants: Vec<String>,
}

impl Meta {
  pub fn parse(source: &str) -> Meta {
    let mut meta = Meta::default();
    for line in source.lines() {
      let Some(rest) = line.trim_start().strip_prefix("//") else {
        break;
      };
      let Some(rest) = rest.trim_start().strip_prefix("META:") else {
        break;
      };
      let Some((key, value)) = rest.trim().split_once('=') else {
        continue;
      };
      let value = value.trim().to_string();
      match key.trim() {
        "script" => meta.scripts.push(value),
        "timeout" => meta.long_timeout = value == "long",
        "title" => meta.title = Some(value),
        "global" => {
          meta.globals = Some(value.split(',').map(|g| g.trim().to_string()).collect());
        }
        "variant" => meta.variants.push(value),
        _ => {}
      }
    }
    meta
  }

  /// Whether the test runs in some worker scope (what this runtime's global
  /// scope is); `Err` says why not.
  pub fn applies_to_workers(&self) -> Result<(), String> {
    let Some(globals) = &self.globals else {
      return Ok(());
    };
    let worker = globals.iter().any(|g| {
      matches!(
        g.as_str(),
        "worker"
          | "dedicatedworker"
          | "dedicatedworker-module"
          | "sharedworker"
          | "sharedworker-module"
          | "serviceworker"
          | "serviceworker-module"
      )
    });
    if worker {
      Ok(())
    } else {
      Err(format!("global={}: no worker scope", globals.join(",")))
    }
  }
}

/// One test: a file, or one variant of a file.
#[derive(Debug, Clone)]
pub struct TestCase {
  /// `path` + `variant`: how expectations and reports name it.
  pub id: String,
  /// Relative to the WPT root, `/`-separated: `url/url-origin.any.js`.
  pub path: String,
  /// `""`, or the variant's `?query` / `#fragment`.
  pub variant: String,
  pub meta: Meta,
}

impl TestCase {
  /// A `.worker.js` test: it calls `importScripts` and `done()` itself.
  pub fn is_worker_js(&self) -> bool {
    self.path.ends_with(".worker.js") && !self.path.ends_with(".any.worker.js")
  }

  /// Served over https in WPT (`.https.` in the name).
  pub fn is_https(&self) -> bool {
    let name = self.path.rsplit('/').next().unwrap_or(&self.path);
    name.split('.').any(|part| part == "https")
  }
}

/// A file found but not run here, with the reason.
#[derive(Debug, Clone)]
pub struct NotApplicable {
  pub path: String,
  pub reason: String,
}

fn is_test_file(name: &str) -> bool {
  name.ends_with(".any.js") || (name.ends_with(".worker.js") && !name.ends_with(".any.worker.js"))
}

/// Directories WPT's manifest never takes tests from.
fn is_support_dir(name: &str) -> bool {
  matches!(
    name,
    "resources" | "support" | "tools" | "common" | "interfaces"
  ) || name.starts_with('.')
}

/// Every test file under `root`, as `/`-separated relative paths, sorted.
pub fn find_files(root: &Path) -> anyhow::Result<Vec<String>> {
  let mut files = Vec::new();
  let mut stack = vec![String::new()];
  while let Some(dir) = stack.pop() {
    let full = if dir.is_empty() {
      root.to_path_buf()
    } else {
      root.join(&dir)
    };
    let entries =
      std::fs::read_dir(&full).with_context(|| format!("cannot list {}", full.display()))?;
    for entry in entries {
      let entry = entry?;
      let name = entry.file_name().to_string_lossy().into_owned();
      let relative = if dir.is_empty() {
        name.clone()
      } else {
        format!("{dir}/{name}")
      };
      let file_type = entry.file_type()?;
      if file_type.is_dir() {
        if !is_support_dir(&name) {
          stack.push(relative);
        }
      } else if is_test_file(&name) {
        files.push(relative);
      }
    }
  }
  files.sort();
  Ok(files)
}

/// Whether `id` (a test's path plus variant) is selected by `filter`: a
/// path prefix (`url/`, `url/url-origin`), or a pattern with `*` wildcards
/// matched against the whole id or path (`url/urlsearchparams-*`).
pub fn matches_filter(filter: &str, path: &str, id: &str) -> bool {
  let filter = filter.trim_start_matches("./").trim_start_matches('/');
  if filter.contains('*') {
    wildcard(filter, path) || wildcard(filter, id)
  } else {
    id.starts_with(filter)
  }
}

fn wildcard(pattern: &str, text: &str) -> bool {
  let parts: Vec<&str> = pattern.split('*').collect();
  let (first, rest) = parts.split_first().unwrap();
  let Some(mut remaining) = text.strip_prefix(first) else {
    return false;
  };
  let Some((last, middle)) = rest.split_last() else {
    return remaining.is_empty();
  };
  for part in middle {
    match remaining.find(part) {
      Some(i) => remaining = &remaining[i + part.len()..],
      None => return false,
    }
  }
  remaining.len() >= last.len() && remaining.ends_with(last)
}

/// The tests selected by `filters` (all when empty), variants expanded, and
/// the selected files that do not apply to a worker scope.
pub fn discover(
  root: &Path,
  filters: &[String],
) -> anyhow::Result<(Vec<TestCase>, Vec<NotApplicable>)> {
  let mut tests = Vec::new();
  let mut not_applicable = Vec::new();
  for path in find_files(root)? {
    let selected =
      |id: &str| filters.is_empty() || filters.iter().any(|f| matches_filter(f, &path, id));
    // A cheap check first: a filter naming a variant still starts with the path.
    if !filters.is_empty()
      && !filters.iter().any(|f| {
        let f = f.trim_start_matches("./").trim_start_matches('/');
        f.contains('*') || path.starts_with(f) || f.starts_with(&path)
      })
    {
      continue;
    }
    let source =
      std::fs::read_to_string(root.join(&path)).with_context(|| format!("cannot read {path}"))?;
    let meta = Meta::parse(&source);
    let variants = if meta.variants.is_empty() {
      vec![String::new()]
    } else {
      meta.variants.clone()
    };
    let cases: Vec<TestCase> = variants
      .into_iter()
      .map(|variant| TestCase {
        id: format!("{path}{variant}"),
        path: path.clone(),
        variant,
        meta: meta.clone(),
      })
      .filter(|case| selected(&case.id))
      .collect();
    if cases.is_empty() {
      continue;
    }
    if let Err(reason) = meta.applies_to_workers() {
      not_applicable.push(NotApplicable {
        path: path.clone(),
        reason,
      });
      continue;
    }
    tests.extend(cases);
  }
  Ok((tests, not_applicable))
}

/// Resolves a `// META: script=` (or `importScripts`) reference against the
/// test's path: `/`-rooted is from the WPT root, anything else relative to
/// the test's directory. Returns a `/`-rooted path.
pub fn resolve_url_path(test_path: &str, reference: &str) -> String {
  let (reference, query) = match reference.find(['?', '#']) {
    Some(i) => reference.split_at(i),
    None => (reference, ""),
  };
  let mut segments: Vec<&str> = if reference.starts_with('/') {
    Vec::new()
  } else {
    let mut base: Vec<&str> = test_path.split('/').collect();
    base.pop();
    base
  };
  for part in reference.split('/') {
    match part {
      "" | "." => {}
      ".." => {
        segments.pop();
      }
      part => segments.push(part),
    }
  }
  format!("/{}{query}", segments.join("/"))
}

#[cfg(test)]
mod unit {
  use super::*;

  #[test]
  fn meta() {
    let meta = Meta::parse(
      "// META: global=window,worker\n// META: script=/common/a.js\n//META: script=../b.js\n// META: timeout=long\n// META: variant=?1-10\n// META: variant=?11-last\n\n// META: script=ignored.js\n",
    );
    assert_eq!(meta.scripts, ["/common/a.js", "../b.js"]);
    assert!(meta.long_timeout);
    assert_eq!(meta.variants, ["?1-10", "?11-last"]);
    assert!(meta.applies_to_workers().is_ok());
    assert!(Meta::parse("// META: global=window\n")
      .applies_to_workers()
      .is_err());
    assert!(Meta::parse("test(() => {});").applies_to_workers().is_ok());
  }

  #[test]
  fn resolve() {
    assert_eq!(
      resolve_url_path("url/a.any.js", "/common/x.js"),
      "/common/x.js"
    );
    assert_eq!(
      resolve_url_path("url/a.any.js", "resources/x.js"),
      "/url/resources/x.js"
    );
    assert_eq!(
      resolve_url_path("fetch/api/basic/a.any.js", "../resources/utils.js"),
      "/fetch/api/resources/utils.js"
    );
    assert_eq!(resolve_url_path("a/b.any.js", "./c.js?x=1"), "/a/c.js?x=1");
  }

  #[test]
  fn filters() {
    assert!(matches_filter("url/", "url/a.any.js", "url/a.any.js"));
    assert!(matches_filter("/url", "url/a.any.js", "url/a.any.js"));
    assert!(!matches_filter(
      "urlpattern",
      "url/a.any.js",
      "url/a.any.js"
    ));
    assert!(matches_filter(
      "url/urlsearchparams-*",
      "url/urlsearchparams-sort.any.js",
      "url/urlsearchparams-sort.any.js"
    ));
    assert!(!matches_filter(
      "url/urlsearchparams-*",
      "url/url-origin.any.js",
      "url/url-origin.any.js"
    ));
    assert!(matches_filter(
      "*/idlharness*",
      "url/idlharness.any.js",
      "url/idlharness.any.js"
    ));
    assert!(matches_filter(
      "url/a.any.js?1-10",
      "url/a.any.js",
      "url/a.any.js?1-10"
    ));
    assert!(!matches_filter(
      "url/a.any.js?1-10",
      "url/a.any.js",
      "url/a.any.js?11-20"
    ));
  }
}
