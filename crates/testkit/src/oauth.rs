//! A Google OAuth token endpoint for JWT-bearer grants: checks the RS256 signature of the
//! assertion against the service-account key it made, and its claims; answers access tokens
//! with the lifetime the test chooses. Counts grants; can be switched to failing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use axum::Form;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};

pub const CLIENT_EMAIL: &str = "quayside-test@my-project.iam.gserviceaccount.com";

#[derive(Default)]
struct Inner {
    public_key_der: Vec<u8>,
    lifetime_secs: AtomicU64,
    granted: AtomicUsize,
    refused: AtomicUsize,
    outage: AtomicBool,
    silent: AtomicBool,
}

pub struct FakeOAuth {
    inner: Arc<Inner>,
    pub addr: SocketAddr,
    key_json: String,
}

impl FakeOAuth {
    /// Serves on the caller's tokio runtime; tokens live `lifetime_secs`.
    pub async fn start(lifetime_secs: u64) -> FakeOAuth {
        let dir = tempfile::tempdir().expect("tempdir");
        let (private_pem, public_der) = rsa_key(dir.path());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let inner = Arc::new(Inner {
            public_key_der: public_der,
            lifetime_secs: AtomicU64::new(lifetime_secs),
            ..Inner::default()
        });
        let app = axum::Router::new()
            .route("/token", axum::routing::post(grant))
            .with_state(inner.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let key_json = json!({
            "type": "service_account",
            "project_id": "my-project",
            "private_key_id": "k1",
            "private_key": private_pem,
            "client_email": CLIENT_EMAIL,
            "client_id": "1",
            "token_uri": format!("http://{addr}/token"),
        })
        .to_string();
        FakeOAuth {
            inner,
            addr,
            key_json,
        }
    }

    /// A service-account key whose `token_uri` is this endpoint.
    pub fn key_json(&self) -> &str {
        &self.key_json
    }

    pub fn granted(&self) -> usize {
        self.inner.granted.load(Ordering::SeqCst)
    }

    pub fn refused(&self) -> usize {
        self.inner.refused.load(Ordering::SeqCst)
    }

    /// While on, every grant answers 503.
    pub fn set_outage(&self, on: bool) {
        self.inner.outage.store(on, Ordering::SeqCst);
    }

    /// While on, token requests are accepted and not answered (an issuer that hangs).
    pub fn set_silent(&self, on: bool) {
        self.inner.silent.store(on, Ordering::SeqCst);
    }
}

/// A fresh RSA key: PKCS#8 PEM (what Google's key files carry) and the PKCS#1 public key DER.
fn rsa_key(dir: &std::path::Path) -> (String, Vec<u8>) {
    let key = dir.join("key.pem");
    let public = dir.join("public.der");
    let run = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl");
        assert!(status.success(), "openssl {args:?}");
    };
    let key_s = key.to_str().expect("utf8 path");
    run(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        key_s,
    ]);
    run(&[
        "rsa",
        "-in",
        key_s,
        "-RSAPublicKey_out",
        "-outform",
        "DER",
        "-out",
        public.to_str().expect("utf8 path"),
    ]);
    (
        std::fs::read_to_string(&key).expect("key"),
        std::fs::read(&public).expect("public key"),
    )
}

async fn grant(
    State(inner): State<Arc<Inner>>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    while inner.silent.load(Ordering::SeqCst) {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    if inner.outage.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "down for the test").into_response();
    }
    let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let assertion = field("assertion").unwrap_or("");
    let checked = field("grant_type") == Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
        && verify(&inner.public_key_der, assertion).is_some();
    if !checked {
        inner.refused.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(
                json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}),
            ),
        )
            .into_response();
    }
    let n = inner.granted.fetch_add(1, Ordering::SeqCst) + 1;
    axum::Json(json!({
        "access_token": format!("ya29.test-token-{n}"),
        "expires_in": inner.lifetime_secs.load(Ordering::SeqCst),
        "token_type": "Bearer",
    }))
    .into_response()
}

/// The claims of a correctly signed RS256 assertion from our service account, or `None`.
fn verify(public_key_der: &[u8], jwt: &str) -> Option<Value> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts = jwt.split('.');
    let (header, claims, signature) = (parts.next()?, parts.next()?, parts.next()?);
    let head: Value = serde_json::from_slice(&b64.decode(header).ok()?).ok()?;
    if head["alg"] != "RS256" {
        return None;
    }
    let signed = format!("{header}.{claims}");
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        public_key_der,
    );
    key.verify(
        signed.as_bytes(),
        &b64.decode(signature.trim_end_matches('=')).ok()?,
    )
    .ok()?;
    let claims: Value = serde_json::from_slice(&b64.decode(claims).ok()?).ok()?;
    (claims["iss"] == CLIENT_EMAIL && claims["scope"].is_string()).then_some(claims)
}
