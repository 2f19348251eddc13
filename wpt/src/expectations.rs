//! `wpt/expectations.json`: per test (file path, plus the variant if any),
//! what the run should find.
//!
//! ```json
//! {
//!   "url/url-origin.any.js": "pass",
//!   "url/url-constructor.any.js?include=file": {
//!     "fail": ["Parsing: <file:..> against <about:blank>"],
//!     "reason": "why these fail"
//!   },
//!   "fetch/api/basic/keepalive.any.js": { "skip": "why it cannot run" }
//! }
//! ```
//!
//! `"pass"`: every subtest passes and the harness completes. `"fail"`: exactly
//! these subtests fail (`"(harness)"` names the harness status: an error, a
//! timeout, a crash); `"flaky"` (optional) lists subtests whose outcome is
//! ignored. `"skip"`: the file is not run, and counts as one failed subtest.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{anyhow, Context as _};
use serde_json::{json, Map, Value};

#[derive(Debug, Clone, PartialEq)]
pub enum Expectation {
  Pass,
  Fail {
    fail: BTreeSet<String>,
    flaky: BTreeSet<String>,
  },
  Skip(String),
}

/// What a test's results mean against its expectation.
#[derive(Debug, Default, Clone)]
pub struct Verdict {
  /// Failed, but expected to pass.
  pub unexpected_failures: Vec<String>,
  /// Expected to fail, but passed (or did not run at all).
  pub unexpected_passes: Vec<String>,
  /// The test has no entry.
  pub missing: bool,
}

impl Verdict {
  pub fn is_ok(&self) -> bool {
    self.unexpected_failures.is_empty() && self.unexpected_passes.is_empty()
  }
}

#[derive(Debug, Default)]
pub struct Expectations {
  /// The file as read, so `--update` keeps the fields it does not manage
  /// (`reason`, `flaky`, skips).
  raw: BTreeMap<String, Value>,
}

fn names(value: Option<&Value>, id: &str, key: &str) -> anyhow::Result<BTreeSet<String>> {
  match value {
    None => Ok(BTreeSet::new()),
    Some(Value::Array(items)) => items
      .iter()
      .map(|v| {
        v.as_str()
          .map(str::to_string)
          .ok_or_else(|| anyhow!("{id}: \"{key}\" must list subtest names"))
      })
      .collect(),
    Some(_) => Err(anyhow!("{id}: \"{key}\" must be a list of subtest names")),
  }
}

fn parse_entry(id: &str, value: &Value) -> anyhow::Result<Expectation> {
  match value {
    Value::String(s) if s == "pass" => Ok(Expectation::Pass),
    Value::Object(map) => {
      if let Some(reason) = map.get("skip") {
        let reason = reason
          .as_str()
          .ok_or_else(|| anyhow!("{id}: \"skip\" must be a reason (a string)"))?;
        return Ok(Expectation::Skip(reason.to_string()));
      }
      if !map.contains_key("fail") && !map.contains_key("flaky") {
        return Err(anyhow!("{id}: expected \"fail\", \"flaky\" or \"skip\""));
      }
      Ok(Expectation::Fail {
        fail: names(map.get("fail"), id, "fail")?,
        flaky: names(map.get("flaky"), id, "flaky")?,
      })
    }
    _ => Err(anyhow!(
      "{id}: expected \"pass\", {{\"fail\": [...]}} or {{\"skip\": \"reason\"}}"
    )),
  }
}

impl Expectations {
  /// Reads `path`; a missing file is an empty set of expectations.
  pub fn load(path: &Path) -> anyhow::Result<Expectations> {
    if !path.exists() {
      return Ok(Expectations::default());
    }
    let text =
      std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let raw: BTreeMap<String, Value> =
      serde_json::from_str(&text).with_context(|| format!("{} is not valid", path.display()))?;
    for (id, value) in &raw {
      parse_entry(id, value).with_context(|| format!("in {}", path.display()))?;
    }
    Ok(Expectations { raw })
  }

  pub fn get(&self, id: &str) -> Option<Expectation> {
    self
      .raw
      .get(id)
      .map(|v| parse_entry(id, v).expect("validated on load"))
  }

  /// Compares a test's failing subtests (`"(harness)"` included) with its
  /// expectation. `all` is every subtest name the run saw.
  pub fn check(&self, id: &str, failing: &BTreeSet<String>) -> Verdict {
    match self.get(id) {
      None => Verdict {
        unexpected_failures: failing.iter().cloned().collect(),
        unexpected_passes: Vec::new(),
        missing: true,
      },
      Some(Expectation::Pass) => Verdict {
        unexpected_failures: failing.iter().cloned().collect(),
        ..Verdict::default()
      },
      Some(Expectation::Fail { fail, flaky }) => Verdict {
        unexpected_failures: failing
          .iter()
          .filter(|n| !fail.contains(*n) && !flaky.contains(*n))
          .cloned()
          .collect(),
        unexpected_passes: fail
          .iter()
          .filter(|n| !failing.contains(*n) && !flaky.contains(*n))
          .cloned()
          .collect(),
        missing: false,
      },
      Some(Expectation::Skip(_)) => Verdict::default(),
    }
  }

  /// Records a test's outcome as its new expectation (for `--update`),
  /// keeping a reason and the flaky list already there.
  pub fn record(&mut self, id: &str, failing: &BTreeSet<String>) {
    let previous = self.raw.get(id).and_then(Value::as_object).cloned();
    let flaky = previous
      .as_ref()
      .and_then(|p| names(p.get("flaky"), id, "flaky").ok())
      .unwrap_or_default();
    let fail: Vec<&String> = failing.iter().filter(|n| !flaky.contains(*n)).collect();
    if fail.is_empty() && flaky.is_empty() {
      self.raw.insert(id.to_string(), json!("pass"));
      return;
    }
    let mut entry = Map::new();
    entry.insert("fail".into(), json!(fail));
    if !flaky.is_empty() {
      entry.insert("flaky".into(), json!(flaky));
    }
    if let Some(reason) = previous.as_ref().and_then(|p| p.get("reason")) {
      entry.insert("reason".into(), reason.clone());
    }
    self.raw.insert(id.to_string(), Value::Object(entry));
  }

  /// Drops entries for tests that no longer exist (after a full run).
  pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
    self.raw.retain(|id, _| keep(id));
  }

  pub fn save(&self, path: &Path) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(&self.raw)?;
    text.push('\n');
    if let Some(dir) = path.parent() {
      std::fs::create_dir_all(dir).ok();
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
  }
}

#[cfg(test)]
mod unit {
  use super::*;

  fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
  }

  #[test]
  fn verdicts() {
    let raw: BTreeMap<String, Value> = serde_json::from_value(json!({
      "a.any.js": "pass",
      "b.any.js": {"fail": ["x", "y"], "flaky": ["z"], "reason": "r"},
      "c.any.js": {"skip": "no"},
    }))
    .unwrap();
    let mut e = Expectations { raw };
    assert!(e.check("a.any.js", &set(&[])).is_ok());
    assert_eq!(e.check("a.any.js", &set(&["x"])).unexpected_failures, ["x"]);
    assert!(e.check("b.any.js", &set(&["x", "y", "z"])).is_ok());
    assert!(e.check("b.any.js", &set(&["x", "y"])).is_ok());
    let v = e.check("b.any.js", &set(&["x", "w"]));
    assert_eq!(v.unexpected_failures, ["w"]);
    assert_eq!(v.unexpected_passes, ["y"]);
    assert!(e.check("c.any.js", &set(&[])).is_ok());
    assert!(e.check("d.any.js", &set(&[])).missing);
    assert_eq!(e.get("c.any.js"), Some(Expectation::Skip("no".into())));

    e.record("b.any.js", &set(&["x", "z"]));
    assert_eq!(
      e.raw["b.any.js"],
      json!({"fail": ["x"], "flaky": ["z"], "reason": "r"})
    );
    e.record("a.any.js", &set(&["q"]));
    assert_eq!(e.raw["a.any.js"], json!({"fail": ["q"]}));
    e.record("a.any.js", &set(&[]));
    assert_eq!(e.raw["a.any.js"], json!("pass"));
  }
}
