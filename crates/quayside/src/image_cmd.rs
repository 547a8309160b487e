//! `quayside image …`: the registry decisions of Workflow's controller and builder, as a CLI.

use std::path::PathBuf;

use base64::Engine as _;
use images::{AppCredentials, ImageRef, Location, Tag, port};
use secrets::{Secret, SecretDir};

use crate::ConfigError;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// on-cluster, off-cluster, ecr or gcr (Workflow's `global.registry_location`).
    #[arg(
        long,
        env = "DEIS_REGISTRY_LOCATION",
        default_value = "on-cluster",
        global = true
    )]
    location: String,
    /// The mounted `registry-secret` (off-cluster, ecr, gcr).
    #[arg(
        long,
        env = "QUAYSIDE_REGISTRY_SECRET_DIR",
        default_value = "/var/run/secrets/deis/registry/creds",
        global = true
    )]
    registry_secret_dir: PathBuf,
    /// The node proxy's port: on-cluster images are `127.0.0.1:<port>/<app>`.
    #[arg(
        long,
        env = "DEIS_REGISTRY_PROXY_PORT",
        default_value_t = 5555,
        global = true
    )]
    host_port: u16,
    /// Pull secrets are `<prefix>`, `<prefix>-off-cluster`, `<prefix>-ecr`, `<prefix>-gcr`.
    #[arg(
        long,
        env = "DEIS_REGISTRY_SECRET_PREFIX",
        default_value = "private-registry",
        global = true
    )]
    secret_prefix: String,
    /// ECR API endpoint (VPC endpoints, tests); ECR image names need the account, which the
    /// token request tells when neither registryid nor hostname is set.
    #[arg(long, env = "AWS_ENDPOINT_URL", global = true)]
    aws_endpoint_url: Option<String>,
    #[command(flatten)]
    on_cluster: OnClusterCredentials,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Print the image reference a build of the app gets.
    Name {
        #[arg(long)]
        app: String,
        /// A Dockerfile build's git sha (tag `git-<sha8>`).
        #[arg(long, conflicts_with = "version", required_unless_present = "version")]
        sha: Option<String>,
        /// A release version (tag `v<N>`).
        #[arg(long)]
        version: Option<u64>,
    },
    /// Print the pull secret the app's pods reference, as JSON: the `imagePullSecrets` entry and,
    /// unless the token refresher owns it (ecr, gcr), the Secret to apply in the app's namespace.
    PullSecret {
        #[arg(long)]
        app: String,
        /// The release image (its registry host is the auths key for app credentials).
        #[arg(long)]
        image: String,
        /// The app's own registry credentials (`deis registry:set`).
        #[arg(long, requires = "password")]
        username: Option<String>,
        #[arg(long, env = "QUAYSIDE_APP_REGISTRY_PASSWORD", value_parser = secret, hide_env_values = true)]
        password: Option<Secret>,
        #[arg(long)]
        hostname: Option<String>,
    },
    /// Copy an image (every platform of an index) from any registry into the configured one as
    /// `<app>:v<version>`, with no Docker daemon; prints the new reference.
    Publish {
        /// The source image (`deis pull <src>`); `:latest` when no tag.
        source: String,
        #[arg(long)]
        app: String,
        #[arg(long)]
        version: u64,
        #[command(flatten)]
        source_credentials: SourceCredentials,
        /// Push to this host:port instead of the image name's registry (on-cluster: the
        /// registry Service, e.g. `deis-registry.deis.svc:80`, rather than the node proxy).
        #[arg(long, env = "QUAYSIDE_PUBLISH_TO")]
        push_to: Option<String>,
    },
    /// Print the port the app's pods get, by the controller's rules: buildpack 5000; with the
    /// app's own credentials or off-cluster the app's PORT; else PORT, or the first port the
    /// image exposes (its config's ExposedPorts, read through the registry API). Prints nothing
    /// for a process type that needs no port.
    Port {
        /// The release image; needed only when the port is read from it.
        image: Option<String>,
        #[arg(long, value_enum, default_value = "image")]
        build_type: BuildKind,
        /// The app's PORT config, when set (it wins unread where the rules allow).
        #[arg(long)]
        config_port: Option<String>,
        /// The process type gets no Service (not `web`/`cmd`): an image without EXPOSE is fine.
        #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
        not_routable: bool,
        #[command(flatten)]
        source_credentials: SourceCredentials,
    },
    /// Create the app's ECR repository before a build pushes to it (nothing to do elsewhere).
    EnsureRepo {
        #[arg(long)]
        app: String,
    },
}

/// How the release was built (Workflow's build types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum BuildKind {
    /// `deis pull <image>`.
    Image,
    /// `git push` of a Dockerfile app.
    Dockerfile,
    /// `git push` of a buildpack app (always port 5000).
    Buildpack,
}

impl From<BuildKind> for port::BuildType {
    fn from(kind: BuildKind) -> port::BuildType {
        match kind {
            BuildKind::Image => port::BuildType::Image,
            BuildKind::Dockerfile => port::BuildType::Dockerfile,
            BuildKind::Buildpack => port::BuildType::Buildpack,
        }
    }
}

/// The platform's push identity for the in-cluster registry (the chart's `deis-registry-push`
/// Secret): `publish` pushes with it and `port` reads with it. Other locations have their own.
#[derive(clap::Args, Debug)]
struct OnClusterCredentials {
    /// On-cluster: the push identity's user name.
    #[arg(
        long,
        env = "QUAYSIDE_REGISTRY_USERNAME",
        global = true,
        conflicts_with = "registry_credentials_dir"
    )]
    registry_username: Option<String>,
    #[arg(long, env = "QUAYSIDE_REGISTRY_PASSWORD", value_parser = secret, hide_env_values = true, global = true)]
    registry_password: Option<Secret>,
    /// On-cluster: a directory with `username` and `password` files (the push Secret, mounted).
    #[arg(long, env = "QUAYSIDE_REGISTRY_CREDENTIALS_DIR", global = true)]
    registry_credentials_dir: Option<PathBuf>,
}

impl OnClusterCredentials {
    fn get(&self) -> Result<Option<registry_client::Credentials>, ConfigError> {
        if let Some(dir) = &self.registry_credentials_dir {
            let dir = SecretDir::new(dir);
            return match (dir.get("username"), dir.get("password")) {
                (Some(username), Some(password)) => Ok(Some(registry_client::Credentials {
                    username,
                    password: Secret::new(password),
                })),
                _ => Err(ConfigError(format!(
                    "--registry-credentials-dir / QUAYSIDE_REGISTRY_CREDENTIALS_DIR {}: needs the files username and password (mount the deis-registry-push Secret there)",
                    dir.dir().display()
                ))),
            };
        }
        match (&self.registry_username, &self.registry_password) {
            (None, None) => Ok(None),
            (Some(username), Some(password)) => Ok(Some(registry_client::Credentials {
                username: username.clone(),
                password: password.clone(),
            })),
            _ => Err(ConfigError(
                "--registry-username / QUAYSIDE_REGISTRY_USERNAME and --registry-password / QUAYSIDE_REGISTRY_PASSWORD go together".into(),
            )),
        }
    }
}

/// The app's own registry credentials (`deis registry:set`), for a private source image.
#[derive(clap::Args, Debug)]
struct SourceCredentials {
    #[arg(long = "username")]
    username: Option<String>,
    #[arg(long = "password", env = "QUAYSIDE_APP_REGISTRY_PASSWORD", value_parser = secret, hide_env_values = true)]
    password: Option<Secret>,
}

impl SourceCredentials {
    fn get(self) -> Result<Option<registry_client::Credentials>, ConfigError> {
        match (self.username, self.password) {
            (None, None) => Ok(None),
            (Some(username), Some(password)) => {
                Ok(Some(registry_client::Credentials { username, password }))
            }
            _ => Err(ConfigError(
                "Registry auth requires a username and a password".into(),
            )),
        }
    }
}

fn secret(s: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret::new(s))
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let secret_dir = SecretDir::new(&args.registry_secret_dir);
    let origin = crate::settings::origin("--location", "DEIS_REGISTRY_LOCATION");
    let location =
        workflow::location::load_from(&args.location, &origin, &secret_dir, args.host_port)
            .map_err(|errors| ConfigError(errors.join("\n")))?;
    let endpoint = args.aws_endpoint_url.clone();
    match args.command {
        Command::Name { app, sha, version } => {
            let tag = match (sha, version) {
                (Some(sha), _) => Tag::GitSha(sha),
                (None, Some(n)) => Tag::Version(n),
                (None, None) => unreachable!("clap requires --sha or --version"),
            };
            let name = match images::image_name(&location, &app, &tag) {
                Err(images::NameError::EcrAccountUnknown) => {
                    let credential = platform_credential(&location, endpoint).await?;
                    images::image_name(&with_registry_of(location, credential.as_ref()), &app, &tag)
                }
                named => named,
            }
            .map_err(|e| ConfigError(e.to_string()))?;
            println!("{name}");
        }
        Command::PullSecret {
            app,
            image,
            username,
            password,
            hostname,
        } => {
            let credentials = match (username, password) {
                (Some(username), Some(password)) => Some(AppCredentials {
                    username,
                    password,
                    hostname,
                }),
                _ => None,
            };
            let rendered =
                images::pull_secret(&location, credentials.as_ref(), &image, &args.secret_prefix);
            println!("{}", render(&app, rendered));
        }
        Command::Publish {
            source,
            app,
            version,
            source_credentials,
            push_to,
        } => {
            let from = ImageRef::parse(&source).map_err(|e| ConfigError(e.to_string()))?;
            if let Some(message) = images::reserved(&from.repository) {
                return Err(ConfigError(message).into());
            }
            // One request to the issuer: the credential names ECR's host and pushes.
            let credential = platform_credential(&location, endpoint).await?;
            let location = with_registry_of(location, credential.as_ref());
            let name = images::image_name(&location, &app, &Tag::Version(version))
                .map_err(|e| ConfigError(e.to_string()))?;
            let mut to = ImageRef::parse(&name).map_err(|e| ConfigError(e.to_string()))?;
            if let Some(host) = push_to {
                to.registry = host;
            }
            let src = registry_client::Client::new(&from.registry, source_credentials.get()?);
            let push_credentials = match credential {
                Some(c) => Some(for_client(c)),
                None => args.on_cluster.get()?,
            };
            let dst = registry_client::Client::new(&to.registry, push_credentials);
            publish(&src, &from, &dst, &to).await?;
            println!("{name}");
        }
        Command::Port {
            image,
            build_type,
            config_port,
            not_routable,
            source_credentials,
        } => {
            let question = port::PortQuestion {
                build: build_type.into(),
                config_port: config_port.as_deref(),
                app_credentials: source_credentials.username.is_some(),
                on_cluster: matches!(location, Location::OnCluster { .. }),
                routable: !not_routable,
            };
            let answer = match port::decide(&question).map_err(|e| anyhow::anyhow!(e))? {
                port::PortAnswer::Port(p) => Some(p),
                port::PortAnswer::NoPort => None,
                port::PortAnswer::ReadImage => {
                    let image = image.ok_or_else(|| {
                        ConfigError(
                            "no PORT is set, so the port is read from the image: give IMAGE".into(),
                        )
                    })?;
                    let exposed = exposed_port(&image, args.on_cluster.get()?).await?;
                    port::from_image(exposed, question.routable).map_err(|e| anyhow::anyhow!(e))?
                }
            };
            if build_type == BuildKind::Buildpack {
                tracing::info!("buildpack type detected. Defaulting to $PORT 5000");
            }
            if let Some(p) = answer {
                println!("{p}");
            }
        }
        Command::EnsureRepo { app } => ensure_repo(&location, &app, endpoint).await?,
    }
    Ok(())
}

/// The first port `image`'s config exposes, read with the on-cluster identity.
async fn exposed_port(
    image: &str,
    credentials: Option<registry_client::Credentials>,
) -> anyhow::Result<Option<u16>> {
    let image = ImageRef::parse(image).map_err(|e| ConfigError(e.to_string()))?;
    let client = registry_client::Client::new(&image.registry, credentials);
    let config = registry_client::copy::image_config(&client, &image).await?;
    Ok(images::exposed_port(&config))
}

/// The platform's credential for its own registry (none on-cluster): one request to the issuer.
async fn platform_credential(
    location: &Location,
    aws_endpoint: Option<String>,
) -> anyhow::Result<Option<credentials::Credential>> {
    let options = credentials::Options {
        aws_endpoint,
        ..Default::default()
    };
    match credentials::Provider::new(location, &options).await {
        Some(provider) => Ok(Some(provider.fetch().await?)),
        None => Ok(None),
    }
}

fn for_client(c: credentials::Credential) -> registry_client::Credentials {
    registry_client::Credentials {
        username: c.username,
        password: c.password,
    }
}

async fn publish(
    src: &registry_client::Client,
    from: &ImageRef,
    dst: &registry_client::Client,
    to: &ImageRef,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut done = 0usize;
    let mut progress = |blob: &oci::Descriptor, fate: registry_client::copy::BlobFate| {
        done += 1;
        if terminal {
            eprintln!("{done:>4} {} {:>10} {fate:?}", blob.digest, blob.size);
        } else {
            tracing::debug!(digest = %blob.digest, size = blob.size, ?fate, "blob");
        }
    };
    let (digest, report) = registry_client::copy::copy(src, from, dst, to, &mut progress).await?;
    tracing::info!(
        from = %from, to = %to, %digest,
        manifests = report.manifests, blobs = report.blobs, copied = report.copied,
        mounted = report.mounted, already_there = report.already_there,
        bytes = report.bytes_copied, seconds = (started.elapsed().as_secs_f64() * 1e3).round() / 1e3,
        "published"
    );
    Ok(())
}

/// Deis's builder created `<app>` in ECR before pushing (RepositoryAlreadyExists is success).
async fn ensure_repo(
    location: &Location,
    app: &str,
    endpoint: Option<String>,
) -> anyhow::Result<()> {
    let Location::Ecr(ecr) = location else {
        tracing::info!(
            location = location.name(),
            "no repository to create outside ECR"
        );
        return Ok(());
    };
    let options = credentials::Options {
        aws_endpoint: endpoint,
        ..Default::default()
    };
    let provider = credentials::EcrProvider::new(ecr, &options).await;
    match provider.ensure_repository(app).await? {
        credentials::Repository::Created => println!("created {app}"),
        credentials::Repository::Existed => println!("exists {app}"),
    }
    Ok(())
}

/// The ECR registry host is `<account>.dkr.ecr.<region>.amazonaws.com`; without `hostname` the
/// account is the one ECR named in the token answer's proxyEndpoint (the credential's registry).
fn with_registry_of(location: Location, credential: Option<&credentials::Credential>) -> Location {
    match (location, credential) {
        (Location::Ecr(mut ecr), Some(c)) if ecr.hostname.is_none() => {
            ecr.hostname = Some(c.registry.clone());
            Location::Ecr(ecr)
        }
        (location, _) => location,
    }
}

fn render(app: &str, secret: Option<images::PullSecret>) -> serde_json::Value {
    let Some(secret) = secret else {
        return serde_json::json!({"imagePullSecrets": []});
    };
    let mut out = serde_json::json!({"imagePullSecrets": [{"name": secret.name}]});
    if let Some(config) = secret.dockerconfigjson {
        let data = base64::engine::general_purpose::STANDARD.encode(config.expose());
        out["secret"] = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/dockerconfigjson",
            "metadata": {
                "name": secret.name,
                "namespace": app,
                "labels": {"app": app, "heritage": "deis"},
            },
            "data": {".dockerconfigjson": data},
        });
    }
    out
}
