//! `quayside registry`: the registry on local disk or object storage.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use secrets::{Secret, SecretDir};
use storage::Store;
use workflow::StorageInputs;

use crate::ConfigError;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on (`host:port`, the host a name or an address, or a bare port for
    /// every interface); `0.0.0.0:5000` inside a cluster.
    #[arg(long, env = "QUAYSIDE_LISTEN", default_value = "127.0.0.1:5000")]
    listen: String,
    /// How often storage is checked.
    #[arg(long, env = "QUAYSIDE_HEALTH_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    health_interval: std::time::Duration,
    /// Consecutive failed checks after which every endpoint answers 503 (until one succeeds).
    #[arg(long, env = "QUAYSIDE_HEALTH_THRESHOLD", default_value_t = 3)]
    health_threshold: u32,
    /// Answer blob GETs with a 307 to a presigned URL of the object store (S3, GCS, Azure), so
    /// blob bytes bypass the registry, as distribution does; off: the registry streams them.
    #[arg(long, env = "QUAYSIDE_REDIRECT", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    redirect: bool,
    /// Send blobs on filesystem storage with sendfile(2) over plain HTTP/1 (the kernel copies
    /// file pages to the socket); off: read them into buffers and write those, as on HTTP/2.
    #[arg(long, env = "QUAYSIDE_SENDFILE", default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    sendfile: bool,
    /// Longest pause allowed between two pieces of a request body; a stalled upload then fails
    /// with 400 and can be resumed from its last acknowledged offset.
    #[arg(long, env = "QUAYSIDE_BODY_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    body_timeout: std::time::Duration,
    /// How long a manifest GET may answer from a tag (or digest) looked up earlier instead of
    /// reading storage again. Pushes and deletes through this process are seen at once; another
    /// replica's, within this. `0s`: read storage on every request.
    #[arg(long, env = "QUAYSIDE_CACHE_TTL", default_value = "1s", value_parser = humantime::parse_duration)]
    cache_ttl: std::time::Duration,
    #[command(flatten)]
    connections: crate::connection_args::ConnectionArgs,
    /// Requests a second each client address may make (a token bucket per address; 429 with
    /// Retry-After past it); off when unset. Behind the node proxy every node is one address.
    #[arg(long, env = "QUAYSIDE_RATE_LIMIT")]
    rate_limit: Option<std::num::NonZeroU32>,
    /// Requests a client may make at once before `--rate-limit` applies.
    #[arg(long, env = "QUAYSIDE_RATE_LIMIT_BURST", default_value = "100")]
    rate_limit_burst: std::num::NonZeroU32,
    #[command(flatten)]
    storage: StorageArgs,
    #[command(flatten)]
    auth: AuthArgs,
    /// Run garbage collection this often inside the registry (off when unset).
    #[arg(long, env = "QUAYSIDE_GC_INTERVAL", value_parser = humantime::parse_duration)]
    gc_interval: Option<std::time::Duration>,
    #[command(flatten)]
    gc: GcArgs,
    #[command(flatten)]
    mirror: MirrorArgs,
}

/// The pull-through cache: upstream registries served from the registry's own storage.
#[derive(clap::Args, Debug)]
struct MirrorArgs {
    /// An upstream to mirror, `HOST=URL` (repeatable; the env var comma-separated), e.g.
    /// `docker.io=https://registry-1.docker.io`. Clients ask for `HOST/<repo>` by path prefix,
    /// or by containerd's `?ns=HOST`.
    #[arg(long = "upstream", env = "QUAYSIDE_UPSTREAMS", value_delimiter = ',')]
    upstreams: Vec<String>,
    /// Credentials for an upstream: `HOST=DIR`, DIR holding `username` and `password` files (a
    /// mounted kubernetes.io/basic-auth Secret), or `HOST=ecr:DIR` / `HOST=gcr:DIR`, DIR a
    /// registry-secret of that location whose short-lived tokens are issued here and renewed at
    /// half-life. Repeatable; without one the upstream is pulled anonymously (Bearer tokens from
    /// its realm included).
    #[arg(
        long = "upstream-credentials",
        env = "QUAYSIDE_UPSTREAM_CREDENTIALS",
        value_delimiter = ','
    )]
    upstream_credentials: Vec<String>,
    /// How long a mirrored tag is served before it is checked upstream again (one HEAD).
    #[arg(long, env = "QUAYSIDE_UPSTREAM_TAG_TTL", default_value = "5m", value_parser = humantime::parse_duration)]
    upstream_tag_ttl: std::time::Duration,
    /// Where blobs being fetched from an upstream are spooled for the clients reading them
    /// (unlinked files: nothing is left behind). Needs room for the blobs in flight.
    #[arg(long, env = "QUAYSIDE_UPSTREAM_SPOOL_DIR", default_value_os_t = std::env::temp_dir())]
    upstream_spool_dir: PathBuf,
    /// Forget a mirrored repository nobody pulled for this long (its tags, manifests and blob
    /// links; the next gc reclaims its blobs); off when unset.
    #[arg(long, env = "QUAYSIDE_UPSTREAM_CACHE_MAX_AGE", value_parser = humantime::parse_duration)]
    upstream_cache_max_age: Option<std::time::Duration>,
    /// Blob fetches from upstreams running at once; a client asking for another uncached blob
    /// meanwhile gets 429 with Retry-After. Fetches go on when their clients leave, so this bounds
    /// what clients can make the registry hold (tasks, upstream connections, spool space).
    #[arg(long, env = "QUAYSIDE_UPSTREAM_MAX_FETCHES", default_value_t = 64)]
    upstream_max_fetches: usize,
}

impl MirrorArgs {
    fn options(&self) -> mirror::Options {
        mirror::Options {
            tag_ttl: self.upstream_tag_ttl,
            spool_dir: self.upstream_spool_dir.clone(),
            cache_max_age: self.upstream_cache_max_age,
            max_fetches: self.upstream_max_fetches.max(1),
        }
    }

    /// The declared upstreams with their credentials; every bad entry named with its flag.
    async fn upstreams(&self) -> Result<Vec<mirror::UpstreamConfig>, ConfigError> {
        let mut upstreams = self
            .upstreams
            .iter()
            .map(|u| {
                mirror::UpstreamConfig::parse(u)
                    .map_err(|e| ConfigError(format!("--upstream / QUAYSIDE_UPSTREAMS: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        for entry in &self.upstream_credentials {
            let (host, source) = entry.split_once('=').ok_or_else(|| {
                ConfigError(format!("{CREDENTIALS_FLAG}: {entry:?} is not HOST=DIR"))
            })?;
            let upstream = upstreams
                .iter_mut()
                .find(|u| u.host == host)
                .ok_or_else(|| {
                    ConfigError(format!(
                        "{CREDENTIALS_FLAG}: {host:?} is not declared with --upstream"
                    ))
                })?;
            upstream.credentials = Some(upstream_credentials(source).await?);
        }
        Ok(upstreams)
    }
}

const CREDENTIALS_FLAG: &str = "--upstream-credentials / QUAYSIDE_UPSTREAM_CREDENTIALS";

/// `DIR` (a basic-auth Secret: `username`, `password`), or `ecr:DIR` / `gcr:DIR` (a
/// registry-secret of that location, whose short-lived tokens are issued and renewed here).
async fn upstream_credentials(
    source: &str,
) -> Result<Arc<dyn registry_client::CredentialSource>, ConfigError> {
    let (kind, dir) = match source.split_once(':') {
        Some((kind @ ("ecr" | "gcr"), dir)) => (Some(kind), dir),
        _ => (None, source),
    };
    let secret = SecretDir::new(dir);
    let Some(kind) = kind else {
        // A file written by `echo` ends in a newline no password means.
        let key = |k: &str| {
            let value = secret
                .get(k)
                .map(|v| v.trim_end_matches(['\r', '\n']).to_owned());
            value.filter(|v| !v.is_empty()).ok_or_else(|| {
                ConfigError(format!(
                    "{CREDENTIALS_FLAG}: {} is missing or empty (the Secret needs keys username and password)",
                    secret.path(k).display()
                ))
            })
        };
        let credentials = registry_client::Credentials {
            username: key("username")?,
            password: Secret::new(key("password")?),
        };
        return Ok(Arc::new(credentials));
    };
    let location = workflow::location::load_from(kind, CREDENTIALS_FLAG, &secret, 0)
        .map_err(|errors| ConfigError(errors.join("\n")))?;
    let provider = credentials::Provider::new(&location, &credentials::Options::default())
        .await
        .ok_or_else(|| ConfigError(format!("{CREDENTIALS_FLAG}: {kind} issues no credentials")))?;
    Ok(Arc::new(Issued(credentials::Fresh::new(provider))))
}

/// An issuer's short-lived credentials as the upstream client asks for them.
struct Issued(credentials::Fresh<credentials::Provider>);

impl registry_client::CredentialSource for Issued {
    fn credentials(
        &self,
    ) -> std::pin::Pin<
        Box<dyn Future<Output = Result<registry_client::Credentials, String>> + Send + '_>,
    > {
        Box::pin(async move {
            let c = self.0.get().await.map_err(|e| e.to_string())?;
            Ok(registry_client::Credentials {
                username: c.username,
                password: c.password,
            })
        })
    }
}

/// What garbage collection deletes (`quayside gc`, and `registry --gc-interval`).
#[derive(clap::Args, Debug)]
pub(crate) struct GcArgs {
    /// Also delete manifests no tag reaches (through an index or as a referrer included).
    #[arg(long, env = "QUAYSIDE_GC_DELETE_UNTAGGED", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    gc_delete_untagged: bool,
    /// Blobs and manifests written more recently than this are kept, so pushes in flight keep
    /// their blobs.
    #[arg(long, env = "QUAYSIDE_GC_GRACE", default_value = "1h", value_parser = humantime::parse_duration)]
    gc_grace: std::time::Duration,
    /// Upload sessions started longer ago than this are purged.
    #[arg(long, env = "QUAYSIDE_GC_UPLOAD_MAX_AGE", default_value = "24h", value_parser = humantime::parse_duration)]
    gc_upload_max_age: std::time::Duration,
}

impl GcArgs {
    pub(crate) fn options(&self, dry_run: bool) -> storage::GcOptions {
        storage::GcOptions {
            dry_run,
            delete_untagged: self.gc_delete_untagged,
            grace: self.gc_grace,
            upload_max_age: self.gc_upload_max_age,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum AuthMode {
    /// Anyone who can reach the registry may do anything (Workflow's registry).
    None,
    /// Basic credentials from --htpasswd.
    Htpasswd,
    /// Docker token authentication: /auth/token issues short-lived signed tokens.
    Token,
}

/// Who may pull, push and delete.
#[derive(clap::Args, Debug)]
struct AuthArgs {
    #[arg(long, env = "QUAYSIDE_AUTH", value_enum, default_value = "none")]
    auth: AuthMode,
    /// Users, as `htpasswd -B` writes them (bcrypt only).
    #[arg(long, env = "QUAYSIDE_AUTH_HTPASSWD")]
    htpasswd: Option<PathBuf>,
    /// YAML rules: which users may pull/push/delete which repository patterns (default: every
    /// user everything).
    #[arg(long, env = "QUAYSIDE_AUTH_POLICY")]
    auth_policy: Option<PathBuf>,
    /// Repository patterns anyone may pull without credentials (comma-separated; `*` = all).
    #[arg(long, env = "QUAYSIDE_AUTH_ANONYMOUS_PULL", value_delimiter = ',')]
    anonymous_pull: Vec<String>,
    /// File holding the token-signing secret (at least 32 bytes), the same on every replica.
    #[arg(long, env = "QUAYSIDE_AUTH_TOKEN_SECRET_FILE")]
    auth_token_secret_file: Option<PathBuf>,
    /// The `service` tokens are for.
    #[arg(long, env = "QUAYSIDE_AUTH_SERVICE", default_value = "quayside")]
    auth_service: String,
    /// The token endpoint URL put in challenges (default: http(s)://<Host>/auth/token).
    #[arg(long, env = "QUAYSIDE_AUTH_REALM")]
    auth_realm: Option<String>,
    #[arg(long, env = "QUAYSIDE_AUTH_TOKEN_LIFETIME", default_value = "5m", value_parser = humantime::parse_duration)]
    auth_token_lifetime: std::time::Duration,
}

impl AuthArgs {
    /// The access rules, or every setting that is missing or unreadable, all at once.
    fn access(&self) -> Result<Option<access::Access>, ConfigError> {
        if self.auth == AuthMode::None {
            return Ok(None);
        }
        let mut errors = Vec::new();
        let users = self.users().map_err(|e| errors.push(e)).ok();
        let policy = self.policy().map_err(|e| errors.push(e)).ok();
        let issuer = match self.auth {
            AuthMode::Token => self.issuer().map_err(|e| errors.push(e)).ok(),
            _ => None,
        };
        let (Some(users), Some(policy)) = (users, policy) else {
            return Err(ConfigError(errors.join("\n")));
        };
        match (self.auth, issuer) {
            (AuthMode::Htpasswd, _) => Ok(Some(access::Access::basic(users, policy))),
            (_, Some(issuer)) => Ok(Some(access::Access::token(users, policy, issuer))),
            (_, None) => Err(ConfigError(errors.join("\n"))),
        }
    }

    fn users(&self) -> Result<access::Htpasswd, String> {
        const FIX: &str = "create it with htpasswd -Bc FILE USER";
        let path = self.htpasswd.as_ref().ok_or_else(|| {
            format!(
                "--auth {} needs --htpasswd / QUAYSIDE_AUTH_HTPASSWD: {FIX}",
                self.mode()
            )
        })?;
        access::Htpasswd::load(path).map_err(|e| {
            format!("--htpasswd / QUAYSIDE_AUTH_HTPASSWD {e}: {FIX} (bcrypt entries only)")
        })
    }

    fn policy(&self) -> Result<access::Policy, String> {
        let policy = match &self.auth_policy {
            Some(path) => access::Policy::load(path).map_err(|e| {
                format!("--auth-policy / QUAYSIDE_AUTH_POLICY {e}; without the flag every user may do everything")
            })?,
            None => access::Policy::default(),
        };
        let anonymous = self
            .anonymous_pull
            .iter()
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty());
        Ok(policy.with_anonymous_pull(anonymous))
    }

    fn issuer(&self) -> Result<access::TokenIssuer, String> {
        const FIX: &str = "a file with at least 32 random bytes, the same on every replica (head -c 32 /dev/urandom | base64 > FILE)";
        let setting = "--auth-token-secret-file / QUAYSIDE_AUTH_TOKEN_SECRET_FILE";
        let path = self
            .auth_token_secret_file
            .as_ref()
            .ok_or_else(|| format!("--auth token needs {setting}: {FIX}"))?;
        let secret =
            std::fs::read(path).map_err(|e| format!("{setting} {}: {e}: {FIX}", path.display()))?;
        let secret = secret.trim_ascii().to_vec();
        if secret.len() < 32 {
            return Err(format!(
                "{setting} {}: {} bytes; use {FIX}",
                path.display(),
                secret.len()
            ));
        }
        Ok(access::TokenIssuer::new(
            secret,
            &self.auth_service,
            self.auth_token_lifetime.as_secs().max(1),
        ))
    }

    /// The value of `--auth` as the operator wrote it.
    fn mode(&self) -> String {
        clap::ValueEnum::to_possible_value(&self.auth)
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default()
    }
}

/// Where the data lives. Each flag also reads distribution's env var, and for object storage
/// any key not given falls back to Workflow's mounted `objectstorage-keyfile` secret.
#[derive(clap::Args, Debug)]
pub(crate) struct StorageArgs {
    /// filesystem, s3, gcs, azure or minio (Workflow's `global.storage`; swift is refused).
    #[arg(long, env = "REGISTRY_STORAGE", default_value = "filesystem")]
    storage: String,
    /// Directory holding the registry's data for `filesystem`, in CNCF distribution's layout (a
    /// distribution `rootdirectory` can be used as it is).
    #[arg(long, env = "QUAYSIDE_DATA_DIR", default_value = "./quayside-data")]
    data_dir: PathBuf,
    /// fsync blob data before it becomes visible, and each directory something is renamed into
    /// (filesystem), so committed blobs survive a power loss (a killed process never loses them
    /// either way).
    #[arg(long, env = "QUAYSIDE_FSYNC", default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    fsync: bool,
    /// Write upload data with O_DIRECT (filesystem): from the upload's buffer to the disk, not
    /// through the page cache, which costs CPU and makes `--fsync` write the whole blob at once;
    /// used only where aligned, and dropped by itself on a filesystem that refuses it.
    #[arg(long, env = "QUAYSIDE_DIRECT_IO", default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    direct_io: bool,
    /// Workflow's mounted `objectstorage-keyfile` secret: one file per key.
    #[arg(
        long,
        env = "QUAYSIDE_STORAGE_CREDS_DIR",
        default_value = "/var/run/secrets/deis/registry/creds"
    )]
    creds_dir: PathBuf,
    /// Largest manifest accepted, in bytes; garbage collection reads manifests with the same
    /// limit, so give `quayside gc` the registry's value.
    #[arg(long, env = "QUAYSIDE_MAX_MANIFEST_BYTES", default_value_t = 4 * 1024 * 1024)]
    max_manifest_bytes: u64,
    /// Prefix of every key in the bucket (distribution's `rootdirectory`).
    #[arg(long, env = "QUAYSIDE_STORAGE_ROOT_DIRECTORY")]
    root_directory: Option<String>,
    #[arg(long, env = "REGISTRY_STORAGE_S3_BUCKET")]
    s3_bucket: Option<String>,
    #[arg(long, env = "REGISTRY_STORAGE_S3_REGION")]
    s3_region: Option<String>,
    /// S3-compatible endpoint, e.g. `http://minio:9000`; unset for AWS.
    #[arg(long, env = "REGISTRY_STORAGE_S3_REGIONENDPOINT")]
    s3_endpoint: Option<String>,
    /// Empty with the secret key too: the default AWS chain (env, profile, IRSA, instance role).
    #[arg(long, env = "REGISTRY_STORAGE_S3_ACCESSKEY", value_parser = secret, hide_env_values = true)]
    s3_access_key: Option<Secret>,
    #[arg(long, env = "REGISTRY_STORAGE_S3_SECRETKEY", value_parser = secret, hide_env_values = true)]
    s3_secret_key: Option<Secret>,
    /// Path-style requests (`endpoint/bucket/key`), as MinIO and most S3-compatibles need.
    #[arg(long, env = "REGISTRY_STORAGE_S3_FORCEPATHSTYLE", num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    s3_path_style: Option<bool>,
    #[arg(long, env = "REGISTRY_STORAGE_GCS_BUCKET")]
    gcs_bucket: Option<String>,
    /// Service-account key JSON.
    #[arg(long, env = "REGISTRY_STORAGE_GCS_KEYFILE")]
    gcs_key_file: Option<PathBuf>,
    #[arg(long, env = "REGISTRY_STORAGE_AZURE_ACCOUNTNAME")]
    azure_account_name: Option<String>,
    #[arg(long, env = "REGISTRY_STORAGE_AZURE_ACCOUNTKEY", value_parser = secret, hide_env_values = true)]
    azure_account_key: Option<Secret>,
    #[arg(long, env = "REGISTRY_STORAGE_AZURE_CONTAINER")]
    azure_container: Option<String>,
    /// Blob endpoint, e.g. Azurite's `http://127.0.0.1:10000/devstoreaccount1`.
    #[arg(long, env = "QUAYSIDE_AZURE_ENDPOINT")]
    azure_endpoint: Option<String>,
    /// Workflow's in-cluster MinIO (`REGISTRY_STORAGE=minio`).
    #[arg(long, env = "DEIS_MINIO_SERVICE_HOST")]
    minio_host: Option<String>,
    #[arg(long, env = "DEIS_MINIO_SERVICE_PORT")]
    minio_port: Option<String>,
}

fn secret(s: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret::new(s))
}

impl StorageArgs {
    /// The store these settings describe (bucket provisioned, storage checked), and where it
    /// is, for logs (never credentials).
    pub(crate) async fn open(self) -> anyhow::Result<(Store, String)> {
        let (fsync, direct_io, max_manifest_bytes) =
            (self.fsync, self.direct_io, self.max_manifest_bytes);
        let settings = self
            .inputs()
            .resolve()
            .map_err(|e| ConfigError(e.to_string()))?;
        let options = storage::Options {
            fsync,
            direct_io,
            ..storage::Options::default()
        };
        let backend = storage::open(&settings, &options)
            .await
            .map_err(|e| match e {
                storage::OpenError::Setting { setting, reason } => ConfigError(format!(
                    "{}: {reason}",
                    workflow::storage::where_to_set(setting)
                ))
                .into(),
                other => anyhow::Error::new(other),
            })?;
        Ok((Store::new(backend, max_manifest_bytes), settings.describe()))
    }

    /// [`StorageArgs::open`] for tools that act on existing data (gc, fsck): a filesystem root
    /// that does not exist, or storage without any repository, is refused unless `allow_empty`.
    pub(crate) async fn open_existing(self, allow_empty: bool) -> anyhow::Result<(Store, String)> {
        let fix = "point it at the registry's data (the same settings the registry has), or pass --allow-empty when an empty registry is expected";
        let filesystem = matches!(self.storage.trim(), "" | "filesystem");
        if filesystem && !allow_empty && !self.data_dir.exists() {
            return Err(ConfigError(format!(
                "--data-dir / QUAYSIDE_DATA_DIR {} does not exist: {fix}",
                self.data_dir.display()
            ))
            .into());
        }
        let (store, storage) = self.open().await?;
        if !allow_empty && !store.holds_repositories().await? {
            return Err(ConfigError(format!(
                "{storage} holds no repositories (nothing under docker/registry/v2/repositories): {fix}"
            ))
            .into());
        }
        Ok((store, storage))
    }

    fn inputs(self) -> StorageInputs {
        StorageInputs {
            storage: Some(self.storage),
            creds: Some(SecretDir::new(self.creds_dir)),
            filesystem_root: self.data_dir,
            s3_bucket: self.s3_bucket,
            s3_region: self.s3_region,
            s3_endpoint: self.s3_endpoint,
            s3_access_key: self.s3_access_key,
            s3_secret_key: self.s3_secret_key,
            s3_path_style: self.s3_path_style,
            gcs_bucket: self.gcs_bucket,
            gcs_key_file: self.gcs_key_file,
            azure_account: self.azure_account_name,
            azure_key: self.azure_account_key,
            azure_container: self.azure_container,
            azure_endpoint: self.azure_endpoint,
            minio_host: self.minio_host,
            minio_port: self.minio_port,
            root_directory: self.root_directory,
        }
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let access = args.auth.access()?;
    let (store, storage) = args.storage.open().await?;
    let store = store.with_resolution_ttl(args.cache_ttl);
    let upstreams = args.mirror.upstreams().await?;
    let mut app = registry::App::new(store.clone())
        .with_redirect(args.redirect)
        .with_sendfile(args.sendfile)
        .with_body_timeout(args.body_timeout);
    if !upstreams.is_empty() {
        let hosts: Vec<_> = upstreams.iter().map(|u| u.host.clone()).collect();
        tracing::info!(upstreams = ?hosts, tag_ttl = ?args.mirror.upstream_tag_ttl, "mirroring");
        let (options, metrics) = (args.mirror.options(), app.metrics.mirror.clone());
        app = app.with_mirror(mirror::Mirror::new(
            store.clone(),
            upstreams,
            options,
            metrics,
        ));
        if let Some(mirror) = app.mirror.clone() {
            tokio::spawn(mirror.expire_unused());
        }
    }
    if let Some(rate) = args.rate_limit {
        app = app.with_rate_limit(rate, args.rate_limit_burst);
    }
    if let Some(access) = access {
        tracing::info!(mode = ?args.auth.auth, "access control on");
        app = app.with_access(access, args.auth.auth_realm.clone());
    }
    let health = registry::health::HealthConfig {
        interval: args.health_interval,
        threshold: args.health_threshold.max(1),
    };
    if let Some(interval) = args.gc_interval {
        let options = args.gc.options(false);
        tracing::info!(every = ?interval, grace = ?options.grace, delete_untagged = options.delete_untagged, "garbage collection scheduled");
        tokio::spawn(registry::gc::every(
            interval,
            store.clone(),
            options,
            app.metrics.clone(),
        ));
    }
    tokio::spawn(registry::health::watch(store, app.health.clone(), health));
    let app = registry::router(app);
    let listener = crate::connection_args::bind(&args.listen, "--listen / QUAYSIDE_LISTEN").await?;
    tracing::info!(
        listen = %listener.local_addr().map_or(args.listen.clone(), |a| a.to_string()),
        storage = %storage,
        "registry serving"
    );
    serve::serve(
        listener,
        app,
        args.connections.limits(),
        crate::shutdown_signal(),
    )
    .await
    .context("serving HTTP")
}
