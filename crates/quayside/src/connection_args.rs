//! What a connection to `registry` or `proxy` may cost (see `serve`): the flags both take.

use std::net::SocketAddr;
use std::time::Duration;

use crate::ConfigError;

#[derive(clap::Args, Debug)]
pub(crate) struct ConnectionArgs {
    /// Longest time a connection may take to send a request's headers.
    #[arg(long, env = "QUAYSIDE_HEADER_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    header_timeout: Duration,
    /// Longest time a new connection may send nothing before it is closed.
    #[arg(long, env = "QUAYSIDE_IDLE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// Longest time no byte may move on a connection while none of its requests is being
    /// handled (between keep-alive requests, or a download whose client stopped reading).
    #[arg(long, env = "QUAYSIDE_KEEPALIVE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    keepalive_timeout: Duration,
    /// Connections served at once; newcomers past it get 503 and are closed (default: half the
    /// open-file limit, at least 64).
    #[arg(long, env = "QUAYSIDE_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
}

impl ConnectionArgs {
    pub(crate) fn limits(&self) -> serve::Limits {
        serve::Limits {
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            keepalive_timeout: self.keepalive_timeout,
            max_connections: self
                .max_connections
                .unwrap_or_else(serve::default_max_connections),
        }
    }
}

/// Binds `value` for `setting` (e.g. `--listen / QUAYSIDE_LISTEN`): `host:port`, the host an
/// address or a name (resolved; an IPv4 address preferred, since clients of `localhost` usually
/// mean 127.0.0.1), or a bare port (`80`, as Workflow's chart set it) for every interface.
pub(crate) async fn bind(
    value: &str,
    setting: &str,
) -> Result<tokio::net::TcpListener, ConfigError> {
    let value = value.trim();
    let wanted = if value.bytes().all(|b| b.is_ascii_digit()) && !value.is_empty() {
        format!("0.0.0.0:{value}")
    } else {
        value.to_owned()
    };
    let not_an_address = |why: String| {
        ConfigError(format!(
            "{setting} {value:?}: {why}; use host:port (127.0.0.1:5000, localhost:5000) or a port (5000)"
        ))
    };
    let candidates: Vec<SocketAddr> = tokio::net::lookup_host(&wanted)
        .await
        .map_err(|e| not_an_address(e.to_string()))?
        .collect();
    let addr = candidates
        .iter()
        .find(|a| a.is_ipv4())
        .or(candidates.first())
        .copied()
        .ok_or_else(|| not_an_address("the name resolves to no address".into()))?;
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        ConfigError(format!(
            "{setting} {value:?} ({addr}): cannot listen ({e}); pick a free address"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::bind;

    #[tokio::test]
    async fn listen_addresses_names_and_bare_ports() {
        let named = bind("localhost:0", "--listen").await.unwrap();
        assert_eq!(named.local_addr().unwrap().ip().to_string(), "127.0.0.1");
        let ip = bind(" 127.0.0.1:0 ", "--listen").await.unwrap();
        assert!(ip.local_addr().unwrap().ip().is_loopback());
        let every = bind("0", "--listen").await.unwrap();
        assert!(every.local_addr().unwrap().ip().is_unspecified());
        for bad in ["foo", "", "localhost", "127.0.0.1:99999"] {
            let e = bind(bad, "--listen / BIND_ADDR")
                .await
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("--listen / BIND_ADDR") && e.contains("use host:port"),
                "{e}"
            );
        }
    }
}
