//! A client for one registry (Docker Registry API v2 / OCI Distribution): manifests, streamed
//! blobs, uploads and cross-repository mounts, with the two authentications registries use —
//! Basic, and Bearer tokens from the realm a `WWW-Authenticate` challenge names (Docker Hub,
//! quay.io, ECR, GCR, distribution's token auth). Plain HTTP for loopback hosts (as Docker
//! trusts 127.0.0.0/8), HTTPS elsewhere.
//!
//! Dependencies: `reqwest` (HTTP with streaming bodies; already the workspace's client), `oci`
//! (digests, manifest parsing), `images` (image references by Docker's rules), `secrets`
//! (passwords stay redacted), `base64` (Basic credentials).

mod auth;
pub mod copy;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::Stream;
use futures_util::future::BoxFuture;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{RequestBuilder, Response, StatusCode};
use secrets::Secret;

pub use images::{DOCKER_HUB_API, ImageRef, ReferenceError};

/// Every manifest kind we copy, best first.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

#[derive(Clone, Debug)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

/// Where a client's credentials come from when a registry asks for them: fixed ones, or an
/// issuer's short-lived ones (ECR, GCR), which the source renews before they expire.
pub trait CredentialSource: Send + Sync {
    /// Credentials good for now; the error says why there are none, without a secret.
    fn credentials(&self) -> BoxFuture<'_, Result<Credentials, String>>;
}

impl CredentialSource for Credentials {
    fn credentials(&self) -> BoxFuture<'_, Result<Credentials, String>> {
        Box::pin(std::future::ready(Ok(self.clone())))
    }
}

/// Errors worded as Workflow's controller worded them, where it had a wording.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unauthorized: authentication required to {op} {image}")]
    Unauthorized { op: &'static str, image: String },
    #[error("Could not log into {registry} with username {username}")]
    LoginFailed { registry: String, username: String },
    #[error("Permission Denied attempting to {op} image {image}")]
    Denied { op: &'static str, image: String },
    #[error("{what} not found in {registry}")]
    NotFound { registry: String, what: String },
    #[error("{registry} answered {status} to {op} {image}: {body}")]
    Status {
        registry: String,
        op: &'static str,
        image: String,
        status: StatusCode,
        body: String,
    },
    #[error("{registry}: {message}")]
    Protocol { registry: String, message: String },
    /// The credential source had none to give (an issuer down or refusing).
    #[error("no credentials for {registry}: {message}")]
    Credentials { registry: String, message: String },
    /// The HTTP client's error (its URL left out: it may carry a presigned query), kept opaque
    /// so callers do not depend on which HTTP client this is.
    #[error("cannot reach {registry}: {source}")]
    Http {
        registry: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// What a request is for: the repository it touches and the access it needs, for the token
/// scope and for error messages.
#[derive(Clone, Copy)]
struct Op<'a> {
    repository: &'a str,
    push: bool,
    /// Also read this repository (cross-repository mount).
    from: Option<&'a str>,
    verb: &'static str,
    image: &'a str,
}

pub struct Client {
    http: reqwest::Client,
    registry: String,
    base: String,
    credentials: Option<Arc<dyn CredentialSource>>,
    /// The user name of the credentials last sent, for error messages.
    username: Mutex<Option<String>>,
    /// The Authorization header per token scope, once a challenge was answered.
    auth: Mutex<Vec<(String, String)>>,
}

/// A manifest as the registry holds it.
pub struct Manifest {
    pub media_type: String,
    pub digest: oci::Digest,
    pub body: Bytes,
}

/// A silent registry must not hold a request (a mirror's pull, a builder's publish) forever:
/// connecting and every read are bounded, the whole transfer is not (a layer may take minutes).
fn bounded_http(read_timeout: std::time::Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .read_timeout(read_timeout)
        .build()
        .unwrap_or_default()
}

/// How long a request waits for the registry's next bytes unless told otherwise.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl Client {
    pub fn new(registry: &str, credentials: Option<Credentials>) -> Client {
        let host = registry.rsplit_once(':').map_or(registry, |(h, _)| h);
        let loopback = host == "localhost" || host.starts_with("127.") || host == "[::1]";
        let scheme = if loopback { "http" } else { "https" };
        Client {
            http: bounded_http(READ_TIMEOUT),
            registry: registry.to_owned(),
            base: format!("{scheme}://{registry}"),
            credentials: credentials.map(|c| Arc::new(c) as Arc<dyn CredentialSource>),
            username: Mutex::new(None),
            auth: Mutex::new(Vec::new()),
        }
    }

    /// A client for the registry at `url` (scheme given, e.g. a mirror's upstream), named
    /// `registry` in errors.
    pub fn at_url(
        registry: &str,
        url: &str,
        credentials: Option<Arc<dyn CredentialSource>>,
    ) -> Client {
        Client {
            http: bounded_http(READ_TIMEOUT),
            registry: registry.to_owned(),
            base: url.trim_end_matches('/').to_owned(),
            credentials,
            username: Mutex::new(None),
            auth: Mutex::new(Vec::new()),
        }
    }

    /// The same client waiting at most `timeout` for the registry's next bytes.
    pub fn with_read_timeout(mut self, timeout: std::time::Duration) -> Client {
        self.http = bounded_http(timeout);
        self
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The manifest `image` names (its registry must be this client's).
    pub async fn manifest(&self, image: &ImageRef) -> Result<Manifest, Error> {
        let text = image.to_string();
        let op = Op::pull(&image.repository, "pull", &text);
        let url = self.manifest_url(image);
        let resp = self
            .send(op, || self.http.get(&url).header(ACCEPT, MANIFEST_ACCEPT))
            .await?;
        let resp = self.check(resp, op, || format!("manifest {text}")).await?;
        let media_type = header(&resp, CONTENT_TYPE).unwrap_or_default();
        let body = resp.bytes().await.map_err(|e| self.http_error(e))?;
        // By digest: verified with the digest's own algorithm; by tag: named by sha256, as
        // registries name what they serve.
        let asked: Option<oci::Digest> = image.reference.parse().ok();
        let algorithm = asked
            .as_ref()
            .map_or(oci::Algorithm::Sha256, oci::Digest::algorithm);
        let digest = oci::Digest::of(algorithm, &body);
        if asked.is_some_and(|asked| asked != digest) {
            return Err(self.protocol(format!("manifest {text} has digest {digest}")));
        }
        let media_type = match media_type.split(';').next().map(str::trim) {
            Some(m) if oci::media::is_index(m).is_some() => m.to_owned(),
            _ => oci::Manifest::sniff_media_type(&body).ok_or_else(|| {
                self.protocol(format!("{text} is not an image manifest or index"))
            })?,
        };
        Ok(Manifest {
            media_type,
            digest,
            body,
        })
    }

    /// The digest a tag names now, by `HEAD` (which Docker Hub does not count against its pull
    /// limit); `None` when the registry does not say.
    pub async fn manifest_digest(&self, image: &ImageRef) -> Result<Option<oci::Digest>, Error> {
        let text = image.to_string();
        let op = Op::pull(&image.repository, "pull", &text);
        let url = self.manifest_url(image);
        let resp = self
            .send(op, || self.http.head(&url).header(ACCEPT, MANIFEST_ACCEPT))
            .await?;
        let resp = self.check(resp, op, || format!("manifest {text}")).await?;
        Ok(
            header(&resp, "docker-content-digest".parse().expect("header name"))
                .and_then(|d| d.parse().ok()),
        )
    }

    /// The blob's size (from its `Content-Length`, if sent) and its bytes as they arrive.
    pub async fn blob_sized(
        &self,
        repository: &str,
        digest: &oci::Digest,
    ) -> Result<
        (
            Option<u64>,
            impl Stream<Item = reqwest::Result<Bytes>> + use<>,
        ),
        Error,
    > {
        let resp = self.pull_blob(repository, digest, false).await?;
        Ok((resp.content_length(), resp.bytes_stream()))
    }

    /// The blob's size by `HEAD`, with pull access only.
    pub async fn blob_size(&self, repository: &str, digest: &oci::Digest) -> Result<u64, Error> {
        let resp = self.pull_blob(repository, digest, true).await?;
        header(&resp, CONTENT_LENGTH)
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| self.protocol(format!("blob {digest} answered without a size")))
    }

    /// `GET` (or `HEAD`) of a blob with pull access, refusals turned into errors.
    async fn pull_blob(
        &self,
        repository: &str,
        digest: &oci::Digest,
        head: bool,
    ) -> Result<Response, Error> {
        let image = format!("{}/{repository}@{digest}", self.registry);
        let op = Op::pull(repository, "pull", &image);
        let url = format!("{}/v2/{repository}/blobs/{digest}", self.base);
        let method = if head {
            reqwest::Method::HEAD
        } else {
            reqwest::Method::GET
        };
        let resp = self
            .send(op, || self.http.request(method.clone(), &url))
            .await?;
        self.check(resp, op, || format!("blob {digest} of {repository}"))
            .await
    }

    /// The blob's bytes as they arrive.
    pub async fn blob(
        &self,
        repository: &str,
        digest: &oci::Digest,
    ) -> Result<impl Stream<Item = reqwest::Result<Bytes>> + use<>, Error> {
        Ok(self.blob_sized(repository, digest).await?.1)
    }

    pub async fn has_blob(&self, repository: &str, digest: &oci::Digest) -> Result<bool, Error> {
        let image = format!("{}/{repository}", self.registry);
        let op = Op::push(repository, None, &image);
        let url = format!("{}/v2/{repository}/blobs/{digest}", self.base);
        let resp = self.send(op, || self.http.head(&url)).await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(false),
            _ => self
                .check(resp, op, || format!("blob {digest}"))
                .await
                .map(|_| true),
        }
    }

    /// Links a blob of `from` into `repository` without moving bytes. `false`: the registry
    /// would not (another registry's rules, or it does not have the blob).
    pub async fn mount(
        &self,
        repository: &str,
        from: &str,
        digest: &oci::Digest,
    ) -> Result<bool, Error> {
        let image = format!("{}/{repository}", self.registry);
        let op = Op::push(repository, Some(from), &image);
        let url = format!(
            "{}/v2/{repository}/blobs/uploads/?mount={digest}&from={from}",
            self.base
        );
        let resp = self.send(op, || self.http.post(&url)).await?;
        match resp.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                // An upload session was opened instead; leave nothing behind.
                if let Some(location) = header(&resp, LOCATION) {
                    let url = self.absolute(&location);
                    let _ = self.send(op, || self.http.delete(&url)).await;
                }
                Ok(false)
            }
            _ => self
                .check(resp, op, || format!("mount of {digest}"))
                .await
                .map(|_| false),
        }
    }

    /// Uploads a blob of known digest and size in one streamed PUT.
    pub async fn push_blob<S>(
        &self,
        repository: &str,
        digest: &oci::Digest,
        size: u64,
        body: S,
    ) -> Result<(), Error>
    where
        S: Stream<Item = reqwest::Result<Bytes>> + Send + Sync + 'static,
    {
        let image = format!("{}/{repository}", self.registry);
        let op = Op::push(repository, None, &image);
        let url = format!("{}/v2/{repository}/blobs/uploads/", self.base);
        let resp = self.send(op, || self.http.post(&url)).await?;
        let resp = self.check(resp, op, || "upload".to_owned()).await?;
        let location = header(&resp, LOCATION)
            .ok_or_else(|| self.protocol("upload answered without a Location".into()))?;
        let mut url = self.absolute(&location);
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("digest={digest}"));
        // The body is a stream and cannot be sent twice: the POST above already authenticated
        // this scope, so this request carries the credentials from the start.
        let request = self
            .authorize(op, self.http.put(&url))
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, size)
            .body(reqwest::Body::wrap_stream(body));
        let resp = request.send().await.map_err(|e| self.http_error(e))?;
        self.check(resp, op, || format!("blob {digest}"))
            .await
            .map(drop)
    }

    pub async fn put_manifest(&self, image: &ImageRef, manifest: &Manifest) -> Result<(), Error> {
        let text = image.to_string();
        let op = Op::push(&image.repository, None, &text);
        let url = self.manifest_url(image);
        let resp = self
            .send(op, || {
                self.http
                    .put(&url)
                    .header(CONTENT_TYPE, &manifest.media_type)
                    .body(manifest.body.clone())
            })
            .await?;
        self.check(resp, op, || format!("manifest {text}"))
            .await
            .map(drop)
    }

    /// `docker login`'s check: `GET /v2/`, answering the registry's challenge with these
    /// credentials for no repository in particular.
    pub async fn login(&self) -> Result<(), Error> {
        let op = Op {
            repository: "",
            push: false,
            from: None,
            verb: "log into",
            image: &self.registry,
        };
        let url = format!("{}/v2/", self.base);
        let resp = self.send(op, || self.http.get(&url)).await?;
        self.check(resp, op, || "the API root /v2/".to_owned())
            .await
            .map(drop)
    }

    /// Sends, answering one authentication challenge if the registry makes one.
    async fn send(
        &self,
        op: Op<'_>,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response, Error> {
        let resp = self
            .authorize(op, build())
            .send()
            .await
            .map_err(|e| self.http_error(e))?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let challenge = header(&resp, reqwest::header::WWW_AUTHENTICATE).unwrap_or_default();
        let credentials = self.current_credentials().await?;
        let value = auth::answer(&self.http, &challenge, &op.scopes(), credentials.as_ref())
            .await
            .map_err(|e| self.auth_error(op, e))?;
        if let Ok(mut cache) = self.auth.lock() {
            cache.retain(|(scope, _)| *scope != op.scope_key());
            cache.push((op.scope_key(), value));
        }
        let resp = self
            .authorize(op, build())
            .send()
            .await
            .map_err(|e| self.http_error(e))?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            return Err(self.auth_error(op, auth::AuthError::Refused));
        }
        Ok(resp)
    }

    /// Asked at each challenge, so that a source of short-lived credentials hands out fresh ones
    /// once the registry stops taking the old.
    async fn current_credentials(&self) -> Result<Option<Credentials>, Error> {
        let Some(source) = &self.credentials else {
            return Ok(None);
        };
        let credentials = source
            .credentials()
            .await
            .map_err(|message| Error::Credentials {
                registry: self.registry.clone(),
                message,
            })?;
        if let Ok(mut username) = self.username.lock() {
            *username = Some(credentials.username.clone());
        }
        Ok(Some(credentials))
    }

    fn authorize(&self, op: Op<'_>, request: RequestBuilder) -> RequestBuilder {
        let key = op.scope_key();
        let cached = self
            .auth
            .lock()
            .ok()
            .and_then(|c| c.iter().find(|(s, _)| *s == key).map(|(_, v)| v.clone()));
        match cached {
            Some(value) => request.header(reqwest::header::AUTHORIZATION, value),
            None => request,
        }
    }

    /// Turns a refusal into the error an operator acts on.
    async fn check(
        &self,
        resp: Response,
        op: Op<'_>,
        what: impl Fn() -> String,
    ) -> Result<Response, Error> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = error_text(&resp.text().await.unwrap_or_default());
        Err(match status {
            StatusCode::UNAUTHORIZED => self.auth_error(op, auth::AuthError::Refused),
            StatusCode::FORBIDDEN => Error::Denied {
                op: op.verb,
                image: op.image.to_owned(),
            },
            StatusCode::NOT_FOUND => Error::NotFound {
                registry: self.registry.clone(),
                what: what(),
            },
            _ => Error::Status {
                registry: self.registry.clone(),
                op: op.verb,
                image: op.image.to_owned(),
                status,
                body,
            },
        })
    }

    fn auth_error(&self, op: Op<'_>, e: auth::AuthError) -> Error {
        let username = self.username.lock().ok().and_then(|u| u.clone());
        match (username, e) {
            (_, auth::AuthError::Unreachable(source)) => self.http_error(source),
            (Some(username), _) => Error::LoginFailed {
                registry: self.registry.clone(),
                username,
            },
            (None, _) => Error::Unauthorized {
                op: op.verb,
                image: op.image.to_owned(),
            },
        }
    }

    pub(crate) fn http_error(&self, source: reqwest::Error) -> Error {
        Error::Http {
            registry: self.registry.clone(),
            source: Box::new(source.without_url()),
        }
    }

    pub(crate) fn protocol(&self, message: String) -> Error {
        Error::Protocol {
            registry: self.registry.clone(),
            message,
        }
    }

    fn manifest_url(&self, image: &ImageRef) -> String {
        format!(
            "{}/v2/{}/manifests/{}",
            self.base, image.repository, image.reference
        )
    }

    fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_owned()
        } else {
            format!("{}{location}", self.base)
        }
    }
}

impl<'a> Op<'a> {
    fn pull(repository: &'a str, verb: &'static str, image: &'a str) -> Op<'a> {
        Op {
            repository,
            push: false,
            from: None,
            verb,
            image,
        }
    }

    fn push(repository: &'a str, from: Option<&'a str>, image: &'a str) -> Op<'a> {
        Op {
            repository,
            push: true,
            from,
            verb: "push",
            image,
        }
    }

    fn scopes(&self) -> Vec<String> {
        if self.repository.is_empty() {
            return Vec::new();
        }
        let access = if self.push { "pull,push" } else { "pull" };
        let mut scopes = vec![format!("repository:{}:{access}", self.repository)];
        if let Some(from) = self.from {
            scopes.push(format!("repository:{from}:pull"));
        }
        scopes
    }

    fn scope_key(&self) -> String {
        self.scopes().join(" ")
    }
}

/// A registry's error body as an operator reads it: the OCI errors' `CODE: message` pairs, or
/// the start of whatever else it sent.
fn error_text(body: &str) -> String {
    let parsed: Option<Vec<String>> = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["errors"].as_array().cloned())
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    let code = e["code"].as_str().unwrap_or("UNKNOWN");
                    match e["message"].as_str() {
                        Some(message) if !message.is_empty() => format!("{code}: {message}"),
                        _ => code.to_owned(),
                    }
                })
                .collect()
        });
    match parsed {
        Some(errors) if !errors.is_empty() => errors.join("; "),
        _ => body.chars().take(300).collect(),
    }
}

fn header(resp: &Response, name: reqwest::header::HeaderName) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::error_text;

    #[test]
    fn oci_error_bodies_read_as_codes_and_messages() {
        let body = r#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied","detail":null},{"code":"UNAUTHORIZED"}]}"#;
        assert_eq!(
            error_text(body),
            "DENIED: requested access to the resource is denied; UNAUTHORIZED"
        );
        let html = format!("<html>{}</html>", "x".repeat(500));
        assert_eq!(error_text(&html).len(), 300);
        assert_eq!(error_text(r#"{"errors":[]}"#), r#"{"errors":[]}"#);
    }
}
