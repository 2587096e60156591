//! How a layer finds the rate-limit key of a request.

use std::fmt;

/// Finds the rate-limit key of a request; `None` when the request has none (a missing
/// header), and the layer applies its [`MissingKey`] policy.
///
/// Closures `Fn(&Req) -> K` implement it and always find a key:
///
/// ```
/// use limitpal_tower::KeyExtractor;
///
/// let by_user = |req: &(u64, &str)| req.0;
/// assert_eq!(by_user.extract(&(7, "GET /")), Some(7));
/// ```
pub trait KeyExtractor<Req> {
    /// The key type.
    type Key;

    /// The key of `req`, if it has one.
    fn extract(&self, req: &Req) -> Option<Self::Key>;
}

impl<Req, K, F> KeyExtractor<Req> for F
where
    F: Fn(&Req) -> K,
{
    type Key = K;

    #[inline]
    fn extract(&self, req: &Req) -> Option<K> {
        Some(self(req))
    }
}

/// What a rate-limit layer does with a request whose key cannot be found.
#[derive(Clone, PartialEq, Eq)]
pub enum MissingKey<K> {
    /// Reject it: an error ([`KeyMissing`]) or, in HTTP mode, a response with the layer's
    /// missing-key status (default 500: usually a misconfiguration, such as a server started
    /// without connect info).
    Reject,
    /// Let it through unlimited.
    Allow,
    /// Count it against this key (one shared quota for every keyless request).
    Fallback(K),
}

impl<K> fmt::Debug for MissingKey<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Reject => "Reject",
            Self::Allow => "Allow",
            Self::Fallback(_) => "Fallback(..)",
        })
    }
}

/// A request had no rate-limit key and the layer's policy is [`MissingKey::Reject`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct KeyMissing;

impl KeyMissing {
    /// The error.
    #[must_use]
    pub const fn new() -> Self {
        Self
    }
}

impl fmt::Display for KeyMissing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the request has no rate-limit key")
    }
}

impl std::error::Error for KeyMissing {}
