//! `quayside credentials`: the registry credential the configured location gives now, as a
//! docker config JSON or as a kubelet credential-provider plugin.

use std::io::Read as _;
use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::Context as _;
use credentials::{Provider, kubelet};
use images::Location;
use secrets::SecretDir;

use crate::ConfigError;

/// Where the registry is and the mounted `registry-secret` with its credentials.
#[derive(clap::Args, Debug, Clone)]
pub struct LocationArgs {
    /// off-cluster, ecr or gcr (Workflow's `global.registry_location`).
    #[arg(long, env = "DEIS_REGISTRY_LOCATION")]
    pub location: String,
    /// The mounted `registry-secret`.
    #[arg(
        long,
        env = "QUAYSIDE_REGISTRY_SECRET_DIR",
        default_value = "/var/run/secrets/deis/registry/creds"
    )]
    pub registry_secret_dir: PathBuf,
    /// Send AWS API requests here instead of the regional endpoint (VPC endpoints, tests).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,
}

impl LocationArgs {
    pub fn load(&self) -> Result<Location, ConfigError> {
        workflow::location::load_from(
            &self.location,
            &crate::settings::origin("--location", "DEIS_REGISTRY_LOCATION"),
            &SecretDir::new(&self.registry_secret_dir),
            0,
        )
        .map_err(|errors| ConfigError(errors.join("\n")))
    }

    pub fn options(&self) -> credentials::Options {
        credentials::Options {
            aws_endpoint: self.aws_endpoint_url.clone(),
            ..Default::default()
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    location: LocationArgs,
    /// Act as a kubelet image credential provider: read a CredentialProviderRequest
    /// (credentialprovider.kubelet.k8s.io/v1) on stdin, answer a CredentialProviderResponse.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    kubelet_plugin: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let request = if args.kubelet_plugin {
        let mut input = String::new();
        std::io::stdin()
            .read_to_string(&mut input)
            .context("reading the CredentialProviderRequest from stdin")?;
        Some(kubelet::Request::parse(&input).map_err(|e| ConfigError(e.to_string()))?)
    } else {
        None
    };
    let location = args.location.load()?;
    let provider = Provider::new(&location, &args.location.options())
        .await
        .ok_or_else(|| {
            ConfigError(
                "DEIS_REGISTRY_LOCATION=on-cluster: the in-cluster registry needs no credentials"
                    .into(),
            )
        })?;
    let credential = provider.fetch().await?;
    let output = match request {
        Some(request) => {
            tracing::debug!(image = %request.image, registry = %credential.registry, "answering the kubelet");
            kubelet::Response::new(&credential, SystemTime::now()).to_json()
        }
        None => credential.docker_config_json().expose().to_owned(),
    };
    println!("{output}");
    Ok(())
}
