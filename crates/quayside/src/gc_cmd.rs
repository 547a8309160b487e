//! `quayside gc`: one garbage collection over the registry's storage, safe while registries
//! serve it (see `storage::gc`); prints what it did (or would do) as JSON.

use crate::registry_cmd::{GcArgs, StorageArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Report what would be deleted and the bytes reclaimed; delete nothing.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    dry_run: bool,
    #[command(flatten)]
    gc: GcArgs,
    /// Accept storage without any repository (a registry nobody pushed to yet); without it
    /// that is refused as a likely wrong data dir or bucket.
    #[arg(long, env = "QUAYSIDE_ALLOW_EMPTY_STORAGE", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    allow_empty: bool,
    #[command(flatten)]
    storage: StorageArgs,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (store, storage) = args.storage.open_existing(args.allow_empty).await?;
    let started = std::time::Instant::now();
    let report = store.gc(&args.gc.options(args.dry_run)).await?;
    tracing::info!(%storage, seconds = (started.elapsed().as_secs_f64() * 1e3).round() / 1e3, "garbage collection done");
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
