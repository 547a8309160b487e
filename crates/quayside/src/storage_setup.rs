//! From storage settings to a backend: builds the object_store client with the credentials the
//! settings name (or the default chain when they name none) and creates the bucket on start, as
//! deis-registry's create-bucket did: idempotently, so a second start changes nothing.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use storage::azure::{CopyWaiter, SharedKey};
use storage::object::S3_COPY_LIMIT;
use storage::provision::{self, ProvisionError, Provisioned};
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
            let outcome = provision::ensure_s3_bucket(&s3, bucket, region)
                .await
                .map_err(|e| provision_error(e, "--s3-bucket / REGISTRY_STORAGE_S3_BUCKET"))?;
            report("s3", bucket, outcome);
            Arc::new(ObjectBackend::new(Arc::new(s3), root).with_copy_limit(S3_COPY_LIMIT))
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
            let key = GcsKey::read(key_file)?;
            match &key.project_id {
                Some(project) => {
                    let outcome =
                        provision::ensure_gcs_bucket(&gcs, &key.base_url(), project, bucket)
                            .await
                            .map_err(|e| {
                                provision_error(e, "--gcs-bucket / REGISTRY_STORAGE_GCS_BUCKET")
                            })?;
                    report("gcs", bucket, outcome);
                }
                None => tracing::warn!(
                    bucket,
                    key_file = %key_file.display(),
                    "the key has no project_id: the bucket is not created if missing"
                ),
            }
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
            let service = endpoint
                .clone()
                .unwrap_or_else(|| format!("https://{account}.blob.core.windows.net"));
            let outcome =
                provision::ensure_azure_container(&service, account, key.expose(), container)
                    .await
                    .map_err(|e| provision_error(e, "--azure-container"))?;
            report("azure", container, outcome);
            let shared_key = SharedKey::new(account, key.expose()).map_err(|e| {
                crate::ConfigError(format!(
                    "the Azure account key is not base64 ({e}): check --azure-account-key / \
                     REGISTRY_STORAGE_AZURE_ACCOUNTKEY / key file accountkey"
                ))
            })?;
            let waiter = CopyWaiter::new(&service, container, shared_key);
            Arc::new(ObjectBackend::new(Arc::new(azure), root).with_copy_waiter(waiter))
        }
    })
}

/// The fields of a service-account key that provisioning needs.
#[derive(serde::Deserialize)]
struct GcsKey {
    project_id: Option<String>,
    /// object_store's field for local emulators.
    gcs_base_url: Option<String>,
}

impl GcsKey {
    fn read(path: &std::path::Path) -> anyhow::Result<GcsKey> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            crate::ConfigError(format!(
                "GCS key {}: {e}; set --gcs-key-file / REGISTRY_STORAGE_GCS_KEYFILE or key.json in the objectstorage-keyfile secret",
                path.display()
            ))
        })?;
        serde_json::from_str(&text).map_err(|e| {
            crate::ConfigError(format!(
                "GCS key {} is not a service-account key JSON ({e})",
                path.display()
            ))
            .into()
        })
    }

    fn base_url(&self) -> String {
        self.gcs_base_url
            .clone()
            .unwrap_or_else(|| "https://storage.googleapis.com".into())
    }
}

fn report(kind: &str, name: &str, outcome: Provisioned) {
    match outcome {
        Provisioned::Created => tracing::info!(kind, name, "bucket ready (created)"),
        Provisioned::Existed => tracing::info!(kind, name, "bucket exists"),
    }
}

fn provision_error(e: ProvisionError, flag: &str) -> anyhow::Error {
    match e {
        ProvisionError::TakenByAnother(_) => crate::ConfigError(format!("{e}; set {flag}")).into(),
        other => anyhow::Error::new(other),
    }
}
