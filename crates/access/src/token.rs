//! Docker registry bearer tokens: HS256 JWTs with the granted `access` list, issued by the
//! token endpoint and checked on every request. The secret is shared by all replicas.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::Action;

const ISSUER: &str = "quayside";

pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    service: String,
    lifetime_secs: u64,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("service", &self.service)
            .field("lifetime_secs", &self.lifetime_secs)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    exp: u64,
    iat: u64,
    access: Vec<Grant>,
}

#[derive(Serialize, Deserialize)]
struct Grant {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    actions: Vec<Action>,
}

/// What the token endpoint answers (both names, as clients read either). `Debug` leaves the
/// token out.
#[derive(Serialize)]
pub struct TokenResponse {
    pub token: String,
    pub access_token: String,
    pub expires_in: u64,
    pub issued_at: String,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .field("issued_at", &self.issued_at)
            .finish()
    }
}

impl TokenIssuer {
    pub fn new(secret: Vec<u8>, service: &str, lifetime_secs: u64) -> TokenIssuer {
        TokenIssuer {
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
            service: service.to_owned(),
            lifetime_secs,
        }
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    pub fn issue(
        &self,
        user: Option<&str>,
        access: &[(String, BTreeSet<Action>)],
    ) -> TokenResponse {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = Claims {
            iss: ISSUER.into(),
            sub: user.unwrap_or("").into(),
            aud: self.service.clone(),
            exp: now + self.lifetime_secs,
            iat: now,
            access: access
                .iter()
                .map(|(name, actions)| Grant {
                    kind: "repository".into(),
                    name: name.clone(),
                    actions: actions.iter().copied().collect(),
                })
                .collect(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .unwrap_or_default();
        TokenResponse {
            access_token: token.clone(),
            token,
            expires_in: self.lifetime_secs,
            issued_at: humantime_rfc3339(now),
        }
    }

    /// The grants of a valid, unexpired token for this service.
    pub fn verify(&self, token: &str) -> Option<Vec<(String, BTreeSet<Action>)>> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[&self.service]);
        validation.set_issuer(&[ISSUER]);
        validation.leeway = 5;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).ok()?;
        Some(
            data.claims
                .access
                .into_iter()
                .filter(|g| g.kind == "repository")
                .map(|g| (g.name, g.actions.into_iter().collect()))
                .collect(),
        )
    }
}

fn humantime_rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_secs(secs)).to_string()
}
