//! Garbage collection on a schedule inside the registry (`--gc-interval`), counted in the
//! metrics. Every replica may run it: the sweep is safe against another sweep (deleting what is
//! already gone succeeds) and against pushes (see `storage::gc`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use storage::{GcOptions, Store};

use crate::metrics::Metrics;

pub async fn every(interval: Duration, store: Store, options: GcOptions, metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(interval);
    tick.tick().await; // not at start: let the registry serve first
    loop {
        tick.tick().await;
        let started = Instant::now();
        metrics.gc.runs.inc();
        match store.gc(&options).await {
            Ok(r) => {
                metrics.gc.blobs_deleted.inc_by(r.blobs_deleted as u64);
                metrics.gc.bytes_reclaimed.inc_by(r.bytes_reclaimed);
                metrics
                    .gc
                    .manifests_deleted
                    .inc_by(r.manifests_deleted as u64);
                metrics.gc.uploads_purged.inc_by(r.uploads_purged as u64);
                tracing::info!(
                    blobs_deleted = r.blobs_deleted,
                    bytes_reclaimed = r.bytes_reclaimed,
                    manifests_deleted = r.manifests_deleted,
                    uploads_purged = r.uploads_purged,
                    blobs = r.blobs,
                    seconds = (started.elapsed().as_secs_f64() * 1e3).round() / 1e3,
                    "garbage collection"
                );
            }
            Err(e) => {
                metrics.gc.failures.inc();
                tracing::warn!(error = %e, "garbage collection failed; next run in {interval:?}");
            }
        }
        metrics
            .gc
            .last_duration_seconds
            .set(started.elapsed().as_secs_f64());
    }
}
