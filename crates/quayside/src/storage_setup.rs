//! From storage settings to a backend: builds the object_store client with the credentials the
//! settings name (or the default chain when they name none) and creates the bucket on start, as
//! deis-registry's create-bucket did: idempotently, so a second start changes nothing.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::signer::Signer;
use storage::{Backend, FsBackend, ObjectBackend};
use workflow::StorageSettings;

/// Retries for transient storage errors, with object_store's exponential back-off. Its default
/// (10 tries over 180 s) would hold a request for minutes while storage is down; the health check
/// is what reports an outage.
fn retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: 3,
        retry_timeout: Duration::from_secs(20),
        ..Default::default()
    }
}

pub async fn open(settings: &StorageSettings, fsync: bool) -> anyhow::Result<Arc<dyn Backend>> {
    Ok(match settings {
        StorageSettings::Filesystem { root } => {
            std::fs::create_dir_all(root).map_err(|e| {
                crate::ConfigError(format!(
                    "--data-dir / QUAYSIDE_DATA_DIR {}: cannot create it ({e}); point it at a writable directory",
                    root.display()
                ))
            })?;
            Arc::new(FsBackend::new(root, fsync))
        }
        StorageSettings::S3 {
            bucket,
            region,
            endpoint,
            access_key,
            secret_key,
            path_style,
            root,
        } => {
            // from_env: with no keys given, AWS_* env, web identity (IRSA) and the instance role
            // apply, as distribution's driver does when its access key is empty.
            let mut builder = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_region(region)
                .with_virtual_hosted_style_request(!path_style)
                .with_retry(retry());
            if let Some(endpoint) = endpoint {
                builder = builder
                    .with_endpoint(endpoint)
                    .with_allow_http(endpoint.starts_with("http://"));
            }
            if let (Some(key), Some(secret)) = (access_key, secret_key) {
                builder = builder
                    .with_access_key_id(key.expose())
                    .with_secret_access_key(secret.expose());
            }
            let s3 = builder.build().context("S3 client")?;
            ensure_s3_bucket(&s3, bucket, region).await?;
            Arc::new(ObjectBackend::new(Arc::new(s3), root))
        }
        StorageSettings::Gcs {
            bucket,
            key_file,
            root,
        } => {
            let gcs = GoogleCloudStorageBuilder::new()
                .with_bucket_name(bucket)
                .with_service_account_path(key_file.display().to_string())
                .with_retry(retry())
                .build()
                .context("GCS client")?;
            Arc::new(ObjectBackend::new(Arc::new(gcs), root))
        }
        StorageSettings::Azure {
            account,
            key,
            container,
            endpoint,
            root,
        } => {
            let mut builder = MicrosoftAzureBuilder::new()
                .with_account(account)
                .with_access_key(key.expose())
                .with_container_name(container)
                .with_retry(retry());
            if let Some(endpoint) = endpoint {
                builder = builder
                    .with_endpoint(endpoint.clone())
                    .with_allow_http(endpoint.starts_with("http://"));
            }
            let azure = builder.build().context("Azure Blob client")?;
            Arc::new(ObjectBackend::new(Arc::new(azure), root))
        }
    })
}

/// Creates the bucket unless it exists. The request is presigned by the same client, so it uses
/// whatever credentials the data path uses (static keys, IRSA, instance role).
async fn ensure_s3_bucket(s3: &AmazonS3, bucket: &str, region: &str) -> anyhow::Result<()> {
    let url = s3
        .signed_url(
            http::Method::PUT,
            &object_store::path::Path::from(""),
            Duration::from_secs(300),
        )
        .await
        .context("signing CreateBucket")?;
    // us-east-1 takes no location constraint (AWS answers InvalidLocationConstraint).
    let body = if region == "us-east-1" {
        String::new()
    } else {
        format!(
            "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
             <LocationConstraint>{region}</LocationConstraint></CreateBucketConfiguration>"
        )
    };
    let response = reqwest::Client::new()
        .put(url)
        .body(body)
        .send()
        .await
        .with_context(|| format!("creating bucket {bucket}"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if status.is_success() {
        tracing::info!(bucket, "bucket ready");
    } else if text.contains("BucketAlreadyOwnedByYou") {
        tracing::info!(bucket, "bucket exists");
    } else if text.contains("BucketAlreadyExists") {
        bail!(crate::ConfigError(format!(
            "S3 bucket {bucket:?} belongs to another account: choose another name \
             (--s3-bucket / REGISTRY_STORAGE_S3_BUCKET / registry-bucket)"
        )));
    } else {
        bail!("creating bucket {bucket}: S3 answered {status}: {text:.300}");
    }
    Ok(())
}
