//! `quayside`: one binary, one subcommand per part of the registry layer.
//!
//! `main` reads as a table of contents: parse flags, set up logging, run the subcommand until it
//! ends or a signal arrives. Subcommands are thin: they turn flags into the crates' types and call
//! them. `anyhow` lives only here, at the edge.
//!
//! Dependencies: `clap` (derive, with an env var per flag so the same settings work from the
//! command line and from a Kubernetes manifest), `tracing-subscriber` (text or JSON logs).

mod check_cmd;
mod connection_args;
mod credentials_cmd;
mod fsck_cmd;
mod gc_cmd;
mod image_cmd;
mod proxy_cmd;
mod refresher_cmd;
mod registry_cmd;
mod settings;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "quayside",
    version,
    about = "The container-registry layer of a Heroku-style PaaS"
)]
struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "QUAYSIDE_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    /// Threads for blocking file I/O. Each does one block of work at a time and no client waits
    /// on one, so this bounds disk concurrency, not clients; when all are busy, I/O queues.
    #[arg(
        long,
        global = true,
        env = "QUAYSIDE_IO_THREADS",
        default_value_t = 512
    )]
    io_threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the OCI Distribution API (Docker Registry API v2).
    Registry(Box<registry_cmd::Args>),
    /// Node-local proxy (127.0.0.1:5555) to the registry Service.
    Proxy(proxy_cmd::Args),
    /// Image names and pull secrets per registry location (the controller's and builder's rules).
    Image(image_cmd::Args),
    /// Keep `<prefix>-<location>` pull secrets fresh in every app namespace (ecr, gcr, off-cluster).
    TokenRefresher(Box<refresher_cmd::Args>),
    /// Print the registry credential the configured location gives now (or act as a kubelet
    /// credential provider).
    Credentials(credentials_cmd::Args),
    /// Delete blobs no manifest references (and optionally untagged manifests), online.
    Gc(Box<gc_cmd::Args>),
    /// Check that every stored blob hashes to its digest (and optionally delete those that do not).
    Fsck(Box<fsck_cmd::Args>),
    /// Tell, one line per check, what works and what is misconfigured for the configured
    /// location (storage, registry-secret, credentials, RBAC, registry and proxy); exit 1 when
    /// anything failed.
    Check(Box<check_cmd::Args>),
}

/// Exit code for a configuration error (sysexits' EX_USAGE): the pod's logs say which key to fix.
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli: Cli = settings::parse();
    init_logging(cli.log_format);
    // One TLS provider for every HTTPS client in the process (object storage, cloud APIs): ring,
    // so aws-lc's C build is never needed. Failure means one was installed already: fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(cli.io_threads.max(1))
        .build();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Registry(args) => registry_cmd::run(*args).await,
            Command::Proxy(args) => proxy_cmd::run(args).await,
            Command::Image(args) => image_cmd::run(args).await,
            Command::TokenRefresher(args) => refresher_cmd::run(*args).await,
            Command::Credentials(args) => credentials_cmd::run(args).await,
            Command::Gc(args) => gc_cmd::run(*args).await,
            Command::Fsck(args) => fsck_cmd::run(*args).await,
            Command::Check(args) => check_cmd::run(*args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<ConfigError>() => {
            tracing::error!("configuration: {e:#}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A setting that cannot work; the message names the key and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Resolves when SIGINT or SIGTERM arrives (Kubernetes sends SIGTERM before killing a pod).
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: finishing requests in flight");
}
