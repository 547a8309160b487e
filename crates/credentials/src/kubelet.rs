//! The kubelet's credential-provider exec protocol (credentialprovider.kubelet.k8s.io/v1): the
//! kubelet writes a `CredentialProviderRequest` for one image to our stdin and caches the
//! `CredentialProviderResponse` we print for `cacheDuration`.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::Credential;

pub const API_VERSION: &str = "credentialprovider.kubelet.k8s.io/v1";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub api_version: String,
    pub kind: String,
    pub image: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    api_version: &'static str,
    kind: &'static str,
    cache_key_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_duration: Option<String>,
    auth: std::collections::BTreeMap<String, AuthConfig>,
}

/// `Debug` leaves the password out.
#[derive(Serialize)]
struct AuthConfig {
    username: String,
    password: String,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("stdin is not a CredentialProviderRequest: {0}")]
    Json(#[from] serde_json::Error),
    #[error("apiVersion {0:?} is not {API_VERSION}: configure the provider with that apiVersion")]
    Version(String),
    #[error("kind {0:?} is not CredentialProviderRequest")]
    Kind(String),
}

impl Request {
    pub fn parse(input: &str) -> Result<Request, RequestError> {
        let request: Request = serde_json::from_str(input)?;
        if request.api_version != API_VERSION {
            return Err(RequestError::Version(request.api_version));
        }
        if request.kind != "CredentialProviderRequest" {
            return Err(RequestError::Kind(request.kind));
        }
        Ok(request)
    }
}

impl Response {
    /// Credentials for the whole registry (cache key type `Registry`), cached for half the
    /// credential's remaining lifetime so the kubelet asks again well before it expires. A
    /// long-lived credential gets no duration: the kubelet then uses its configured default.
    pub fn new(credential: &Credential, now: SystemTime) -> Response {
        let cache_duration = credential
            .remaining(now)
            .map(|left| format!("{}s", (left / 2).as_secs()));
        let auth = [(
            credential.registry.clone(),
            AuthConfig {
                username: credential.username.clone(),
                password: credential.password.expose().to_owned(),
            },
        )]
        .into();
        Response {
            api_version: API_VERSION,
            kind: "CredentialProviderResponse",
            cache_key_type: "Registry",
            cache_duration,
            auth,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrets::Secret;
    use std::time::Duration;

    #[test]
    fn request_and_response() {
        let r = Request::parse(
            r#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest","image":"gcr.io/p/app:v1"}"#,
        )
        .unwrap();
        assert_eq!(r.image, "gcr.io/p/app:v1");
        assert!(matches!(
            Request::parse(
                r#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1alpha1","kind":"CredentialProviderRequest","image":"x"}"#
            ),
            Err(RequestError::Version(_))
        ));
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let c = Credential {
            registry: "gcr.io".into(),
            username: "oauth2accesstoken".into(),
            password: Secret::new("tok"),
            expires_at: Some(now + Duration::from_secs(3600)),
            secret_style: crate::SecretStyle::Plain,
        };
        let v: serde_json::Value = serde_json::from_str(&Response::new(&c, now).to_json()).unwrap();
        assert_eq!(v["kind"], "CredentialProviderResponse");
        assert_eq!(v["cacheKeyType"], "Registry");
        assert_eq!(v["cacheDuration"], "1800s");
        assert_eq!(v["auth"]["gcr.io"]["password"], "tok");
        let debug = format!("{:?}", Response::new(&c, now));
        assert!(!debug.contains("\"tok\""), "{debug}");
    }
}
