//! Workers projects as they are: a `wrangler.toml`, `wrangler.json` or
//! `wrangler.jsonc` served as one worker. The keys a local runtime can honour
//! are read with wrangler's meaning (`[env.NAME]` sections, which keys an
//! environment inherits, `.dev.vars` for secrets); the keys that only matter
//! to Cloudflare's deploy are accepted and listed once; bindings this runtime
//! cannot provide, and keys nobody knows, are warnings naming them, so a
//! project is never silently half-served.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use runtime_cache::CacheSettings;
use runtime_ext::outbound::OutboundPolicy;
use serde_json::{Map, Value};

use crate::config::{
  absolute_script, check_against_cage, check_binding_name, local_namespace, CronTrigger,
  EngineConfig, Isolation, WorkerConfig, WorkerLimits, DEFAULT_MAX_ISOLATES,
};
use crate::routes::RoutePattern;

/// The names wrangler looks for in a project folder, in its order.
pub const FILE_NAMES: [&str; 3] = ["wrangler.json", "wrangler.jsonc", "wrangler.toml"];

/// Is `path` a wrangler configuration (by its file name)?
pub fn is_wrangler_file(path: &Path) -> bool {
  path
    .file_name()
    .and_then(|n| n.to_str())
    .is_some_and(|n| FILE_NAMES.contains(&n))
}

/// How to read a project: the `--env` to use, and where local state (KV
/// namespaces) lives.
pub struct ProjectOptions<'a> {
  pub env: Option<&'a str>,
  pub state_dir: &'a Path,
  /// Where the worker's fetch() may connect (a project you run yourself:
  /// anywhere, unless `--outbound` says otherwise).
  pub outbound: OutboundPolicy,
  /// Frozen clocks, as in production (a project you run yourself gets
  /// fine-grained ones unless `--coarse-time` says otherwise).
  pub coarse_time: bool,
}

/// Keys an `[env.NAME]` section takes from the top level when it does not set
/// them (wrangler's "inheritable" keys that we read).
const INHERITED: &[&str] = &[
  "name",
  "main",
  "compatibility_date",
  "compatibility_flags",
  "triggers",
  "limits",
];

/// Keys that configure Cloudflare's deploy, not what a worker does when it
/// runs: accepted and listed once at start-up.
const DEPLOY_ONLY: &[&str] = &[
  "$schema",
  "account_id",
  "base_dir",
  "build",
  "find_additional_modules",
  "first_party_worker",
  "keep_names",
  "keep_vars",
  "legacy_env",
  "logpush",
  "minify",
  "no_bundle",
  "node_compat",
  "observability",
  "placement",
  "preserve_file_names",
  "preview_urls",
  "route",
  "routes",
  "rules",
  "send_metrics",
  "tail_consumers",
  "upload_source_maps",
  "usage_model",
  "workers_dev",
  "zone_id",
];

/// Binding kinds this runtime does not provide: the script's `env` lacks
/// them, and each is a warning naming the binding.
const UNAVAILABLE_BINDINGS: &[&str] = &[
  "ai",
  "analytics_engine_datasets",
  "assets",
  "browser",
  "d1_databases",
  "dispatch_namespaces",
  "durable_objects",
  "hyperdrive",
  "images",
  "migrations",
  "mtls_certificates",
  "pipelines",
  "queues",
  "r2_buckets",
  "secrets_store_secrets",
  "send_email",
  "services",
  "site",
  "unsafe",
  "vectorize",
  "version_metadata",
  "workflows",
];

/// Keys we read.
const READ: &[&str] = &[
  "name",
  "main",
  "vars",
  "kv_namespaces",
  "triggers",
  "limits",
  "compatibility_date",
  "compatibility_flags",
  "dev",
  "env",
];

/// Reads a wrangler configuration file into the engine's configuration
/// (secrets come from `.dev.vars`, as in `wrangler dev`, not from the
/// process environment).
pub fn load(path: &Path, options: &ProjectOptions) -> anyhow::Result<EngineConfig> {
  let shown = path.display().to_string();
  let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {shown}"))?;
  let top = parse(&text, path)?;
  let base = path.parent().unwrap_or(Path::new("."));
  let project = select_env(&top, options.env, &shown)?;
  let at = match options.env {
    Some(env) => format!("{shown} (env.{env})"),
    None => shown.clone(),
  };
  report_keys(&project, &at);

  let name = match project.get("name") {
    Some(Value::String(name)) if !name.is_empty() => name.clone(),
    Some(other) if !other.is_null() => bail!("{at}: `name` must be a string"),
    _ => base
      .canonicalize()
      .ok()
      .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
      .unwrap_or_else(|| "worker".to_string()),
  };
  let main = match project.get("main") {
    Some(Value::String(main)) => main,
    Some(_) => bail!("{at}: `main` must be a string (the worker's entry module)"),
    None => {
      bail!("{at}: `main` is not set: name the worker's entry module, e.g. main = \"src/index.js\"")
    }
  };
  let main = absolute_script(Path::new(main), base).with_context(|| format!("{at}: main"))?;

  if let Some(date) = project.get("compatibility_date").map(plain_value) {
    let flags = project
      .get("compatibility_flags")
      .map(|f| f.to_string())
      .unwrap_or_else(|| "[]".to_string());
    tracing::info!(
      worker = %name,
      "{at}: compatibility_date {date} and compatibility_flags {flags} accepted; this runtime has one behaviour for all dates"
    );
  }

  let mut vars = Vec::new();
  let mut json_vars = Vec::new();
  if let Some(table) = project.get("vars") {
    let table = table
      .as_object()
      .ok_or_else(|| anyhow!("{at}: `vars` must be a table of names to values"))?;
    for (key, value) in table {
      check_binding_name(key).with_context(|| format!("{at}: vars"))?;
      match value {
        Value::String(s) => vars.push((key.clone(), s.clone())),
        // Wrangler passes other values to the script as JSON values.
        other => json_vars.push((key.clone(), other.to_string())),
      }
    }
  }
  // `.dev.vars` (or `.dev.vars.<env>`) beside the config: local secrets, as
  // `wrangler dev` reads them; they override vars of the same name.
  let dev_vars = options
    .env
    .map(|env| base.join(format!(".dev.vars.{env}")))
    .filter(|p| p.is_file())
    .unwrap_or_else(|| base.join(".dev.vars"));
  if dev_vars.is_file() {
    let shown_vars = dev_vars.display().to_string();
    for item in
      dotenvy::from_path_iter(&dev_vars).with_context(|| format!("cannot read {shown_vars}"))?
    {
      let (key, value) = item.map_err(|e| anyhow!("{shown_vars}: {e}"))?;
      check_binding_name(&key).with_context(|| shown_vars.clone())?;
      vars.retain(|(k, _)| *k != key);
      json_vars.retain(|(k, _)| *k != key);
      vars.push((key, value));
    }
    tracing::info!(worker = %name, "secrets from {shown_vars}");
  }

  let mut kv = Vec::new();
  if let Some(list) = project.get("kv_namespaces") {
    let list = list
      .as_array()
      .ok_or_else(|| anyhow!("{at}: `kv_namespaces` must be an array of {{ binding, id }}"))?;
    for (i, entry) in list.iter().enumerate() {
      let binding = entry
        .get("binding")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("{at}: kv_namespaces[{i}].binding must be a string"))?;
      check_binding_name(binding).with_context(|| format!("{at}: kv_namespaces[{i}]"))?;
      if vars.iter().any(|(k, _)| k == binding) || json_vars.iter().any(|(k, _)| k == binding) {
        bail!("{at}: kv_namespaces[{i}]: {binding} is also a var");
      }
      if kv.iter().any(|(b, _)| b == binding) {
        bail!("{at}: kv_namespaces[{i}]: binding {binding} is given twice");
      }
      // Locally a namespace lives in one SQLite file named by its id (as
      // wrangler dev keys its local state by id), or its binding.
      let id = entry
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .unwrap_or(binding);
      if id.contains(['/', '\\']) || id.starts_with('.') {
        bail!("{at}: kv_namespaces[{i}].id {id:?} cannot name a local file");
      }
      let namespace = local_namespace(options.state_dir, id, binding)
        .map_err(|e| anyhow!("{at}: kv_namespaces[{i}] ({binding}): {e}"))?;
      kv.push((binding.to_string(), namespace));
    }
  }

  let mut crons = Vec::new();
  if let Some(triggers) = project.get("triggers") {
    if let Some(list) = triggers.get("crons") {
      let list = list
        .as_array()
        .ok_or_else(|| anyhow!("{at}: triggers.crons must be an array of strings"))?;
      for cron in list {
        let cron = cron
          .as_str()
          .ok_or_else(|| anyhow!("{at}: triggers.crons must be an array of strings"))?;
        crons.push(CronTrigger::parse(cron).with_context(|| format!("{at}: triggers.crons"))?);
      }
    }
  }

  let mut limits = WorkerLimits::default();
  if let Some(section) = project.get("limits") {
    if let Some(cpu_ms) = section.get("cpu_ms") {
      limits.cpu_ms = cpu_ms
        .as_u64()
        .filter(|ms| *ms > 0)
        .ok_or_else(|| anyhow!("{at}: limits.cpu_ms must be a positive integer"))?;
    }
  }
  check_against_cage(&format!("{at}: memory"), limits.memory_mb)?;

  let listen = match project.get("dev") {
    Some(dev) => {
      let ip = match dev.get("ip").and_then(Value::as_str) {
        // wrangler's "localhost" means the loopback address.
        Some("localhost") | None => IpAddr::from([127, 0, 0, 1]),
        Some(ip) => ip
          .parse()
          .map_err(|_| anyhow!("{at}: dev.ip {ip:?} is not an IP address"))?,
      };
      match dev.get("port") {
        Some(port) => {
          let port = port
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| anyhow!("{at}: dev.port must be a port number"))?;
          Some(SocketAddr::new(ip, port))
        }
        None => dev.get("ip").map(|_| SocketAddr::new(ip, 8787)),
      }
    }
    None => None,
  };

  Ok(EngineConfig {
    listen,
    max_isolates: DEFAULT_MAX_ISOLATES,
    max_memory_mb: None,
    cache: CacheSettings::default(),
    workers: vec![WorkerConfig {
      name,
      main,
      routes: vec![RoutePattern::parse("*/*")?],
      bindings: vars,
      json_bindings: json_vars,
      kv,
      isolation: Isolation::Isolate,
      limits,
      crons,
      cache: None,
      outbound: std::sync::Arc::new(options.outbound.clone()),
      coarse_time: options.coarse_time,
      dev: None,
      inspector: None,
      quotas: runtime_ext::quota::WorkerQuotas::new(limits.quotas),
    }],
  })
}

/// The file as JSON values: TOML, or JSON with comments and trailing commas
/// (wrangler's JSONC).
fn parse(text: &str, path: &Path) -> anyhow::Result<Map<String, Value>> {
  let shown = path.display();
  let value: Value = if path.extension().is_some_and(|e| e == "toml") {
    toml::from_str(text).map_err(|e| anyhow!("{shown}: {}", e.to_string().trim()))?
  } else {
    let options = jsonc_parser::ParseOptions {
      allow_comments: true,
      allow_loose_object_property_names: false,
      allow_trailing_commas: true,
    };
    jsonc_parser::parse_to_serde_value(text, &options)
      .map_err(|e| anyhow!("{shown}: {e}"))?
      .unwrap_or(Value::Object(Map::new()))
  };
  match value {
    Value::Object(map) => Ok(map),
    _ => bail!("{shown}: the top level must be an object"),
  }
}

/// The top level, or the top level overlaid by `[env.NAME]` the way
/// wrangler does it: inheritable keys fall back to the top level (the name
/// to `<name>-<env>`), every other key is the environment's own.
fn select_env(
  top: &Map<String, Value>,
  env: Option<&str>,
  shown: &str,
) -> anyhow::Result<Map<String, Value>> {
  let Some(env) = env else {
    let mut project = top.clone();
    project.remove("env");
    return Ok(project);
  };
  let envs = top.get("env").and_then(Value::as_object);
  let section = envs
    .and_then(|envs| envs.get(env))
    .and_then(Value::as_object)
    .ok_or_else(|| {
      let known: Vec<&str> = envs
        .map(|e| e.keys().map(String::as_str).collect())
        .unwrap_or_default();
      anyhow!(
        "{shown}: --env {env}: there is no [env.{env}] (environments defined: {})",
        if known.is_empty() {
          "none".to_string()
        } else {
          known.join(", ")
        }
      )
    })?;
  let mut project = section.clone();
  for key in INHERITED {
    if project.contains_key(*key) {
      continue;
    }
    if let Some(value) = top.get(*key) {
      let value = match (*key, value) {
        ("name", Value::String(name)) => Value::String(format!("{name}-{env}")),
        _ => value.clone(),
      };
      project.insert(key.to_string(), value);
    }
  }
  for key in ["vars", "kv_namespaces"] {
    if top.contains_key(key) && !section.contains_key(key) {
      tracing::warn!(
        "{shown}: {key} is set at the top level but not in [env.{env}]; environments do not inherit {key} (as in wrangler), so env.{env} has none"
      );
    }
  }
  Ok(project)
}

/// Logs what the project asks for that this runtime does not do.
fn report_keys(project: &Map<String, Value>, at: &str) {
  let mut deploy_only = Vec::new();
  for (key, value) in project {
    if READ.contains(&key.as_str()) {
      continue;
    }
    if DEPLOY_ONLY.contains(&key.as_str()) {
      deploy_only.push(key.as_str());
    } else if UNAVAILABLE_BINDINGS.contains(&key.as_str()) {
      let names = binding_names(value);
      tracing::warn!(
        "{at}: {key} is not available in this runtime{}",
        if names.is_empty() {
          String::new()
        } else {
          format!(": env.{} will be undefined", names.join(", env."))
        }
      );
    } else {
      tracing::warn!("{at}: unknown key {key:?} ignored");
    }
  }
  if !deploy_only.is_empty() {
    tracing::info!(
      "{at}: {} only configure Cloudflare's deploy, not used here",
      deploy_only.join(", ")
    );
  }
}

/// The `binding` (or `name`) of each entry of a binding list or table.
fn binding_names(value: &Value) -> Vec<String> {
  let entries: Vec<&Value> = match value {
    Value::Array(list) => list.iter().collect(),
    other => vec![other],
  };
  let mut names = BTreeMap::new();
  for entry in entries {
    if let Some(name) = entry
      .get("binding")
      .or_else(|| entry.get("name"))
      .and_then(Value::as_str)
    {
      names.insert(name.to_string(), ());
    }
    // `durable_objects = { bindings = [...] }`
    if let Some(inner) = entry.get("bindings") {
      names.extend(binding_names(inner).into_iter().map(|n| (n, ())));
    }
  }
  names.into_keys().collect()
}

/// The project file in `dir`, if any (wrangler's names, then runtime.toml).
pub fn find_config(dir: &Path) -> Option<PathBuf> {
  FILE_NAMES
    .iter()
    .chain(std::iter::once(&"runtime.toml"))
    .map(|name| dir.join(name))
    .find(|path| path.is_file())
}

/// A value as written: a string without its quotes (a TOML date, which
/// arrives as a one-field table, as its text), anything else as JSON.
fn plain_value(value: &Value) -> String {
  match value {
    Value::String(s) => s.clone(),
    Value::Object(map) if map.len() == 1 => map
      .values()
      .next()
      .and_then(Value::as_str)
      .map_or_else(|| value.to_string(), str::to_string),
    other => other.to_string(),
  }
}
