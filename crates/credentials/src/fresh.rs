//! One credential kept fresh for a long-running client (the mirror's upstreams): fetched when
//! first needed, fetched again once half its lifetime has passed, and never handed out expired.
//! A failed renewal keeps the credential it had while that one is still valid.

use std::time::SystemTime;

use crate::{Credential, FetchError, Provider};

/// What issues credentials: a [`Provider`], or a test's stand-in.
pub trait Issuer: Send + Sync {
    fn issue(&self) -> impl Future<Output = Result<Credential, FetchError>> + Send;
}

impl Issuer for Provider {
    async fn issue(&self) -> Result<Credential, FetchError> {
        self.fetch().await
    }
}

struct Held {
    credential: Credential,
    fetched: SystemTime,
}

impl Held {
    /// Past half its lifetime (never, for long-lived credentials).
    fn due(&self, now: SystemTime) -> bool {
        let Some(expires) = self.credential.expires_at else {
            return false;
        };
        let lifetime = expires.duration_since(self.fetched).unwrap_or_default();
        now >= self.fetched + lifetime / 2
    }
}

pub struct Fresh<I> {
    issuer: I,
    /// Held across a renewal, so concurrent callers wait for one fetch instead of each making one.
    held: tokio::sync::Mutex<Option<Held>>,
}

impl<I: Issuer> Fresh<I> {
    pub fn new(issuer: I) -> Fresh<I> {
        Fresh {
            issuer,
            held: tokio::sync::Mutex::new(None),
        }
    }

    /// A credential valid now.
    pub async fn get(&self) -> Result<Credential, FetchError> {
        self.get_at(SystemTime::now()).await
    }

    async fn get_at(&self, now: SystemTime) -> Result<Credential, FetchError> {
        let mut held = self.held.lock().await;
        if let Some(h) = held.as_ref()
            && !h.due(now)
        {
            return Ok(h.credential.clone());
        }
        match self.issuer.issue().await {
            Ok(credential) if credential.is_valid_at(now) => {
                *held = Some(Held {
                    credential: credential.clone(),
                    fetched: now,
                });
                Ok(credential)
            }
            outcome => {
                let error = outcome.err().unwrap_or_else(|| {
                    FetchError::Unavailable("the issuer answered an expired credential".into())
                });
                match held.as_ref() {
                    Some(h) if h.credential.is_valid_at(now) => {
                        tracing::warn!(registry = %h.credential.registry, error = %error,
                            "renewing the credential failed; using the current one until it expires");
                        Ok(h.credential.clone())
                    }
                    _ => Err(error),
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use secrets::Secret;

    use super::*;
    use crate::SecretStyle;

    /// Issues credentials living `lifetime` from the test's clock `now` (already expired when
    /// zero), or fails when told to.
    struct Counting {
        issued: Mutex<u32>,
        lifetime: Duration,
        now: Mutex<SystemTime>,
        fail: Mutex<bool>,
    }

    impl Issuer for Counting {
        async fn issue(&self) -> Result<Credential, FetchError> {
            if *self.fail.lock().unwrap() {
                return Err(FetchError::Unavailable("issuer down".into()));
            }
            let mut issued = self.issued.lock().unwrap();
            *issued += 1;
            Ok(Credential {
                registry: "r".into(),
                username: "AWS".into(),
                password: Secret::new(format!("token-{issued}")),
                expires_at: Some(*self.now.lock().unwrap() + self.lifetime),
                secret_style: SecretStyle::Plain,
            })
        }
    }

    fn fresh(lifetime: Duration) -> Fresh<Counting> {
        Fresh::new(Counting {
            issued: Mutex::new(0),
            lifetime,
            now: Mutex::new(SystemTime::UNIX_EPOCH),
            fail: Mutex::new(false),
        })
    }

    /// The credential's password at `secs` on the test's clock.
    async fn at(f: &Fresh<Counting>, secs: u64) -> Result<String, FetchError> {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        *f.issuer.now.lock().unwrap() = now;
        f.get_at(now).await.map(|c| c.password.expose().to_owned())
    }

    #[tokio::test]
    async fn renewed_after_half_its_lifetime_and_kept_when_renewal_fails() {
        let f = fresh(Duration::from_secs(100));
        assert_eq!(at(&f, 0).await.unwrap(), "token-1");
        assert_eq!(at(&f, 49).await.unwrap(), "token-1");
        assert_eq!(at(&f, 50).await.unwrap(), "token-2");
        // The issuer goes down: the current token serves until it expires, then nothing does.
        *f.issuer.fail.lock().unwrap() = true;
        assert_eq!(at(&f, 120).await.unwrap(), "token-2");
        assert!(at(&f, 150).await.is_err());
    }

    #[tokio::test]
    async fn an_expired_credential_is_never_handed_out() {
        let e = at(&fresh(Duration::ZERO), 10).await.unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
    }
}
