//! An ECR endpoint that accepts connections and never answers fails a token fetch and a
//! repository creation after the attempt timeout and the SDK's retries, instead of holding
//! the refresher or a builder's push for good.

use std::time::{Duration, Instant};

use credentials::{EcrProvider, FetchError, Options};
use images::location::Ecr;
use secrets::Secret;

#[tokio::test]
async fn an_ecr_endpoint_that_never_answers_fails_fetches_and_repository_creation() {
    let silent = testkit::SilentServer::start().await;
    let ecr = Ecr {
        access_key: Some(Secret::new("AKIDTEST")),
        secret_key: Some(Secret::new("test-secret")),
        region: "us-east-1".to_owned(),
        registry_id: None,
        hostname: None,
    };
    let options = Options {
        aws_endpoint: Some(silent.url()),
        aws_attempt_timeout: Duration::from_millis(300),
    };
    let provider = EcrProvider::new(&ecr, &options).await;
    let limit = Duration::from_secs(20);

    let start = Instant::now();
    let fetched = tokio::time::timeout(limit, provider.fetch())
        .await
        .expect("a token fetch was still waiting on a silent endpoint after 20 s");
    assert!(
        matches!(fetched, Err(FetchError::Unavailable(_))),
        "{fetched:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );

    let created = tokio::time::timeout(limit, provider.ensure_repository("apps/web"))
        .await
        .expect("creating a repository was still waiting on a silent endpoint after 20 s");
    assert!(created.is_err());
}
