//! The values of `Retry-After`, `RateLimit-Policy` and `RateLimit`.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use limitpal_core::Quota;

pub(crate) const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
pub(crate) const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// Whole seconds, rounded up.
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// `limit;w=window` for the policy field; computed once per layer.
pub(crate) fn policy_value(limit: u32, window: Duration) -> HeaderValue {
    let value = format!("{limit};w={}", ceil_secs(window).max(1));
    // digits and ";w=" are always valid header characters
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("0;w=1"))
}

/// Seconds as a header value; the common small values are static.
fn secs_value(secs: u64) -> HeaderValue {
    const SMALL: [&str; 16] = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15",
    ];
    match usize::try_from(secs).ok().and_then(|i| SMALL.get(i)) {
        Some(s) => HeaderValue::from_static(s),
        None => HeaderValue::from(secs),
    }
}

pub(crate) fn insert_quota(headers: &mut HeaderMap, quota: &Quota) {
    let value = format!(
        "limit={}, remaining={}, reset={}",
        quota.limit,
        quota.remaining,
        ceil_secs(quota.reset)
    );
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(RATELIMIT, value);
    }
}

pub(crate) fn insert_denial(
    headers: &mut HeaderMap,
    retry_after: Duration,
    quota: &Quota,
    policy: &HeaderValue,
) {
    // never 0 while denied: a client told "0" would retry at once and be denied again
    headers.insert(
        http::header::RETRY_AFTER,
        secs_value(ceil_secs(retry_after).max(1)),
    );
    headers.insert(RATELIMIT_POLICY, policy.clone());
    insert_quota(headers, quota);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_up() {
        assert_eq!(ceil_secs(Duration::from_millis(400)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
        assert_eq!(ceil_secs(Duration::from_millis(2001)), 3);
        assert_eq!(secs_value(15), "15");
        assert_eq!(secs_value(16), "16");
        assert_eq!(policy_value(100, Duration::from_millis(1500)), "100;w=2");
    }
}
