//! What a connection to `registry` or `proxy` may cost (see `serve`): the flags both take.

use std::time::Duration;

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
