//! `quayside token-refresher`: keeps `<prefix>-<location>` pull secrets fresh in every app
//! namespace (drop-in for deis-registry-token-refresher).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use refresher::{Config, Lease, Shared, Source};
use secrets::SecretDir;

use crate::ConfigError;
use crate::credentials_cmd::LocationArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    location: LocationArgs,
    /// Secrets are named `<prefix>-<location>`.
    #[arg(
        long,
        env = "DEIS_REGISTRY_SECRET_PREFIX",
        default_value = "private-registry"
    )]
    secret_prefix: String,
    /// Minutes between refreshes instead of half the token's lifetime (empty: from the expiry).
    #[arg(long, env = "DEIS_TOKEN_REFRESH_TIME", default_value = "")]
    token_refresh_time: String,
    /// Seconds between full comparisons of every namespace with its secret (the watch applies
    /// changes at once; this only repairs what a lost event missed).
    #[arg(long, env = "DEIS_NAMESPACE_REFRESH_TIME", default_value = "300")]
    namespace_refresh_time: String,
    /// Label selector of app namespaces.
    #[arg(
        long,
        env = "QUAYSIDE_NAMESPACE_SELECTOR",
        default_value = "heritage=deis"
    )]
    namespace_selector: String,
    /// Only these namespaces (comma-separated; empty: all selected).
    #[arg(
        long,
        env = "QUAYSIDE_INCLUDE_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    include_namespaces: Vec<String>,
    /// Never these namespaces (comma-separated).
    #[arg(
        long,
        env = "QUAYSIDE_EXCLUDE_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    exclude_namespaces: Vec<String>,
    /// ServiceAccounts whose imagePullSecrets get the secret appended (comma-separated; empty:
    /// none are touched).
    #[arg(
        long,
        env = "QUAYSIDE_PULL_SECRET_SERVICE_ACCOUNTS",
        value_delimiter = ',',
        default_value = ""
    )]
    service_accounts: Vec<String>,
    /// Namespaces written at the same time.
    #[arg(long, env = "QUAYSIDE_REFRESHER_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// Address for /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "QUAYSIDE_REFRESHER_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    listen: String,
    /// Elect a leader with a Lease, so several replicas never write at once.
    #[arg(long, env = "QUAYSIDE_LEADER_ELECT", default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    leader_elect: bool,
    #[arg(
        long,
        env = "QUAYSIDE_LEASE_NAME",
        default_value = "quayside-token-refresher"
    )]
    lease_name: String,
    /// The Lease's namespace (default: the pod's own namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This replica's name in the Lease (default: the host name, i.e. the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// How long one token fetch may take before it counts as failed and is retried.
    #[arg(long, env = "QUAYSIDE_TOKEN_FETCH_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    fetch_timeout: Duration,
    /// How long a leader that stopped renewing keeps the lease.
    #[arg(long, env = "QUAYSIDE_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    lease_duration: Duration,
}

const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

fn minutes(name: &str, value: &str) -> Result<Option<Duration>, ConfigError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    match value.parse::<u64>() {
        Ok(m) if m > 0 => Ok(Some(Duration::from_secs(m * 60))),
        _ => Err(ConfigError(format!(
            "{name}={value:?} is not a whole number of minutes above 0: leave it empty to refresh at half the token's lifetime"
        ))),
    }
}

fn seconds(name: &str, value: &str) -> Result<Duration, ConfigError> {
    let value = value.trim();
    match value.parse::<u64>() {
        Ok(s) if s > 0 => Ok(Duration::from_secs(s)),
        _ => Err(ConfigError(format!(
            "{name}={value:?} is not a whole number of seconds above 0 (the chart sets 5)"
        ))),
    }
}

fn non_empty(list: Vec<String>) -> Vec<String> {
    list.into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

impl Args {
    fn config(&self) -> Result<Config, ConfigError> {
        let lease = self.leader_elect.then(|| Lease {
            namespace: self.lease_namespace.clone().unwrap_or_else(|| {
                std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE)
                    .map(|s| s.trim().to_owned())
                    .unwrap_or_else(|_| "deis".to_owned())
            }),
            name: self.lease_name.clone(),
            identity: self.identity.clone().unwrap_or_else(hostname),
            duration: self.lease_duration,
        });
        Ok(Config {
            secret_name: format!("{}-{}", self.secret_prefix, self.location.location.trim()),
            selector: self.namespace_selector.clone(),
            include: non_empty(self.include_namespaces.clone()),
            exclude: non_empty(self.exclude_namespaces.clone()),
            token_refresh: minutes("DEIS_TOKEN_REFRESH_TIME", &self.token_refresh_time)?,
            resync: seconds("DEIS_NAMESPACE_REFRESH_TIME", &self.namespace_refresh_time)?,
            service_accounts: non_empty(self.service_accounts.clone()),
            concurrency: self.concurrency.max(1),
            fetch_timeout: self.fetch_timeout,
            lease,
        })
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("quayside-{}", std::process::id()))
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = args.config()?;
    // Bad settings stop the start, with every problem at once; later changes to the mounted
    // secret are picked up while running.
    if let images::Location::OnCluster { .. } = args.location.load()? {
        tracing::info!(
            "DEIS_REGISTRY_LOCATION=on-cluster: the in-cluster registry needs no pull secrets; nothing to refresh"
        );
        return Ok(());
    }
    let source = Source {
        location: args.location.location.clone(),
        creds: SecretDir::new(&args.location.registry_secret_dir),
        options: args.location.options(),
    };
    let client = kube::Client::try_default().await.map_err(|e| {
        ConfigError(format!(
            "no Kubernetes API to talk to ({e}): run in a pod with a ServiceAccount, or set KUBECONFIG"
        ))
    })?;
    let shared = Arc::new(Shared::default());
    let listener =
        crate::connection_args::bind(&args.listen, "--listen / QUAYSIDE_REFRESHER_LISTEN").await?;
    tracing::info!(
        listen = %listener.local_addr().map_or(args.listen.clone(), |a| a.to_string()),
        secret = %config.secret_name,
        selector = %config.selector,
        leader_election = config.lease.is_some(),
        "token refresher started"
    );
    let http = tokio::spawn(serve::serve(
        listener,
        refresher::http::router(shared.clone()),
        serve::Limits::new(Duration::from_secs(30)),
        crate::shutdown_signal(),
    ));
    let result = refresher::run(client, config, source, shared, crate::shutdown_signal()).await;
    http.abort();
    result.context("token refresher")?;
    Ok(())
}
