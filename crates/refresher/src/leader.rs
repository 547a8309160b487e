//! Leader election on a `coordination.k8s.io/v1` Lease: only the holder fetches credentials and
//! writes secrets, so two replicas never fight over them; a standby takes over within the lease
//! duration when the leader dies, at once when it shuts down (the lease is released).

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;

use crate::{Error, Shared};

#[derive(Clone, Debug)]
pub struct Lease {
    pub namespace: String,
    pub name: String,
    /// Unique per replica: the pod name.
    pub identity: String,
    /// How long a silent leader keeps the lease.
    pub duration: Duration,
}

/// Runs `work` while this replica holds the lease; drops it when the lease is lost and starts it
/// again when regained. Returns when `shutdown` resolves, after releasing the lease.
pub async fn run_elected<W, F>(
    client: Client,
    lease: &Lease,
    shared: &Arc<Shared>,
    work: W,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error>
where
    W: Fn() -> F,
    F: Future<Output = ()>,
{
    let duration = lease.duration.as_secs().max(2);
    let manager = LeaseManagerBuilder::new(client, &lease.name)
        .with_namespace(&lease.namespace)
        .with_identity(&lease.identity)
        .with_duration(duration)
        .with_grace((duration / 3).max(1))
        .build()
        .await?;
    let (mut leading, handle) = manager.watch().await;
    tracing::info!(lease = %lease.name, identity = %lease.identity, "waiting for the lease");
    let cycle = async {
        loop {
            if leading.wait_for(|l| *l).await.is_err() {
                return;
            }
            tracing::info!(identity = %lease.identity, "holding the lease: refreshing");
            shared.set_leading(true);
            tokio::select! {
                () = work() => return,
                _ = leading.wait_for(|l| !*l) => {
                    tracing::warn!(identity = %lease.identity, "lost the lease: standing by");
                    shared.set_leading(false);
                }
            }
        }
    };
    tokio::select! {
        () = cycle => {},
        () = shutdown => {},
    }
    shared.set_leading(false);
    // Dropping the receiver makes the manager release the lease; give it a moment to do so.
    drop(leading);
    match tokio::time::timeout(Duration::from_secs(5), handle).await {
        Ok(Ok(Err(e))) => Err(e.into()),
        _ => Ok(()),
    }
}
