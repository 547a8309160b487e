//! Keeps one valid credential in [`Shared`]: fetches at about half its lifetime, retries with
//! back-off, re-reads the mounted registry-secret when it changes. One fetch per cycle, however
//! many namespaces there are: the namespaces read the credential from here.

use std::time::SystemTime;

use credentials::Provider;
use images::Location;
use secrets::SecretDir;

use crate::schedule::{SECRET_POLL, after_failure, after_success};
use crate::{Config, Shared};

/// Where the credentials come from: the location and its mounted registry-secret.
#[derive(Clone, Debug)]
pub struct Source {
    /// `DEIS_REGISTRY_LOCATION`.
    pub location: String,
    pub creds: SecretDir,
    pub options: credentials::Options,
}

impl Source {
    pub fn load(&self) -> Result<Location, Vec<String>> {
        workflow::location::load(&self.location, &self.creds, 0)
    }
}

/// Runs until dropped.
pub async fn keep_fresh(source: &Source, config: &Config, shared: &Shared) {
    let mut current: Option<(Location, Provider)> = None;
    let mut failures = 0u32;
    loop {
        reload(source, &mut current).await;
        let wait = match &current {
            Some((_, provider)) => match fetch(provider, config, shared).await {
                Some(credential) => {
                    failures = 0;
                    let remaining = credential.remaining(SystemTime::now());
                    shared.publish(credential);
                    after_success(remaining, config.token_refresh, rand::random())
                }
                None => {
                    failures += 1;
                    after_failure(failures)
                }
            },
            None => {
                failures += 1;
                after_failure(failures)
            }
        };
        shared.forget_expired();
        wait_or_secret_change(source, current.as_ref().map(|(l, _)| l), wait).await;
    }
}

async fn reload(source: &Source, current: &mut Option<(Location, Provider)>) {
    match source.load() {
        Ok(location) if current.as_ref().is_some_and(|(l, _)| *l == location) => {}
        Ok(location) => {
            if current.is_some() {
                tracing::info!(dir = %source.creds.dir().display(), "registry-secret changed: using the new settings");
            }
            match Provider::new(&location, &source.options).await {
                Some(provider) => *current = Some((location, provider)),
                None => tracing::error!("DEIS_REGISTRY_LOCATION=on-cluster needs no pull secrets"),
            }
        }
        // Keep running on the last good settings: a half-written secret update is common.
        Err(errors) => {
            for e in errors {
                tracing::error!("registry-secret: {e}");
            }
        }
    }
}

async fn fetch(
    provider: &Provider,
    config: &Config,
    shared: &Shared,
) -> Option<credentials::Credential> {
    shared.metrics.token_fetches.inc();
    let Ok(fetched) = tokio::time::timeout(config.fetch_timeout, provider.fetch()).await else {
        shared.metrics.error("timeout");
        tracing::warn!(
            timeout = %humantime::format_duration(config.fetch_timeout),
            "the issuer did not answer in time; the secrets keep the last good credential while it is valid"
        );
        return None;
    };
    match fetched {
        Ok(c) if c.is_valid_at(SystemTime::now()) => Some(c),
        Ok(c) => {
            shared.metrics.error("expired");
            tracing::warn!(
                expires_at = %c.expires_at.map(humantime::format_rfc3339_seconds).map(|t| t.to_string()).unwrap_or_default(),
                "the issuer returned a credential that has already expired (is the clock right?); not writing it"
            );
            None
        }
        Err(e) => {
            shared.metrics.error(e.kind());
            tracing::warn!(error = %e, "fetching credentials failed; the secrets keep the last good credential while it is valid");
            None
        }
    }
}

async fn wait_or_secret_change(
    source: &Source,
    running: Option<&Location>,
    wait: std::time::Duration,
) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let step = SECRET_POLL.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        if step.is_zero() {
            return;
        }
        tokio::time::sleep(step).await;
        match (source.load(), running) {
            (Ok(now), Some(running)) if now != *running => return,
            (Ok(_), None) => return,
            _ => {}
        }
    }
}
