//! A registry that accepts connections and never answers fails a request after the read
//! timeout, instead of holding a mirror's pull or a builder's publish for good.

use std::time::{Duration, Instant};

use registry_client::{Client, Error, ImageRef};

#[tokio::test]
async fn a_registry_that_never_answers_fails_the_request() {
    // reqwest is built without a default TLS provider in the workspace, as the binary is.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // testkit::SilentServer's twin: testkit depends on this crate, so it cannot be used here.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let registry = silent.local_addr().unwrap().to_string();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            open.push(conn);
        }
    });
    let image = ImageRef::parse(&format!("{registry}/apps/web:v1")).unwrap();
    let client = Client::new(&registry, None).with_read_timeout(Duration::from_secs(1));
    let start = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(20), client.manifest(&image))
        .await
        .expect("the request was still waiting on a silent registry after 20 s");
    let Err(err) = outcome else {
        panic!("a silent registry cannot serve a manifest")
    };
    assert!(matches!(err, Error::Http { .. }), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    held.abort();
}
