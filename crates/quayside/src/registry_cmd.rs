//! `quayside registry`: the registry on local disk.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use storage::{FsBackend, Store};

use crate::ConfigError;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on; `0.0.0.0:5000` inside a cluster.
    #[arg(long, env = "QUAYSIDE_LISTEN", default_value = "127.0.0.1:5000")]
    listen: SocketAddr,
    /// Directory holding the registry's data, in CNCF distribution's layout (a distribution
    /// `rootdirectory` can be used as it is).
    #[arg(long, env = "QUAYSIDE_DATA_DIR", default_value = "./quayside-data")]
    data_dir: PathBuf,
    /// Largest manifest accepted, in bytes.
    #[arg(long, env = "QUAYSIDE_MAX_MANIFEST_BYTES", default_value_t = 4 * 1024 * 1024)]
    max_manifest_bytes: u64,
    /// fsync blob data before it becomes visible, so committed blobs survive a power loss
    /// (a killed process never loses them either way).
    #[arg(long, env = "QUAYSIDE_FSYNC", default_value_t = true, action = clap::ArgAction::Set)]
    fsync: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir).map_err(|e| {
        ConfigError(format!(
            "--data-dir / QUAYSIDE_DATA_DIR {}: cannot create it ({e}); point it at a writable directory",
            args.data_dir.display()
        ))
    })?;
    let backend = FsBackend::new(&args.data_dir, args.fsync);
    let store = Store::new(Arc::new(backend), args.max_manifest_bytes);
    let app = registry::router(registry::App::new(store));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| {
            ConfigError(format!(
                "--listen / QUAYSIDE_LISTEN {}: cannot listen ({e}); pick a free address",
                args.listen
            ))
        })?;
    tracing::info!(
        listen = %listener.local_addr().unwrap_or(args.listen),
        data_dir = %args.data_dir.display(),
        fsync = args.fsync,
        "registry serving"
    );
    registry::serve(listener, app, crate::shutdown_signal())
        .await
        .context("serving HTTP")
}
