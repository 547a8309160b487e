//! The two Azure Blob requests `object_store` does not make: creating a container, and waiting for
//! an asynchronous Copy Blob to finish. Copy Blob may answer before the copy is done
//! (`x-ms-copy-status: pending`); deleting the source then could lose the blob, so commit waits.
//! Both are signed with the account key (SharedKey), the credential Workflow configures.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{KeyInit, Mac};

const VERSION: &str = "2021-08-06";

/// An account name and its decoded key. `Debug` shows the account only.
#[derive(Clone)]
pub struct SharedKey {
    account: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedKey")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl SharedKey {
    pub fn new(account: &str, base64_key: &str) -> Result<SharedKey, base64::DecodeError> {
        Ok(SharedKey {
            account: account.to_owned(),
            key: BASE64.decode(base64_key)?,
        })
    }

    /// Adds the date, version and SharedKey authorization to a bodiless request (Blob service
    /// string-to-sign, version 2015-02-21 and later: a zero Content-Length is signed as empty).
    pub fn sign(
        &self,
        request: reqwest::RequestBuilder,
        verb: &str,
        url: &reqwest::Url,
    ) -> reqwest::RequestBuilder {
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let mut resource = format!("/{}{}", self.account, url.path());
        let mut query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        query.sort();
        for (k, v) in query {
            resource.push_str(&format!("\n{}:{v}", k.to_lowercase()));
        }
        let string_to_sign = format!(
            "{verb}\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{VERSION}\n{resource}"
        );
        let signature = match hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key) {
            Ok(mut mac) => {
                mac.update(string_to_sign.as_bytes());
                BASE64.encode(mac.finalize().into_bytes())
            }
            // HMAC takes keys of any length; unreachable, and an unsigned request is refused.
            Err(_) => String::new(),
        };
        request
            .header("x-ms-date", date)
            .header("x-ms-version", VERSION)
            .header("content-length", "0")
            .header(
                "authorization",
                format!("SharedKey {}:{signature}", self.account),
            )
    }
}

/// Waits for Copy Blob to finish on a container's blobs.
#[derive(Clone, Debug)]
pub struct CopyWaiter {
    /// `<endpoint>/<container>`
    base: String,
    key: SharedKey,
    client: reqwest::Client,
    limit: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("copy to {blob} ended {status}")]
    Failed { blob: String, status: String },
    #[error("copy to {blob} still pending after {0:?}", .limit)]
    TimedOut { blob: String, limit: Duration },
    #[error("checking copy to {blob}: {detail}")]
    Check { blob: String, detail: String },
}

impl CopyWaiter {
    pub fn new(
        client: reqwest::Client,
        endpoint: &str,
        container: &str,
        key: SharedKey,
    ) -> CopyWaiter {
        CopyWaiter {
            base: format!("{}/{container}", endpoint.trim_end_matches('/')),
            key,
            client,
            limit: Duration::from_secs(30 * 60),
        }
    }

    /// Returns once the blob at `path` (within the container) holds the whole copy.
    pub async fn wait(&self, path: &str) -> Result<(), CopyError> {
        let check = |detail: String| CopyError::Check {
            blob: path.to_owned(),
            detail,
        };
        let url = reqwest::Url::parse(&format!("{}/{path}", self.base))
            .map_err(|e| check(e.to_string()))?;
        let started = std::time::Instant::now();
        let mut delay = Duration::from_millis(100);
        loop {
            let request = self.key.sign(self.client.head(url.clone()), "HEAD", &url);
            let response = request.send().await.map_err(|e| check(e.to_string()))?;
            if !response.status().is_success() {
                return Err(check(format!("HEAD answered {}", response.status())));
            }
            let status = response
                .headers()
                .get("x-ms-copy-status")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("success")
                .to_owned();
            match status.as_str() {
                "success" => return Ok(()),
                "pending" if started.elapsed() < self.limit => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                "pending" => {
                    return Err(CopyError::TimedOut {
                        blob: path.to_owned(),
                        limit: self.limit,
                    });
                }
                _ => {
                    return Err(CopyError::Failed {
                        blob: path.to_owned(),
                        status,
                    });
                }
            }
        }
    }
}
