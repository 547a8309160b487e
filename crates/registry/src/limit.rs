//! Optional per-client rate limiting (`--rate-limit`): a token bucket per client address
//! (governor's GCRA), so one client's flood gets 429 `TOOMANYREQUESTS` with `Retry-After` while
//! everyone else is served. Probes and metrics are never limited. Buckets of clients that went
//! quiet are dropped every minute, so memory follows the clients of the last minute.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use oci::ErrorCode;

use crate::App;
use crate::error::ApiError;

pub struct RateLimit {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

impl RateLimit {
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32) -> Arc<RateLimit> {
        let quota = Quota::per_second(per_second).allow_burst(burst);
        let limit = Arc::new(RateLimit {
            limiter: governor::RateLimiter::keyed(quota),
            clock: DefaultClock::default(),
        });
        let weak = Arc::downgrade(&limit);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
                while let Some(limit) = {
                    tick.tick().await;
                    weak.upgrade()
                } {
                    limit.limiter.retain_recent();
                    limit.limiter.shrink_to_fit();
                }
            });
        }
        limit
    }

    /// `Err(seconds)` to wait when `client` is over its rate.
    fn check(&self, client: IpAddr) -> Result<(), u64> {
        self.limiter.check_key(&client).map_err(|not_until| {
            not_until
                .wait_time_from(self.clock.now())
                .as_secs_f64()
                .ceil()
                .max(1.0) as u64
        })
    }
}

pub async fn gate(State(app): State<App>, req: Request, next: Next) -> Response {
    let exempt = matches!(req.uri().path(), "/healthz" | "/readyz" | "/metrics");
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if let (Some(limit), Some(client), false) = (&app.rate_limit, client, exempt)
        && let Err(wait) = limit.check(client)
    {
        return ApiError::new(
            ErrorCode::TooManyRequests,
            format!("over the rate limit for this client; retry in {wait}s"),
        )
        .with_header(axum::http::header::RETRY_AFTER, wait)
        .into_response();
    }
    next.run(req).await
}
