use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use runtime::server::{serve, Limits, ServeOptions};

/// A V8-isolate JavaScript runtime for Workers-style scripts.
#[derive(Parser)]
#[command(name = "runtime", version, about)]
struct Cli {
  #[command(subcommand)]
  command: Command,
}

#[derive(Subcommand)]
enum Command {
  /// Serve a script over HTTP: every request goes to its fetch handler.
  Serve {
    /// The script: an ES module with `export default { fetch }` or a
    /// service worker calling `addEventListener("fetch", ...)`.
    script: PathBuf,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Server threads, each with its own isolate (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Seconds a client may take to send its request head.
    #[arg(long, default_value_t = 10)]
    header_timeout: u64,
  },
}

fn main() -> ExitCode {
  tracing_subscriber::fmt()
    .with_writer(std::io::stderr)
    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
    .with_env_filter(
      tracing_subscriber::EnvFilter::try_from_default_env()
        // A script's console.debug is shown by default, as Deno and workerd do.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,console=debug")),
    )
    .init();
  let cli = Cli::parse();
  let result = match cli.command {
    Command::Serve {
      script,
      port,
      host,
      threads,
      header_timeout,
    } => serve(ServeOptions {
      script,
      addr: SocketAddr::new(host, port),
      threads: threads
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
        .max(1),
      limits: Limits {
        header_read_timeout: Duration::from_secs(header_timeout),
        ..Limits::default()
      },
    }),
  };
  match result {
    Ok(()) => ExitCode::SUCCESS,
    Err(error) => {
      eprintln!("error: {error:#}");
      ExitCode::FAILURE
    }
  }
}
