//! The values of `Retry-After`, `RateLimit-Policy` and `RateLimit`, written and read as
//! Structured Fields (RFC 9651) with `sfv`.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use limitpal_core::{ConfigError, Quota};
use sfv::visitor::ParameterVisitor;
use sfv::visitor::{EntryVisitor, Ignored, InnerListVisitor, ItemVisitor, ListVisitor};
use sfv::{BareItemFromInput, Integer, KeyRef, ListSerializer, Parser, StringRef};

pub(crate) const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
pub(crate) const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// Which form of the IETF `RateLimit-Policy` / `RateLimit` fields a layer writes.
///
/// ```text
/// Current (draft-ietf-httpapi-ratelimit-headers-08 and later, the default):
///   ratelimit-policy: "default";q=100;w=60
///   ratelimit: "default";r=50;t=30
/// Draft07 (the expired draft some older clients read):
///   ratelimit-policy: 100;w=60
///   ratelimit: limit=100, remaining=50, reset=30
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RateLimitFields {
    /// Structured Fields with a named policy: `"name";q=..;w=..` and `"name";r=..;t=..`.
    #[default]
    Current,
    /// draft-ietf-httpapi-ratelimit-headers-07: `q;w=..` and `limit=.., remaining=.., reset=..`.
    Draft07,
}

/// What a layer writes, computed once per layer.
#[derive(Debug, Clone)]
pub(crate) struct Fields {
    pub(crate) form: RateLimitFields,
    /// the policy's name, already checked to be a valid sf-string
    name: Box<str>,
    /// the `RateLimit-Policy` value
    pub(crate) policy: HeaderValue,
    limit: u32,
    window: Duration,
}

impl Fields {
    pub(crate) fn new(limit: u32, window: Duration) -> Self {
        let mut fields = Self {
            form: RateLimitFields::Current,
            name: "default".into(),
            policy: HeaderValue::from_static("\"default\""),
            limit,
            window,
        };
        fields.policy = fields.policy_value();
        fields
    }

    pub(crate) fn with_name(mut self, name: &str) -> Result<Self, ConfigError> {
        if name.is_empty() || StringRef::from_str(name).is_err() {
            return Err(ConfigError::OutOfRange {
                field: "policy_name",
                value: format!("{name:?}"),
                expected: "a non-empty string of printable ASCII",
            });
        }
        self.name = name.into();
        self.policy = self.policy_value();
        Ok(self)
    }

    pub(crate) fn with_form(mut self, form: RateLimitFields) -> Self {
        self.form = form;
        self.policy = self.policy_value();
        self
    }

    fn name(&self) -> &StringRef {
        // checked in `with_name`; "default" is valid
        StringRef::from_str(&self.name).unwrap_or(StringRef::constant("default"))
    }

    fn policy_value(&self) -> HeaderValue {
        let window = ceil_secs(self.window).max(1);
        let value = match self.form {
            RateLimitFields::Current => {
                let mut list = ListSerializer::new();
                list.bare_item(self.name())
                    .parameter(KeyRef::constant("q"), self.limit)
                    .parameter(KeyRef::constant("w"), integer(window));
                list.finish().unwrap_or_default()
            }
            RateLimitFields::Draft07 => format!("{};w={window}", self.limit),
        };
        // an sf-list and digits are always valid header characters
        HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("\"default\";q=0"))
    }

    /// `RateLimit-Policy` and `RateLimit` for `quota`, merged with the fields an inner layer
    /// already wrote: its policies stay listed, and `RateLimit` reports whichever policy has
    /// less remaining. `reset` is the `t` to report.
    pub(crate) fn insert(&self, headers: &mut HeaderMap, quota: &Quota, reset: u64) {
        if self.form == RateLimitFields::Draft07 {
            headers.insert(RATELIMIT_POLICY, self.policy.clone());
            let value = format!(
                "limit={}, remaining={}, reset={reset}",
                quota.limit, quota.remaining
            );
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(RATELIMIT, value);
            }
            return;
        }
        let policy = match headers.get(RATELIMIT_POLICY) {
            // RFC 9651 §3.1: field lines of a list combine with ", "
            Some(inner) => {
                let mut joined = Vec::with_capacity(inner.len() + 2 + self.policy.len());
                joined.extend_from_slice(inner.as_bytes());
                joined.extend_from_slice(b", ");
                joined.extend_from_slice(self.policy.as_bytes());
                HeaderValue::from_bytes(&joined).unwrap_or_else(|_| self.policy.clone())
            }
            None => self.policy.clone(),
        };
        headers.insert(RATELIMIT_POLICY, policy);
        let inner_lower = headers
            .get(RATELIMIT)
            .and_then(|v| service_limits(v.as_bytes()))
            .is_some_and(|inner| inner.least_remaining <= u64::from(quota.remaining));
        if inner_lower {
            return;
        }
        let mut list = ListSerializer::new();
        list.bare_item(self.name())
            .parameter(KeyRef::constant("r"), quota.remaining)
            .parameter(KeyRef::constant("t"), integer(reset));
        if let Some(Ok(value)) = list.finish().map(HeaderValue::try_from) {
            headers.insert(RATELIMIT, value);
        }
    }
}

/// A count of seconds as an sf-integer (at most 999 999 999 999 999).
fn integer(secs: u64) -> Integer {
    Integer::try_from(secs).unwrap_or(Integer::MAX)
}

/// Whole seconds, rounded up.
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
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

/// An allowed response's fields: `t` is the time until the key's quota is whole again.
pub(crate) fn insert_quota(headers: &mut HeaderMap, quota: &Quota, fields: &Fields) {
    fields.insert(headers, quota, ceil_secs(quota.reset));
}

/// A 429's fields: `Retry-After` and `t` name the same instant, the one at which the next
/// request can pass (whole seconds rounded up, never 0 while denied: a client told "0" would
/// retry at once and be denied again).
pub(crate) fn insert_denial(
    headers: &mut HeaderMap,
    retry_after: Duration,
    quota: &Quota,
    fields: &Fields,
) {
    let secs = ceil_secs(retry_after).max(1);
    headers.insert(http::header::RETRY_AFTER, secs_value(secs));
    let reset = match fields.form {
        RateLimitFields::Current => secs,
        RateLimitFields::Draft07 => ceil_secs(quota.reset),
    };
    fields.insert(headers, quota, reset);
}

/// What a `RateLimit` field value says, over all its service-limit items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ServiceLimits {
    /// The least `r` of any item.
    pub(crate) least_remaining: u64,
    /// The longest `t` of the items with `r=0` (0 when they have no `t`), if any has `r=0`.
    pub(crate) exhausted_for: Option<u64>,
}

/// Reads a `RateLimit` value of the current draft: a list of `"policy";r=..;t=..` items.
/// Anything malformed (not a Structured Field list, an inner list, a policy that is not a
/// string, `r` missing, `r` or `t` not a non-negative integer) is `None`: the draft says
/// malformed fields are ignored. Allocation-free (unless an item carries a `pk`).
pub(crate) fn service_limits(value: &[u8]) -> Option<ServiceLimits> {
    Parser::new(value)
        .parse_list_with_visitor(Limits::default())
        .ok()
        .flatten()
}

#[derive(Debug, Clone, Copy, Default)]
struct Limits {
    least_remaining: Option<u64>,
    exhausted_for: Option<u64>,
}

#[derive(Debug)]
struct Malformed;

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("malformed RateLimit field")
    }
}

impl std::error::Error for Malformed {}

impl<'de> ListVisitor<'de> for Limits {
    type Out = Option<ServiceLimits>;
    type Error = Malformed;

    fn entry(&mut self) -> Result<impl EntryVisitor<'de>, Self::Error> {
        Ok(Entry(self))
    }

    fn finish(self) -> Result<Self::Out, Self::Error> {
        Ok(self.least_remaining.map(|least| ServiceLimits {
            least_remaining: least,
            exhausted_for: self.exhausted_for,
        }))
    }
}

struct Entry<'a>(&'a mut Limits);

impl<'de> EntryVisitor<'de> for Entry<'_> {
    type Error = Malformed;

    fn item(self) -> Result<impl ItemVisitor<'de>, Self::Error> {
        Ok(self)
    }

    fn inner_list(self) -> Result<impl InnerListVisitor<'de>, Self::Error> {
        Err::<Ignored, _>(Malformed)
    }
}

impl<'de> ItemVisitor<'de> for Entry<'_> {
    type Out = ();
    type Error = Malformed;

    fn bare_item(
        self,
        bare_item: BareItemFromInput<'de>,
    ) -> Result<impl ParameterVisitor<'de, Out = ()>, Self::Error> {
        match bare_item {
            BareItemFromInput::String(_) | BareItemFromInput::Token(_) => Ok(Item {
                limits: self.0,
                r: None,
                t: None,
            }),
            _ => Err(Malformed),
        }
    }
}

struct Item<'a> {
    limits: &'a mut Limits,
    r: Option<u64>,
    t: Option<u64>,
}

fn non_negative(value: &BareItemFromInput<'_>) -> Result<u64, Malformed> {
    match value {
        BareItemFromInput::Integer(i) => u64::try_from(i64::from(*i)).map_err(|_| Malformed),
        _ => Err(Malformed),
    }
}

impl<'de> ParameterVisitor<'de> for Item<'_> {
    type Out = ();
    type Error = Malformed;

    fn parameter(
        &mut self,
        key: &'de KeyRef,
        value: BareItemFromInput<'de>,
    ) -> Result<(), Self::Error> {
        match key.as_str() {
            "r" => self.r = Some(non_negative(&value)?),
            "t" => self.t = Some(non_negative(&value)?),
            _ => {} // pk and other parameters are comments to us
        }
        Ok(())
    }

    fn finish(self) -> Result<(), Self::Error> {
        let r = self.r.ok_or(Malformed)?;
        let least = self.limits.least_remaining.map_or(r, |least| least.min(r));
        self.limits.least_remaining = Some(least);
        if r == 0 {
            let t = self.t.unwrap_or(0);
            self.limits.exhausted_for = Some(self.limits.exhausted_for.map_or(t, |e| e.max(t)));
        }
        Ok(())
    }
}

/// How long a response asks its client to wait before the next request to the same
/// partition: its `Retry-After` (either form; it takes precedence, as the draft says), else the
/// longest `t` among the current draft's `RateLimit` items that have nothing left (`r=0`).
/// Malformed fields are ignored; several `RateLimit` field lines are read as one list.
///
/// ```
/// use http::HeaderMap;
/// use limitpal_tower::http::pushback;
/// use std::time::Duration;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("ratelimit", r#""default";r=0;t=2"#.parse()?);
/// assert_eq!(pushback(&headers), Some(Duration::from_secs(2)));
/// headers.insert("ratelimit", r#""default";r=5;t=2"#.parse()?);
/// assert_eq!(pushback(&headers), None, "quota left: no need to wait");
/// headers.insert("ratelimit", "default;r=zero".parse()?);
/// assert_eq!(pushback(&headers), None, "malformed: ignored");
/// headers.insert("retry-after", "7".parse()?);
/// assert_eq!(pushback(&headers), Some(Duration::from_secs(7)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use]
pub fn pushback(headers: &HeaderMap) -> Option<Duration> {
    if let Some(after) = super::retry_after(headers) {
        return Some(after);
    }
    let mut exhausted: Option<u64> = None;
    for value in headers.get_all(RATELIMIT) {
        // one malformed line makes the whole field malformed
        let limits = service_limits(value.as_bytes())?;
        if let Some(t) = limits.exhausted_for {
            exhausted = Some(exhausted.map_or(t, |e| e.max(t)));
        }
    }
    exhausted.map(Duration::from_secs)
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
        let fields = Fields::new(100, Duration::from_millis(1500));
        assert_eq!(fields.policy, "\"default\";q=100;w=2");
        assert_eq!(fields.with_form(RateLimitFields::Draft07).policy, "100;w=2");
    }

    #[test]
    fn service_limits_are_read_from_lists() {
        let read = |v: &str| service_limits(v.as_bytes());
        assert_eq!(
            read(r#""default";r=50;t=30"#),
            Some(ServiceLimits {
                least_remaining: 50,
                exhausted_for: None
            })
        );
        assert_eq!(
            read(r#""a";r=3;t=1, "b";r=0;t=9, "c";r=0"#),
            Some(ServiceLimits {
                least_remaining: 0,
                exhausted_for: Some(9)
            })
        );
        assert_eq!(
            read(r#""default";r=999;pk=:dHJpYWwxMjEzMjM=:"#).map(|l| l.least_remaining),
            Some(999)
        );
        for bad in [
            "",
            r#""default";t=3"#,
            r#""default";r=-1"#,
            r#""default";r=1.5"#,
            r#""default";r="1""#,
            r#"("a" "b");r=0"#,
            r#"1;r=0"#,
            r#""default";r=0;t=-2"#,
            r#""default";r=0,"#,
            r#""unterminated;r=0"#,
        ] {
            assert_eq!(read(bad), None, "{bad:?}");
        }
    }
}
