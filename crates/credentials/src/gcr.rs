//! GCR and Artifact Registry: an OAuth access token for the service-account key, used as the
//! password of the user `oauth2accesstoken`.

use std::time::SystemTime;

use gcp_auth::{CustomServiceAccount, TokenProvider};
use images::location::Gcr;
use secrets::Secret;

use crate::{Credential, FetchError};

/// What Workflow asked for: pushing to gcr.io needs write access to its storage bucket.
const GCR_SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_write";
/// Artifact Registry checks IAM on the repository, which needs the cloud-platform scope.
const ARTIFACT_REGISTRY_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

#[derive(Debug)]
pub struct GcrProvider {
    key_json: Secret,
    registry: String,
}

impl GcrProvider {
    pub fn new(config: &Gcr) -> GcrProvider {
        GcrProvider {
            key_json: config.key_json.clone(),
            registry: config
                .hostname
                .as_deref()
                .map(|h| h.split_once("://").map_or(h, |(_, host)| host))
                .unwrap_or("gcr.io")
                .trim_end_matches('/')
                .to_owned(),
        }
    }

    fn scope(&self) -> &'static str {
        if self.registry.ends_with("-docker.pkg.dev") {
            ARTIFACT_REGISTRY_SCOPE
        } else {
            GCR_SCOPE
        }
    }

    pub async fn fetch(&self) -> Result<Credential, FetchError> {
        let account = CustomServiceAccount::from_json(self.key_json.expose()).map_err(|e| {
            FetchError::Config(format!(
                "key.json in the registry-secret is not a usable service-account key: {e}"
            ))
        })?;
        let token = account.token(&[self.scope()]).await.map_err(|e| {
            // gcp_auth reports the token endpoint's answer; 4xx there means the key was refused.
            let text = e.to_string();
            if text.contains("invalid_grant") || text.contains("unauthorized") {
                FetchError::Denied(format!(
                    "the OAuth token endpoint refused the key.json in the registry-secret: {text}"
                ))
            } else {
                FetchError::Unavailable(format!("fetching a Google access token failed: {text}"))
            }
        })?;
        Ok(Credential {
            registry: self.registry.clone(),
            username: "oauth2accesstoken".into(),
            password: Secret::new(token.as_str()),
            expires_at: Some(SystemTime::from(token.expires_at())),
            secret_style: crate::SecretStyle::Refresher {
                key: self.registry.clone(),
            },
        })
    }
}
