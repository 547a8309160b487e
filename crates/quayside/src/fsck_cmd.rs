//! `quayside fsck`: reads every blob and checks that its bytes hash to its digest; prints the
//! report as JSON. Exits 1 when corrupt blobs remain (found, and `--delete-corrupt` not given).

use crate::registry_cmd::StorageArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Delete blobs whose bytes do not match their digest (they become absent: a push of the
    /// genuine bytes restores them).
    #[arg(long, env = "QUAYSIDE_FSCK_DELETE_CORRUPT", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    delete_corrupt: bool,
    /// Accept storage without any repository (a registry nobody pushed to yet); without it
    /// that is refused as a likely wrong data dir or bucket.
    #[arg(long, env = "QUAYSIDE_ALLOW_EMPTY_STORAGE", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    allow_empty: bool,
    #[command(flatten)]
    storage: StorageArgs,
}

/// Corrupt blobs found and kept.
#[derive(Debug, thiserror::Error)]
#[error("{0} blob(s) do not match their digest; rerun with --delete-corrupt to remove them")]
pub struct CorruptBlobs(pub usize);

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (store, storage) = args.storage.open_existing(args.allow_empty).await?;
    let started = std::time::Instant::now();
    let report = store.fsck(args.delete_corrupt).await?;
    tracing::info!(%storage, seconds = started.elapsed().as_secs(), "fsck done");
    println!("{}", serde_json::to_string(&report)?);
    let kept = report.corrupt.len() - report.removed;
    if kept > 0 {
        return Err(CorruptBlobs(kept).into());
    }
    Ok(())
}
