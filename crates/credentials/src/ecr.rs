//! ECR: `GetAuthorizationToken` with the registry-secret's keys, or the AWS default chain when
//! they are empty (env, profile, web identity/IRSA, ECS, IMDS).

use std::time::{Duration, SystemTime};

use aws_config::{BehaviorVersion, Region};
use aws_sdk_ecr::config::http::HttpResponse;
use aws_sdk_ecr::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use base64::Engine as _;
use images::location::Ecr;
use secrets::Secret;

use crate::{Credential, FetchError, Options};

/// What [`EcrProvider::ensure_repository`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repository {
    Created,
    Existed,
}

pub struct EcrProvider {
    client: aws_sdk_ecr::Client,
    region: String,
    registry_id: Option<String>,
    hostname: Option<String>,
}

impl std::fmt::Debug for EcrProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcrProvider")
            .field("region", &self.region)
            .field("registry_id", &self.registry_id)
            .field("hostname", &self.hostname)
            .finish_non_exhaustive()
    }
}

/// Error codes that mean "these credentials will not do", as opposed to an outage.
const DENIED: &[&str] = &[
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "AccessDeniedException",
    "ExpiredTokenException",
];

impl EcrProvider {
    pub async fn new(config: &Ecr, options: &Options) -> EcrProvider {
        if config.registry_id.is_some() || config.hostname.is_some() {
            tracing::warn!(
                registry_id = config.registry_id.as_deref(),
                hostname = config.hostname.as_deref(),
                "ecr registryid/hostname are set; Workflow's docs say to leave them empty: they change \
                 which registry the token is for and the key pods look it up by"
            );
        }
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_millis(3100))
            .operation_attempt_timeout(options.aws_attempt_timeout)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .timeout_config(timeouts)
            .http_client(http);
        if let (Some(access), Some(secret)) = (&config.access_key, &config.secret_key) {
            loader = loader.credentials_provider(aws_sdk_ecr::config::Credentials::new(
                access.expose(),
                secret.expose(),
                None,
                None,
                "registry-secret",
            ));
        }
        if let Some(endpoint) = &options.aws_endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        EcrProvider {
            client: aws_sdk_ecr::Client::new(&loader.load().await),
            region: config.region.clone(),
            registry_id: config.registry_id.clone(),
            hostname: config.hostname.clone(),
        }
    }

    /// Creates repository `name` unless it exists, as Deis's builder did before pushing.
    pub async fn ensure_repository(&self, name: &str) -> Result<Repository, FetchError> {
        let result = self
            .client
            .create_repository()
            .repository_name(name)
            .send()
            .await;
        match result {
            Ok(_) => Ok(Repository::Created),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_repository_already_exists_exception()) =>
            {
                Ok(Repository::Existed)
            }
            Err(e) => Err(FetchError::Unavailable(format!(
                "ECR CreateRepository {name} in {}: {}",
                self.region,
                DisplayErrorContext(&e)
            ))),
        }
    }

    pub async fn fetch(&self) -> Result<Credential, FetchError> {
        // RegistryIds no longer narrows the token (AWS deprecated it for that reason); it still
        // picks the registry whose proxyEndpoint becomes the auths key, which is what Deis used.
        #[allow(deprecated)]
        let request = self
            .client
            .get_authorization_token()
            .set_registry_ids(self.registry_id.clone().map(|id| vec![id]));
        let out = request.send().await.map_err(|e| self.error(e))?;
        let data = out.authorization_data().first().ok_or_else(|| {
            FetchError::Unavailable(
                "ECR GetAuthorizationToken returned no authorizationData".into(),
            )
        })?;
        let (username, password) = data
            .authorization_token()
            .and_then(decode_token)
            .ok_or_else(|| {
                FetchError::Unavailable(
                    "ECR GetAuthorizationToken returned a token that is not base64 of user:password"
                        .into(),
                )
            })?;
        // The secret's auths key is what Deis's refresher wrote: the hostname as configured,
        // else ECR's proxyEndpoint as ECR gives it (`https://…`); images name the bare host.
        let (registry, key) = match (&self.hostname, data.proxy_endpoint()) {
            (Some(hostname), _) => (host_of(hostname).to_owned(), hostname.clone()),
            (None, Some(endpoint)) => (host_of(endpoint).to_owned(), endpoint.to_owned()),
            (None, None) => {
                return Err(FetchError::Unavailable(
                    "ECR GetAuthorizationToken returned no proxyEndpoint".into(),
                ));
            }
        };
        Ok(Credential {
            registry,
            username,
            password: Secret::new(password),
            expires_at: data
                .expires_at()
                .and_then(|at| SystemTime::try_from(*at).ok()),
            secret_style: crate::SecretStyle::Refresher { key },
        })
    }

    fn error<E>(&self, e: SdkError<E, HttpResponse>) -> FetchError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let status = e.raw_response().map(|r| r.status().as_u16());
        // Some S3-compatible or emulated endpoints answer in another protocol's error format;
        // the HTTP status still says whether the key was refused.
        let denied =
            e.code().is_some_and(|c| DENIED.contains(&c)) || matches!(status, Some(401 | 403));
        let detail = match (e.code(), e.message(), status) {
            (Some(code), Some(message), _) => format!("{code}: {message}"),
            (Some(code), None, _) => code.to_owned(),
            (None, _, Some(status)) => format!("HTTP {status}"),
            (None, _, None) => {
                // The SDK's own rendering is kilobytes of Debug output; the detail goes to the
                // debug log, the message gets one cause.
                tracing::debug!(error = %DisplayErrorContext(&e), "ECR request failed");
                return self.transport_error(&e);
            }
        };
        let region = &self.region;
        if denied {
            FetchError::Denied(format!(
                "ECR in {region} refused the credentials ({detail}): check accesskey and secretkey \
                 in the registry-secret, or the role the pod runs as, and that it may call \
                 ecr:GetAuthorizationToken"
            ))
        } else {
            FetchError::Unavailable(format!(
                "ECR GetAuthorizationToken in {region} failed: {detail}"
            ))
        }
    }

    /// A request that never got an HTTP answer: no credentials to sign with, or no connection.
    fn transport_error<E, R>(&self, e: &SdkError<E, R>) -> FetchError
    where
        E: std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let region = &self.region;
        let mut causes = Vec::new();
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            causes.push(cause.to_string());
            source = cause.source();
        }
        let no_credentials = causes.iter().any(|c| c.contains("no credentials found"))
            || format!("{e:?}").contains("CredentialsNotLoaded");
        if no_credentials {
            return FetchError::Config(
                "no AWS credentials found: set accesskey and secretkey in the registry-secret \
                 (registry-token-refresher.ecr in the chart's values), or give the pod an IAM \
                 role (IRSA: the ServiceAccount annotation eks.amazonaws.com/role-arn)"
                    .into(),
            );
        }
        let cause = match e {
            SdkError::TimeoutError(_) => "no answer in time".to_owned(),
            _ => causes
                .last()
                .map(|c| c.lines().next().unwrap_or("").to_owned())
                .unwrap_or_else(|| e.to_string()),
        };
        FetchError::Unavailable(format!(
            "ECR GetAuthorizationToken in {region} failed: cannot reach ECR ({cause})"
        ))
    }
}

/// ECR's token is base64 of `AWS:<password>`.
fn decode_token(token: &str) -> Option<(String, String)> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token)
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// `https://123.dkr.ecr.us-west-2.amazonaws.com` → `123.dkr.ecr.us-west-2.amazonaws.com`.
fn host_of(endpoint: &str) -> &str {
    let rest = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    rest.trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_and_endpoint_parsing() {
        assert_eq!(
            decode_token("QVdTOnNlY3JldA=="),
            Some(("AWS".into(), "secret".into()))
        );
        assert_eq!(decode_token("not base64!"), None);
        assert_eq!(
            host_of("https://1.dkr.ecr.us-west-2.amazonaws.com"),
            "1.dkr.ecr.us-west-2.amazonaws.com"
        );
        assert_eq!(host_of("r.example.com/"), "r.example.com");
    }
}
