//! When to ask the issuer again. Pure functions of the credential's remaining lifetime, so the
//! rules are tested without clocks.

use std::time::Duration;

/// The shortest wait between two fetches after a success, so a token that lives only seconds
/// (or a clock that disagrees with the issuer) cannot make us hammer the issuer.
pub const MIN_REFRESH: Duration = Duration::from_secs(10);
/// Long-lived credentials have nothing to refresh; the registry-secret is still re-read this
/// often (changes are also picked up within [`SECRET_POLL`]).
pub const LONG_LIVED_RECHECK: Duration = Duration::from_secs(3600);
/// How often the mounted registry-secret is compared with what we run on.
pub const SECRET_POLL: Duration = Duration::from_secs(10);
/// Longest wait between retries after failures.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The wait after a successful fetch of a credential with `remaining` lifetime (`None`:
/// long-lived). About half the remaining lifetime, spread by ±10% (`jitter` in 0..1) so
/// replicas and restarts do not line up; `fixed` (DEIS_TOKEN_REFRESH_TIME) replaces that, but
/// never reaches past 90% of the lifetime, so a secret is replaced before its token expires.
pub fn after_success(
    remaining: Option<Duration>,
    fixed: Option<Duration>,
    jitter: f64,
) -> Duration {
    let Some(left) = remaining else {
        return fixed.unwrap_or(LONG_LIVED_RECHECK);
    };
    let spread = 0.9 + 0.2 * jitter.clamp(0.0, 1.0);
    let wanted = fixed.unwrap_or_else(|| (left / 2).mul_f64(spread));
    wanted.min(left.mul_f64(0.9)).max(MIN_REFRESH)
}

/// The wait before retry number `attempt` (1, 2, …) after failures: 1 s doubling up to
/// [`MAX_BACKOFF`].
pub fn after_failure(attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exp).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Duration = Duration::from_secs(3600);

    #[test]
    fn half_life_with_jitter() {
        assert_eq!(after_success(Some(12 * H), None, 0.5), 6 * H);
        assert_eq!(after_success(Some(12 * H), None, 0.0), (6 * H).mul_f64(0.9));
        assert_eq!(after_success(Some(12 * H), None, 1.0), (6 * H).mul_f64(1.1));
    }

    #[test]
    fn fixed_interval_never_outlives_the_token() {
        // Deis crashed on any token_refresh_time; here it is honoured below 90% of the lifetime...
        assert_eq!(after_success(Some(12 * H), Some(6 * H), 0.5), 6 * H);
        assert_eq!(
            after_success(Some(12 * H), Some(11 * H), 0.5),
            (12 * H).mul_f64(0.9)
        );
        // ...but a 2 h interval for a 1 h token refreshes at 54 min.
        assert_eq!(
            after_success(Some(H), Some(2 * H), 0.5),
            Duration::from_secs(3240)
        );
    }

    #[test]
    fn expired_or_tiny_lifetimes_do_not_spin() {
        // moto answers with an expiry in 2015: remaining is zero.
        assert_eq!(after_success(Some(Duration::ZERO), None, 0.5), MIN_REFRESH);
        assert_eq!(
            after_success(Some(Duration::from_secs(4)), None, 0.5),
            MIN_REFRESH
        );
    }

    #[test]
    fn long_lived_and_backoff() {
        assert_eq!(after_success(None, None, 0.5), LONG_LIVED_RECHECK);
        assert_eq!(
            after_success(None, Some(Duration::from_secs(60)), 0.5),
            Duration::from_secs(60)
        );
        assert_eq!(after_failure(1), Duration::from_secs(1));
        assert_eq!(after_failure(4), Duration::from_secs(8));
        assert_eq!(after_failure(30), MAX_BACKOFF);
    }
}
