#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test
//! What a client learns when storage fails: the OCI code, a short message and a request id —
//! never the storage's endpoint, bucket, key paths or its own error text, which go to the log.
//! Storage here is a backend whose every operation fails the way object_store reports an
//! outage (the URL, bucket and key in the message), so the failure is certain.

use std::io;
use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use storage::{Appended, Appender, Backend, BackendError, ByteStream, Claim, Store};

const LEAK: &str = "Generic S3 error: GET http://storage.internal:9000/secret-bucket/docker/registry/v2/repositories/app/_manifests/tags/v1/current/link: <Error><Code>InternalError</Code></Error>";

fn outage() -> BackendError {
    BackendError::Io(io::Error::other(LEAK))
}

struct Down;

#[async_trait]
impl Backend for Down {
    async fn size(&self, _: &str) -> Result<u64, BackendError> {
        Err(outage())
    }
    async fn modified(&self, _: &str) -> Result<std::time::SystemTime, BackendError> {
        Err(outage())
    }
    async fn touch(&self, _: &str) -> Result<(), BackendError> {
        Err(outage())
    }
    async fn create_empty(&self, _: &str) -> Result<(), BackendError> {
        Err(outage())
    }
    async fn claim(&self, _: &str) -> Result<Box<dyn Claim>, BackendError> {
        Err(outage())
    }
    async fn get(&self, _: &str, _: Option<Range<u64>>) -> Result<ByteStream, BackendError> {
        Err(outage())
    }
    async fn read(&self, _: &str, _: u64) -> Result<Bytes, BackendError> {
        Err(outage())
    }
    async fn put(&self, _: &str, _: Bytes) -> Result<(), BackendError> {
        Err(outage())
    }
    async fn delete(&self, _: &str) -> Result<(), BackendError> {
        Err(outage())
    }
    async fn delete_prefix(&self, _: &str) -> Result<(), BackendError> {
        Err(outage())
    }
    async fn list(&self, _: &str) -> Result<Vec<String>, BackendError> {
        Err(outage())
    }
    async fn append(&self, _: &str, _: u64) -> Result<Box<dyn Appender>, BackendError> {
        Err(outage())
    }
    async fn appended(&self, _: &str) -> Result<Appended, BackendError> {
        Err(outage())
    }
    async fn commit(&self, _: &str, _: &str) -> Result<(), BackendError> {
        Err(outage())
    }
    async fn rename(&self, _: &str, _: &str) -> Result<(), BackendError> {
        Err(outage())
    }
    async fn abort(&self, _: &str) -> Result<(), BackendError> {
        Err(outage())
    }
}

#[tokio::test]
async fn storage_failures_tell_the_client_nothing_internal() {
    let store = Store::new(std::sync::Arc::new(Down), 1 << 20);
    let app = registry::router(registry::App::new(store));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve::serve(
        listener,
        app,
        serve::Limits::new(Duration::from_secs(5)),
        std::future::pending(),
    ));
    let client = testkit::http_client();
    for (method, path) in [
        (reqwest::Method::GET, "/v2/app/manifests/v1"),
        (
            reqwest::Method::HEAD,
            "/v2/app/blobs/sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ),
        (reqwest::Method::POST, "/v2/app/blobs/uploads/"),
        (reqwest::Method::GET, "/v2/_catalog"),
        (reqwest::Method::GET, "/readyz"),
    ] {
        let resp = client
            .request(method.clone(), format!("http://{addr}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 503, "{method} {path}");
        assert!(
            resp.headers().contains_key("retry-after"),
            "{method} {path}"
        );
        let body = resp.text().await.unwrap();
        if method == reqwest::Method::HEAD {
            continue;
        }
        for secret in [
            "storage.internal",
            "secret-bucket",
            "docker/registry",
            "<Error>",
        ] {
            assert!(
                !body.contains(secret),
                "{method} {path} leaks {secret:?}: {body}"
            );
        }
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["errors"][0]["code"], "UNAVAILABLE", "{body}");
        assert!(
            v["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("request id"),
            "{body}"
        );
    }
}
