//! Registry credentials for each Workflow registry location, with the time they stop working.
//!
//! A [`Provider`] is built once from a [`images::Location`] and asked for a fresh
//! [`Credential`] whenever the caller decides (the token refresher asks at half-life, the kubelet
//! plugin once per image pull it is asked about). Providers never cache: every
//! [`Provider::fetch`] is one request to the issuer, so callers can count and schedule them.
//!
//! Dependencies, and why:
//! - `aws-config` + `aws-sdk-ecr`: the AWS credential chain (static keys, env, profile, web
//!   identity/IRSA, ECS, IMDS) and SigV4 are large and security-sensitive; the SDK is the reference
//!   implementation. Its default TLS stack is replaced by `aws-smithy-http-client` on rustls+ring so
//!   the binary carries one crypto library (no aws-lc C build).
//! - `gcp_auth`: signs the RS256 JWT-bearer assertion with the key's private key and posts it to
//!   the key's own `token_uri` (so a test can stand in for Google). One `CustomServiceAccount` is
//!   made per fetch because it caches tokens until expiry and we decide when to refresh.
//! - `images` (the location types and dockerconfigjson shapes), `secrets` (redacted values),
//!   `tokio` (one lock held across a renewal, so concurrent callers share one fetch).

mod ecr;
mod fresh;
mod gcr;
pub mod kubelet;

use std::time::{Duration, SystemTime};

use images::{DOCKER_HUB, Location, dockerconfigjson, refresher_dockerconfigjson};
use secrets::Secret;

pub use ecr::{EcrProvider, Repository};
pub use fresh::{Fresh, Issuer};
pub use gcr::GcrProvider;

/// What a registry accepts, for how long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    /// The key in a dockerconfigjson `auths` map: a host (`gcr.io`), or Docker Hub's URL.
    pub registry: String,
    pub username: String,
    pub password: Secret,
    /// `None`: long-lived (username/password registries).
    pub expires_at: Option<SystemTime>,
    /// How Workflow wrote this credential into a pull secret.
    pub secret_style: SecretStyle,
}

/// The `.dockerconfigjson` shapes Workflow wrote (deis-registry-spec §2.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretStyle {
    /// The controller's: `{"auths":{"<registry>":{"auth":…}}}`.
    Plain,
    /// The token refresher's (ECR, GCR): keyed by `key` (ECR's proxyEndpoint, with its scheme)
    /// and with `"email":"none@none.com"`.
    Refresher { key: String },
}

impl Credential {
    /// The `.dockerconfigjson` of a `kubernetes.io/dockerconfigjson` Secret, in the shape
    /// Workflow wrote it ([`SecretStyle`]).
    pub fn docker_config_json(&self) -> Secret {
        let (user, password) = (&self.username, self.password.expose());
        match &self.secret_style {
            SecretStyle::Plain => dockerconfigjson(&self.registry, user, password),
            SecretStyle::Refresher { key } => refresher_dockerconfigjson(key, user, password),
        }
    }

    /// Time left at `now`; `None` for long-lived credentials, zero once expired.
    pub fn remaining(&self, now: SystemTime) -> Option<Duration> {
        self.expires_at
            .map(|at| at.duration_since(now).unwrap_or(Duration::ZERO))
    }

    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        self.remaining(now) != Some(Duration::ZERO)
    }
}

/// Why a fetch failed. The kind is a metrics label; the message names the setting to fix and
/// never carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The issuer refused the credentials we hold (wrong key, no permission).
    #[error("{0}")]
    Denied(String),
    /// The issuer could not be reached or failed; worth retrying.
    #[error("{0}")]
    Unavailable(String),
    /// The configuration cannot work (a malformed key); retrying will not help.
    #[error("{0}")]
    Config(String),
}

impl FetchError {
    pub fn kind(&self) -> &'static str {
        match self {
            FetchError::Denied(_) => "denied",
            FetchError::Unavailable(_) => "unavailable",
            FetchError::Config(_) => "config",
        }
    }
}

/// Settings that are not part of Workflow's registry-secret.
#[derive(Clone, Debug)]
pub struct Options {
    /// Send AWS requests here instead of the regional endpoint (tests, VPC endpoints).
    pub aws_endpoint: Option<String>,
    /// How long one AWS request attempt may wait for its answer before it fails (and the SDK
    /// retries it). The SDK's own default bounds connecting only.
    pub aws_attempt_timeout: std::time::Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            aws_endpoint: None,
            aws_attempt_timeout: std::time::Duration::from_secs(20),
        }
    }
}

/// The issuer of credentials for one registry location.
#[derive(Debug)]
pub enum Provider {
    Ecr(EcrProvider),
    Gcr(GcrProvider),
    /// Username/password registries: the credential is the configuration.
    Static(Credential),
}

impl Provider {
    /// `None` for on-cluster, which needs no credentials.
    pub async fn new(location: &Location, options: &Options) -> Option<Provider> {
        Some(match location {
            Location::OnCluster { .. } => return None,
            Location::OffCluster(o) => Provider::Static(Credential {
                registry: if o.hostname.is_empty() {
                    DOCKER_HUB.to_owned()
                } else {
                    o.hostname.clone()
                },
                username: o.username.clone(),
                password: o.password.clone(),
                expires_at: None,
                secret_style: SecretStyle::Plain,
            }),
            Location::Ecr(e) => Provider::Ecr(EcrProvider::new(e, options).await),
            Location::Gcr(g) => Provider::Gcr(GcrProvider::new(g)),
        })
    }

    /// One request to the issuer (none for static credentials).
    pub async fn fetch(&self) -> Result<Credential, FetchError> {
        match self {
            Provider::Ecr(p) => p.fetch().await,
            Provider::Gcr(p) => p.fetch().await,
            Provider::Static(c) => Ok(c.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_arithmetic() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let mut c = Credential {
            registry: "r".into(),
            username: "u".into(),
            password: Secret::new("p"),
            expires_at: None,
            secret_style: SecretStyle::Plain,
        };
        assert_eq!(c.remaining(now), None);
        assert!(c.is_valid_at(now));
        c.expires_at = Some(now + Duration::from_secs(60));
        assert_eq!(c.remaining(now), Some(Duration::from_secs(60)));
        c.expires_at = Some(now - Duration::from_secs(60));
        assert_eq!(c.remaining(now), Some(Duration::ZERO));
        assert!(!c.is_valid_at(now));
        assert!(!format!("{c:?}").contains("\"p\""));
    }

    #[tokio::test]
    async fn off_cluster_defaults_to_docker_hub() {
        let location = Location::OffCluster(images::location::OffCluster {
            hostname: String::new(),
            organization: "o".into(),
            username: "u".into(),
            password: Secret::new("p"),
        });
        let p = Provider::new(&location, &Options::default()).await.unwrap();
        let c = p.fetch().await.unwrap();
        assert_eq!(c.registry, DOCKER_HUB);
        assert_eq!(
            c.docker_config_json().expose(),
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"}}}"#
        );
    }
}
