//! The token refresher: keeps a `kubernetes.io/dockerconfigjson` Secret named
//! `<prefix>-<location>` holding a valid registry credential in every app namespace (those
//! labelled `heritage=deis` by default). Drop-in for deis-registry-token-refresher, without its
//! flaws (deis-registry-spec §4.6): it watches instead of polling, heals deleted or edited
//! secrets at once, skips namespaces being deleted, refreshes by the token's real expiry, retries
//! with back-off instead of exiting, and elects a leader so replicas never fight.
//!
//! Shape: [`tokens::keep_fresh`] owns the credential (one fetch per cycle); a kube-rs
//! `Controller` over namespaces, also triggered by changes to the secrets and by every new
//! credential, runs [`reconcile::reconcile`] per namespace. Both run only on the replica holding
//! the Lease.
//!
//! Dependencies, and why:
//! - `kube` (client + runtime) and `k8s-openapi`: the Kubernetes client, watcher, reflector and
//!   controller (work queue with de-duplication, concurrency, requeues). `unstable-runtime` is on
//!   for `Controller::for_stream` / `watches_stream`: the watches are ours, so one secret watch
//!   feeds both the cache and the triggers (with two, a trigger could run before the cache saw
//!   the change), and both caches keep slimmed objects (`reconcile::slim_*`).
//! - `sha2`: the secret cache keeps a digest of each secret's data instead of the token.
//! - `kube-lease-manager`: Lease-based leader election, with the lease held through
//!   server-side-apply ownership of `holderIdentity`.
//! - `prometheus-client` (metrics), `axum` (probes and /metrics), `rand` (jitter).
//! - `workflow` (reads the mounted registry-secret: this is Workflow's refresher), `images` (the
//!   location types), `secrets` (the mounted directory).

pub mod http;
mod leader;
mod metrics;
mod reconcile;
pub mod schedule;
mod tokens;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use credentials::Credential;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Controller, WatchStreamExt, controller, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;

pub use leader::Lease;
pub use metrics::Metrics;
pub use reconcile::FIELD_MANAGER;
pub use tokens::Source;

#[derive(Clone, Debug)]
pub struct Config {
    /// `<DEIS_REGISTRY_SECRET_PREFIX>-<DEIS_REGISTRY_LOCATION>`.
    pub secret_name: String,
    /// Label selector for app namespaces.
    pub selector: String,
    /// When not empty, only these namespaces.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// `DEIS_TOKEN_REFRESH_TIME`: a fixed interval instead of half the token's lifetime.
    pub token_refresh: Option<Duration>,
    /// How often every namespace is compared with the cache again (`DEIS_NAMESPACE_REFRESH_TIME`).
    pub resync: Duration,
    /// ServiceAccounts whose `imagePullSecrets` get the secret (empty: none are touched).
    pub service_accounts: Vec<String>,
    /// Namespaces written at the same time.
    pub concurrency: u16,
    /// How long one credential fetch may take before it counts as failed and is retried. The
    /// SDKs bound connecting, not waiting: an issuer that accepts and never answers would
    /// otherwise hold the refresh loop while the tokens in every namespace run out.
    pub fetch_timeout: Duration,
    /// `None`: run as the only replica.
    pub lease: Option<Lease>,
}

impl Config {
    fn selects(&self, namespace: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|n| n == namespace))
            && !self.exclude.iter().any(|n| n == namespace)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
}

/// State the probes and metrics read while the refresher runs.
pub struct Shared {
    pub metrics: Metrics,
    started: SystemTime,
    credential: watch::Sender<Option<Credential>>,
    leading: AtomicBool,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            metrics: Metrics::default(),
            started: SystemTime::now(),
            credential: watch::Sender::new(None),
            leading: AtomicBool::new(false),
        }
    }
}

impl Shared {
    fn credential(&self) -> Option<Credential> {
        self.credential.borrow().clone()
    }

    /// Hands a fresh credential to the namespaces (which wake only if it differs).
    fn publish(&self, credential: Credential) {
        let now = SystemTime::now();
        self.metrics.last_success.set(metrics::unix_seconds(now));
        self.metrics
            .token_expiry
            .set(credential.expires_at.map_or(0.0, metrics::unix_seconds));
        self.credential.send_if_modified(|current| {
            let changed = current.as_ref() != Some(&credential);
            *current = Some(credential);
            changed
        });
    }

    fn forget_expired(&self) {
        self.credential.send_if_modified(|current| {
            let expired = current
                .as_ref()
                .is_some_and(|c| !c.is_valid_at(SystemTime::now()));
            if expired {
                *current = None;
            }
            expired
        });
    }

    /// Ready: standing by, or leading with a credential that can be written.
    pub fn ready(&self) -> bool {
        !self.leading.load(Ordering::Relaxed)
            || self
                .credential()
                .is_some_and(|c| c.is_valid_at(SystemTime::now()))
    }

    fn set_leading(&self, leading: bool) {
        self.leading.store(leading, Ordering::Relaxed);
        self.metrics.leader.set(i64::from(leading));
        if !leading {
            self.credential.send_replace(None);
        }
    }

    pub fn metrics_text(&self) -> String {
        self.metrics.encode(self.started)
    }
}

/// Runs until `shutdown` resolves (then gives the lease up) or leader election fails.
pub async fn run(
    client: Client,
    config: Config,
    source: Source,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let config = Arc::new(config);
    let work = || {
        lead(
            client.clone(),
            config.clone(),
            source.clone(),
            shared.clone(),
        )
    };
    match config.lease.clone() {
        None => {
            shared.set_leading(true);
            tokio::select! {
                () = work() => Ok(()),
                () = shutdown => Ok(()),
            }
        }
        Some(lease) => leader::run_elected(client.clone(), &lease, &shared, work, shutdown).await,
    }
}

/// The leader's work: the credential loop and the namespace controller, until dropped.
async fn lead(client: Client, config: Arc<Config>, source: Source, shared: Arc<Shared>) {
    let secrets_api: Api<Secret> = Api::all(client.clone());
    let secrets_listed = Arc::new(AtomicBool::new(false));
    let (reader, writer) = reflector::store();
    let secret_events = watcher(
        secrets_api,
        watcher::Config::default().fields(&format!("metadata.name={}", config.secret_name)),
    )
    .default_backoff()
    .modify(reconcile::slim_secret)
    .reflect(writer)
    .inspect({
        let listed = secrets_listed.clone();
        move |event| {
            if let Ok(watcher::Event::InitDone) = event {
                listed.store(true, Ordering::Release);
            }
        }
    })
    .touched_objects();
    let credential_changes =
        futures_util::stream::unfold(shared.credential.subscribe(), |mut rx| async {
            rx.changed().await.ok().map(|()| ((), rx))
        });
    let (namespace_reader, namespace_writer) = reflector::store();
    let namespace_events = watcher(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default().labels(&config.selector),
    )
    .default_backoff()
    .modify(reconcile::slim_namespace)
    .reflect(namespace_writer)
    .applied_objects();
    let ctx = Arc::new(reconcile::Context {
        client,
        config: config.clone(),
        shared: shared.clone(),
        secrets: reader,
        secrets_listed,
        patched: Default::default(),
        failures: Default::default(),
    });
    let controller = Controller::for_stream(namespace_events, namespace_reader)
        .with_config(controller::Config::default().concurrency(config.concurrency))
        .watches_stream(secret_events, |secret: Secret| {
            secret
                .namespace()
                .map(|ns| ObjectRef::<Namespace>::new(&ns))
        })
        .reconcile_all_on(credential_changes)
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| {
            // Reconcile failures are counted and logged by the error policy; watch failures (the
            // API unreachable, RBAC missing) only show here, and the watcher retries them.
            if let Err(controller::Error::QueueError(e)) = result {
                shared.metrics.error("kube");
                tracing::warn!(error = %e, "watching namespaces or secrets failed; retrying");
            }
            std::future::ready(())
        });
    tokio::join!(tokens::keep_fresh(&source, &config, &shared), controller);
}
