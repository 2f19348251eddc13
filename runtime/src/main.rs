use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use runtime_engine::config::{EngineConfig, Isolation, WorkerLimits};
use runtime_engine::server::{serve, InspectOptions, Limits, ServeOptions};

/// A V8-isolate JavaScript runtime for Workers-style scripts.
#[derive(Parser)]
#[command(name = "runtime", version, about)]
struct Cli {
  #[command(subcommand)]
  command: Command,
  /// Log lines for people (`pretty`, colored on a terminal) or one JSON
  /// object per line (`json`: timestamp, level, target, message and the
  /// event's fields, such as worker, at the top level).
  #[arg(long, global = true, value_enum, default_value = "pretty")]
  log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
  Pretty,
  Json,
}

#[derive(Subcommand)]
enum Command {
  /// Serve a script (or the workers of a config file) over HTTP: every
  /// request goes to a script's fetch handler.
  Serve(ServeArgs),
  /// Serve as `serve` does, and reload a worker when a file of its module
  /// graph changes (a version that fails to load leaves the previous one
  /// serving, and its error is printed).
  Dev(ServeArgs),
  /// Run web-platform-tests against the global scope scripts get (see wpt/README.md).
  Wpt(runtime_wpt::WptArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
  /// The script: an ES module with `export default { fetch }` or a service
  /// worker calling `addEventListener("fetch", ...)`. The one-worker
  /// shorthand of a config file. Without a script or --config, the
  /// project in the current folder: wrangler.json, wrangler.jsonc,
  /// wrangler.toml, then runtime.toml.
  #[arg(conflicts_with = "config")]
  script: Option<PathBuf>,
  /// Serve the workers of this config file instead: runtime.toml, or a
  /// Workers project's wrangler.toml / wrangler.json / wrangler.jsonc.
  #[arg(long)]
  config: Option<PathBuf>,
  /// Where the script's fetch() may connect, comma-separated: "any"
  /// (the default for a script or wrangler project), "public", "private",
  /// "local", CIDRs and host[:port] names (runtime.toml sets `outbound`).
  #[arg(long, value_name = "LIST", value_delimiter = ',')]
  outbound: Vec<String>,
  /// Freeze Date.now() and performance.now() while JavaScript runs, as
  /// Workers does (the default for the workers of a runtime.toml, which sets
  /// `coarse_time`).
  #[arg(long)]
  coarse_time: bool,
  /// The [env.NAME] section of a wrangler project to serve.
  #[arg(long, value_name = "NAME")]
  env: Option<String>,
  /// Port to listen on (0 picks a free one) [default: 8080].
  #[arg(long)]
  port: Option<u16>,
  /// Address to listen on [default: 127.0.0.1].
  #[arg(long)]
  host: Option<IpAddr>,
  /// Server threads, each with its own isolates (default: one per core).
  #[arg(long)]
  threads: Option<usize>,
  /// Seconds a client may take to send its request head.
  #[arg(long, default_value_t = 10)]
  header_timeout: u64,
  /// CPU time a request may use without yielding, in ms (shorthand only).
  #[arg(long, default_value_t = WorkerLimits::default().cpu_ms)]
  cpu_limit: u64,
  /// CPU time a new isolate's start-up (module evaluation, top-level code)
  /// may use in all, in ms, apart from the per-request limit (shorthand only).
  #[arg(long, default_value_t = WorkerLimits::DEFAULT_STARTUP_MS)]
  startup_limit: u64,
  /// Heap memory of the script's isolate, in MiB (shorthand only).
  #[arg(long, default_value_t = WorkerLimits::default().memory_mb)]
  memory_limit: u64,
  /// `request`: a fresh isolate for every request (shorthand only).
  #[arg(long, value_enum, default_value = "isolate")]
  isolation: IsolationArg,
  /// A cron trigger for the script's scheduled handler, e.g. "*/5 * * * *"
  /// (UTC; repeatable; shorthand only: a config file sets `crons`).
  #[arg(long = "cron", value_name = "EXPRESSION")]
  crons: Vec<String>,
  /// `GET /__scheduled?cron=...` runs the scheduled handler of the worker
  /// routed there, as `wrangler dev --test-scheduled` does.
  #[arg(long)]
  test_scheduled: bool,
  /// V8 flags for every isolate, as one string (e.g. "--max-lazy"); for
  /// operators tuning or profiling V8, never taken from scripts.
  #[arg(long, value_name = "FLAGS")]
  v8_flags: Option<String>,
  /// A KV namespace binding (repeatable), kept in SQLite at
  /// STATE_DIR/kv/NAME.sqlite (shorthand only).
  #[arg(long = "kv", value_name = "NAME", conflicts_with = "config")]
  kv: Vec<String>,
  /// Serve /metrics (Prometheus), /healthz and /readyz on this address,
  /// apart from the workers (e.g. 127.0.0.1:9090).
  #[arg(long, value_name = "ADDR")]
  admin: Option<SocketAddr>,
  /// Log one line per request (target `access`): worker, method, path,
  /// status, wall ms, CPU µs, outcome (ok / exception / limit).
  #[arg(long)]
  access_log: bool,
  /// Serve the V8 inspector on ADDR [default: 127.0.0.1:9229]: Chrome
  /// DevTools (chrome://inspect) or VS Code attach to a worker through
  /// /json/list. One server thread, no CPU limits.
  #[arg(long, value_name = "ADDR", num_args = 0..=1, require_equals = true,
        default_missing_value = DEFAULT_INSPECT, conflicts_with = "inspect_brk")]
  inspect: Option<SocketAddr>,
  /// As --inspect, and each worker's first isolate waits for a debugger to
  /// attach and pauses on its first statement.
  #[arg(long, value_name = "ADDR", num_args = 0..=1, require_equals = true,
        default_missing_value = DEFAULT_INSPECT)]
  inspect_brk: Option<SocketAddr>,
  /// Where the shorthand and wrangler projects keep local state (KV
  /// namespaces).
  #[arg(long, default_value = ".runtime-state")]
  state_dir: PathBuf,
}

/// Where `--inspect` listens without an address, as Node and Deno do.
const DEFAULT_INSPECT: &str = "127.0.0.1:9229";

#[derive(Clone, Copy, clap::ValueEnum)]
enum IsolationArg {
  Isolate,
  Request,
}

fn serve_command(args: ServeArgs, dev: bool) -> anyhow::Result<()> {
  if let Some(flags) = &args.v8_flags {
    // Before the first isolate: V8 reads most flags when it initializes.
    let argv = std::iter::once("runtime".to_string())
      .chain(flags.split_whitespace().map(str::to_string))
      .collect();
    let unknown = deno_core::v8::V8::set_flags_from_command_line(argv);
    if unknown.len() > 1 {
      anyhow::bail!("--v8-flags: V8 does not know {}", unknown[1..].join(" "));
    }
  }
  let config_file = match (&args.config, &args.script) {
    (None, None) => Some(
      runtime_engine::wrangler::find_config(Path::new(".")).ok_or_else(|| {
        anyhow::anyhow!(
          "a script or --config is required (no wrangler.json, wrangler.jsonc, wrangler.toml or runtime.toml in the current folder)"
        )
      })?,
    ),
    (config, _) => config.clone(),
  };
  if args.env.is_some()
    && !config_file
      .as_deref()
      .is_some_and(runtime_engine::wrangler::is_wrangler_file)
  {
    anyhow::bail!("--env selects an [env.NAME] of a wrangler project (wrangler.toml, wrangler.json or wrangler.jsonc)");
  }
  if !args.outbound.is_empty()
    && config_file
      .as_deref()
      .is_some_and(|f| !runtime_engine::wrangler::is_wrangler_file(f))
  {
    anyhow::bail!(
      "--outbound is for a script or a wrangler project: runtime.toml sets `outbound` per worker or in [engine]"
    );
  }
  if args.coarse_time
    && config_file
      .as_deref()
      .is_some_and(|f| !runtime_engine::wrangler::is_wrangler_file(f))
  {
    anyhow::bail!(
      "--coarse-time is for a script or a wrangler project: runtime.toml sets `coarse_time` per worker or in [engine]"
    );
  }
  let outbound = if args.outbound.is_empty() {
    runtime_ext::outbound::OutboundPolicy::any()
  } else {
    runtime_ext::outbound::OutboundPolicy::parse(&args.outbound)
      .map_err(|e| anyhow::anyhow!("--outbound: {e}"))?
  };
  // How the config file loads, now and (under `runtime dev`) on each change.
  let load_config: Option<runtime_engine::dev::ConfigLoader> = config_file.clone().map(|path| {
    let (env, state_dir, outbound, coarse_time) = (
      args.env.clone(),
      args.state_dir.clone(),
      outbound.clone(),
      args.coarse_time,
    );
    Box::new(move || {
      if runtime_engine::wrangler::is_wrangler_file(&path) {
        runtime_engine::wrangler::load(
          &path,
          &runtime_engine::wrangler::ProjectOptions {
            env: env.as_deref(),
            state_dir: &state_dir,
            outbound: outbound.clone(),
            coarse_time,
          },
        )
      } else {
        EngineConfig::load(&path, |key| std::env::var(key).ok())
      }
    }) as runtime_engine::dev::ConfigLoader
  });
  let config = match (&load_config, &args.script) {
    (Some(load), _) => load()?,
    (None, Some(script)) => {
      runtime_engine::config::check_against_cage("--memory-limit", args.memory_limit)?;
      let mut config = EngineConfig::single(
        script,
        match args.isolation {
          IsolationArg::Isolate => Isolation::Isolate,
          IsolationArg::Request => Isolation::Request,
        },
        WorkerLimits {
          cpu_ms: args.cpu_limit.max(1),
          startup_ms: args.startup_limit.max(1),
          memory_mb: args.memory_limit.max(1),
          ..WorkerLimits::default()
        },
        args
          .crons
          .iter()
          .map(|c| runtime_engine::config::CronTrigger::parse(c).context("--cron"))
          .collect::<anyhow::Result<_>>()?,
        &args.kv,
        &args.state_dir,
        outbound,
      )?;
      config.workers[0].coarse_time = args.coarse_time;
      config
    }
    (None, None) => anyhow::bail!("a script or --config is required"),
  };
  let listen = config
    .listen
    .unwrap_or(SocketAddr::new(IpAddr::from([127, 0, 0, 1]), 8080));
  let addr = SocketAddr::new(
    args.host.unwrap_or(listen.ip()),
    args.port.unwrap_or(listen.port()),
  );
  serve(ServeOptions {
    config,
    addr,
    threads: args
      .threads
      .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
      .unwrap_or(1)
      .max(1),
    limits: Limits {
      header_read_timeout: Duration::from_secs(args.header_timeout),
      ..Limits::default()
    },
    test_scheduled: args.test_scheduled,
    admin: args.admin,
    access_log: args.access_log,
    dev: dev.then_some(runtime_engine::server::DevOptions {
      config_file,
      load_config,
    }),
    inspect: match (args.inspect, args.inspect_brk) {
      (_, Some(addr)) => Some(InspectOptions {
        addr,
        break_on_start: true,
      }),
      (Some(addr), None) => Some(InspectOptions {
        addr,
        break_on_start: false,
      }),
      (None, None) => None,
    },
  })
}

fn main() -> ExitCode {
  runtime_engine::worker::tune_allocator();
  let cli = Cli::parse();
  // A script's console.debug is shown by default, as Deno and workerd do;
  // the WPT runner shows none of it.
  let default_filter = match cli.command {
    Command::Wpt(_) => runtime_wpt::LOG_FILTER,
    _ => "info,console=debug",
  };
  let filter = tracing_subscriber::EnvFilter::try_from_default_env()
    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
  let logs = tracing_subscriber::fmt()
    .with_writer(std::io::stderr)
    .with_env_filter(filter);
  match cli.log_format {
    LogFormat::Pretty => logs
      .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
      .init(),
    LogFormat::Json => logs.json().flatten_event(true).init(),
  }
  let result = match cli.command {
    Command::Wpt(args) => return runtime_wpt::main(args),
    Command::Serve(args) => serve_command(args, false),
    Command::Dev(args) => serve_command(args, true),
  };
  match result {
    Ok(()) => ExitCode::SUCCESS,
    Err(error) => {
      eprintln!("error: {error:#}");
      ExitCode::FAILURE
    }
  }
}
