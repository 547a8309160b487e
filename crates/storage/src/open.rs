//! From storage settings to a backend, the one way every part of Quayside (the registry, gc,
//! fsck, check, and the tests) opens storage: the object_store client with the credentials the
//! settings name (or the default chain when they name none), the retry policy, S3's copy limit,
//! Azure's copy waiter, and the bucket created on start as deis-registry's create-bucket did
//! (idempotently, so a second start changes nothing).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::ClientOptions;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use secrets::Secret;

use crate::azure::{CopyWaiter, SharedKey};
use crate::object::S3_COPY_LIMIT;
use crate::provision::{self, ProvisionError, Provisioned};
use crate::{Backend, FsBackend, ObjectBackend};

/// Where the registry's data lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settings {
    Filesystem {
        root: PathBuf,
    },
    S3 {
        bucket: String,
        region: String,
        /// Any S3-compatible endpoint; `None` is AWS.
        endpoint: Option<String>,
        /// `None` for both: the default credential chain (env, profile, IRSA, instance role).
        access_key: Option<Secret>,
        secret_key: Option<Secret>,
        path_style: bool,
        root: String,
    },
    Gcs {
        bucket: String,
        key_file: PathBuf,
        root: String,
    },
    Azure {
        account: String,
        key: Secret,
        container: String,
        endpoint: Option<String>,
        root: String,
    },
}

impl Settings {
    /// Where this is, for logs (never credentials): `s3:bucket@endpoint`, `filesystem:/path`.
    pub fn describe(&self) -> String {
        match self {
            Settings::Filesystem { root } => format!("filesystem:{}", root.display()),
            Settings::S3 {
                bucket, endpoint, ..
            } => format!("s3:{bucket}@{}", endpoint.as_deref().unwrap_or("aws")),
            Settings::Gcs { bucket, .. } => format!("gcs:{bucket}"),
            Settings::Azure {
                account, container, ..
            } => format!("azure:{account}/{container}"),
        }
    }
}

/// How to open, beyond where.
#[derive(Clone, Debug)]
pub struct Options {
    /// fsync filesystem blob data before it becomes visible.
    pub fsync: bool,
    /// Write filesystem upload data with `O_DIRECT` where the filesystem takes it.
    pub direct_io: bool,
    /// Retries for transient object-store errors.
    pub retry: object_store::RetryConfig,
    /// Largest object S3 copies server-side; larger ones are streamed through.
    pub s3_copy_limit: u64,
    /// How long a request may wait for the store's next bytes (headers or body) before it
    /// fails and, for reads, is retried. There is no limit on a whole request: a blob streams
    /// to a client at the client's pace, so a large pull may take minutes, and object_store's
    /// default (30 s for the whole request, body included) cut such pulls short.
    pub read_timeout: Duration,
}

impl Default for Options {
    /// Production's: fsync on; 3 retries within 20 s, because object_store's default (10 tries
    /// over 180 s) would hold a request for minutes while storage is down and the health check
    /// is what reports an outage; S3's own 5 GiB copy limit.
    fn default() -> Options {
        Options {
            fsync: true,
            direct_io: true,
            retry: object_store::RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(20),
                ..Default::default()
            },
            s3_copy_limit: S3_COPY_LIMIT,
            read_timeout: Duration::from_secs(30),
        }
    }
}

/// How long a connection to the store may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Options {
    /// The HTTP client settings every object store is opened with.
    fn client(&self) -> ClientOptions {
        ClientOptions::new()
            .with_timeout_disabled()
            .with_read_timeout(self.read_timeout)
            .with_connect_timeout(CONNECT_TIMEOUT)
    }

    /// The client for the requests object_store does not make (creating the bucket, watching an
    /// Azure copy), with the same limits, so a store that stops answering fails them too.
    fn http(&self) -> Result<reqwest::Client, OpenError> {
        reqwest::Client::builder()
            .read_timeout(self.read_timeout)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| OpenError::Provision(provision::request_error("the HTTP client", e)))
    }
}

/// The setting an [`OpenError::Setting`] is about, for the caller to name in its own terms
/// (a flag, an env var, a key file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    FilesystemRoot,
    S3Bucket,
    GcsBucket,
    GcsKeyFile,
    AzureKey,
    AzureContainer,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A setting that cannot work; retrying will not help.
    #[error("{reason}")]
    Setting { setting: Setting, reason: String },
    #[error("{what} client: {source}")]
    Client {
        what: &'static str,
        source: object_store::Error,
    },
    #[error(transparent)]
    Provision(ProvisionError),
}

fn setting(setting: Setting, reason: String) -> OpenError {
    OpenError::Setting { setting, reason }
}

/// The backend `settings` describe, with its bucket or container created if missing.
pub async fn open(settings: &Settings, options: &Options) -> Result<Arc<dyn Backend>, OpenError> {
    Ok(match settings {
        Settings::Filesystem { root } => {
            std::fs::create_dir_all(root).map_err(|e| {
                let reason = format!(
                    "{}: cannot create it ({e}); point it at a writable directory",
                    root.display()
                );
                setting(Setting::FilesystemRoot, reason)
            })?;
            Arc::new(FsBackend::new(root, options.fsync).direct_io(options.direct_io))
        }
        Settings::S3 { .. } => open_s3(settings, options).await?,
        Settings::Gcs { .. } => open_gcs(settings, options).await?,
        Settings::Azure { .. } => open_azure(settings, options).await?,
    })
}

async fn open_s3(settings: &Settings, options: &Options) -> Result<Arc<dyn Backend>, OpenError> {
    let Settings::S3 {
        bucket,
        region,
        endpoint,
        access_key,
        secret_key,
        path_style,
        root,
    } = settings
    else {
        unreachable!("open_s3 is called for S3 settings")
    };
    // AWS_* env as `from_env` reads it: with no keys given, AWS_* env, web identity (IRSA) and
    // the instance role apply, as distribution's driver does when its access key is empty.
    // Read after our client options, which would otherwise replace AWS_PROXY_URL and the like.
    let mut builder = AmazonS3Builder::new().with_client_options(options.client());
    for (key, value) in std::env::vars_os() {
        let (Some(key), Some(value)) = (key.to_str(), value.to_str()) else {
            continue;
        };
        if !key.starts_with("AWS_") {
            continue;
        }
        if let Ok(key) = key.to_ascii_lowercase().parse() {
            builder = builder.with_config(key, value);
        }
    }
    let mut builder = builder
        .with_bucket_name(bucket)
        .with_region(region)
        .with_virtual_hosted_style_request(!path_style)
        .with_retry(options.retry.clone());
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
    let s3 = builder
        .build()
        .map_err(|source| OpenError::Client { what: "S3", source })?;
    let outcome = provision::ensure_s3_bucket(&options.http()?, &s3, bucket, region)
        .await
        .map_err(|e| provision_error(e, Setting::S3Bucket))?;
    report("s3", bucket, outcome);
    let backend = ObjectBackend::new(Arc::new(s3), root).with_copy_limit(options.s3_copy_limit);
    Ok(Arc::new(backend))
}

async fn open_gcs(settings: &Settings, options: &Options) -> Result<Arc<dyn Backend>, OpenError> {
    let Settings::Gcs {
        bucket,
        key_file,
        root,
    } = settings
    else {
        unreachable!("open_gcs is called for GCS settings")
    };
    let gcs = GoogleCloudStorageBuilder::new()
        .with_bucket_name(bucket)
        .with_service_account_path(key_file.display().to_string())
        // GCS's own default: the base URL comes from the key file, an emulator's is http.
        .with_client_options(options.client().with_allow_http(true))
        .with_retry(options.retry.clone())
        .build()
        .map_err(|source| OpenError::Client {
            what: "GCS",
            source,
        })?;
    let key = GcsKey::read(key_file)?;
    match &key.project_id {
        Some(project) => {
            let outcome = provision::ensure_gcs_bucket(
                &options.http()?,
                &gcs,
                &key.base_url(),
                project,
                bucket,
            )
            .await
            .map_err(|e| provision_error(e, Setting::GcsBucket))?;
            report("gcs", bucket, outcome);
        }
        None => tracing::warn!(
            bucket,
            key_file = %key_file.display(),
            "the key has no project_id: the bucket is not created if missing"
        ),
    }
    Ok(Arc::new(ObjectBackend::new(Arc::new(gcs), root)))
}

async fn open_azure(settings: &Settings, options: &Options) -> Result<Arc<dyn Backend>, OpenError> {
    let Settings::Azure {
        account,
        key,
        container,
        endpoint,
        root,
    } = settings
    else {
        unreachable!("open_azure is called for Azure settings")
    };
    let mut builder = MicrosoftAzureBuilder::new()
        .with_account(account)
        .with_access_key(key.expose())
        .with_container_name(container)
        .with_client_options(options.client())
        .with_retry(options.retry.clone());
    if let Some(endpoint) = endpoint {
        builder = builder
            .with_endpoint(endpoint.clone())
            .with_allow_http(endpoint.starts_with("http://"));
    }
    let azure = builder.build().map_err(|source| OpenError::Client {
        what: "Azure Blob",
        source,
    })?;
    let service = endpoint
        .clone()
        .unwrap_or_else(|| format!("https://{account}.blob.core.windows.net"));
    let shared_key = SharedKey::new(account, key.expose()).map_err(|e| {
        setting(
            Setting::AzureKey,
            format!("the Azure account key is not base64 ({e})"),
        )
    })?;
    let http = options.http()?;
    let outcome =
        provision::ensure_azure_container(&http, &service, account, key.expose(), container)
            .await
            .map_err(|e| provision_error(e, Setting::AzureContainer))?;
    report("azure", container, outcome);
    let waiter = CopyWaiter::new(http, &service, container, shared_key);
    Ok(Arc::new(
        ObjectBackend::new(Arc::new(azure), root).with_copy_waiter(waiter),
    ))
}

/// The fields of a service-account key that provisioning needs.
#[derive(serde::Deserialize)]
struct GcsKey {
    project_id: Option<String>,
    /// object_store's field for local emulators.
    gcs_base_url: Option<String>,
}

impl GcsKey {
    fn read(path: &std::path::Path) -> Result<GcsKey, OpenError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            setting(
                Setting::GcsKeyFile,
                format!("GCS key {}: {e}", path.display()),
            )
        })?;
        serde_json::from_str(&text).map_err(|e| {
            setting(
                Setting::GcsKeyFile,
                format!(
                    "GCS key {} is not a service-account key JSON ({e})",
                    path.display()
                ),
            )
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

/// A bucket name another account owns is a setting to change; anything else is the service's.
fn provision_error(e: ProvisionError, which: Setting) -> OpenError {
    match e {
        ProvisionError::TakenByAnother(_) => setting(which, e.to_string()),
        other => OpenError::Provision(other),
    }
}
