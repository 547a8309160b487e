//! `quayside image …`: the registry decisions of Workflow's controller and builder, as a CLI.

use std::path::PathBuf;

use base64::Engine as _;
use workflow::images::{self, AppCredentials, Tag};
use workflow::{Location, Secret, SecretDir};

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
}

fn secret(s: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret::new(s))
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let secret_dir = SecretDir::new(&args.registry_secret_dir);
    let location = Location::load(&args.location, &secret_dir, args.host_port)
        .map_err(|errors| ConfigError(errors.join("\n")))?;
    match args.command {
        Command::Name { app, sha, version } => {
            let tag = match (sha, version) {
                (Some(sha), _) => Tag::GitSha(sha),
                (None, Some(n)) => Tag::Version(n),
                (None, None) => unreachable!("clap requires --sha or --version"),
            };
            let name = match images::image_name(&location, &app, &tag) {
                Err(images::NameError::EcrAccountUnknown) => {
                    let location = with_ecr_host(location, args.aws_endpoint_url).await?;
                    images::image_name(&location, &app, &tag)
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
    }
    Ok(())
}

/// The ECR registry host is `<account>.dkr.ecr.<region>.amazonaws.com`; without `registryid`
/// the account is the caller's, which ECR names in the token answer's proxyEndpoint.
async fn with_ecr_host(location: Location, endpoint: Option<String>) -> anyhow::Result<Location> {
    let Location::Ecr(mut ecr) = location else {
        return Ok(location);
    };
    let options = credentials::Options {
        aws_endpoint: endpoint,
    };
    let provider = credentials::EcrProvider::new(&ecr, &options).await;
    ecr.hostname = Some(provider.fetch().await?.registry);
    Ok(Location::Ecr(ecr))
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
