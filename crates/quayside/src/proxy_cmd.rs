//! `quayside proxy`: the node-local proxy to the registry Service.

use std::time::Duration;

use anyhow::Context;
use secrets::Secret;

use crate::ConfigError;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on: `host:port` (the host an address or a name) or a bare port (`80`,
    /// as the original chart set) for all interfaces.
    #[arg(long, env = "BIND_ADDR", default_value = "127.0.0.1:5555")]
    listen: String,
    /// The registry Service's host (the chart passes `$(DEIS_REGISTRY_SERVICE_HOST)`).
    #[arg(long, env = "REGISTRY_HOST")]
    registry_host: String,
    #[arg(long, env = "REGISTRY_PORT", default_value_t = 80)]
    registry_port: u16,
    /// Refuse everything but GET, HEAD and OPTIONS (405): nodes pull, only the builder pushes.
    #[arg(long, env = "QUAYSIDE_PROXY_READ_ONLY", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    read_only: bool,
    /// A pull identity added to reads that carry no credentials (not to the `/v2/` ping, nor to
    /// writes), so nodes need no registry login while builders' own logins pass through.
    #[arg(long, env = "QUAYSIDE_PROXY_USERNAME", requires = "upstream_password")]
    upstream_username: Option<String>,
    #[arg(long, env = "QUAYSIDE_PROXY_PASSWORD", value_parser = secret, hide_env_values = true)]
    upstream_password: Option<Secret>,
    #[command(flatten)]
    connections: crate::connection_args::ConnectionArgs,
    /// How long to wait for the registry's response headers.
    #[arg(long, env = "QUAYSIDE_PROXY_RESPONSE_TIMEOUT", default_value = "900s", value_parser = humantime::parse_duration)]
    response_timeout: Duration,
    /// Relay blob downloads of HTTP/1 clients with splice(2): the kernel moves the bytes from the
    /// registry's socket to the client's; off: they are read in and written out again.
    #[arg(long, env = "QUAYSIDE_PROXY_SPLICE", default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    splice: bool,
}

fn secret(s: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret::new(s))
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let upstream = format!("{}:{}", args.registry_host, args.registry_port);
    let upstream_auth = match (&args.upstream_username, &args.upstream_password) {
        (Some(user), Some(password)) => Some(proxy::basic_auth(user, password.expose()).ok_or_else(|| {
            ConfigError("--upstream-username / --upstream-password contain characters a header cannot carry".into())
        })?),
        _ => None,
    };
    let config = proxy::Config {
        upstream: upstream.clone(),
        read_only: args.read_only,
        upstream_auth,
        response_timeout: args.response_timeout,
        splice: args.splice,
    };
    // Not listening before the registry answers, so the pod is not ready before it can serve.
    proxy::wait_for_upstream(&upstream).await;
    let listener = crate::connection_args::bind(&args.listen, "--listen / BIND_ADDR").await?;
    tracing::info!(
        listen = %listener.local_addr().map_or(args.listen.clone(), |a| a.to_string()),
        upstream,
        read_only = args.read_only,
        "proxy serving"
    );
    serve::serve(
        listener,
        proxy::router(config),
        args.connections.limits(),
        crate::shutdown_signal(),
    )
    .await
    .context("serving HTTP")
}
