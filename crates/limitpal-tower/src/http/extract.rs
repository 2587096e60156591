//! Key extractors for HTTP requests. None of them needs axum: the peer address is read from
//! a request extension of a type you name.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use http::{HeaderName, Request};
use limitpal_core::ConfigError;

use crate::KeyExtractor;

/// Keys requests by the peer's IP address, read from a request extension: a `SocketAddr`
/// by default, or any type you name with [`from_extension`](Self::from_extension) (axum's
/// `ConnectInfo<SocketAddr>`). IPv6 peers are keyed by their /64 network by default (one
/// host usually owns a whole /64); IPv4-mapped IPv6 addresses count as IPv4.
///
/// ```
/// use http::Request;
/// use limitpal_tower::KeyExtractor;
/// use limitpal_tower::http::PeerIp;
/// use std::net::{IpAddr, SocketAddr};
///
/// let mut req = Request::new(());
/// req.extensions_mut().insert("[2001:db8::1:2:3:4]:5000".parse::<SocketAddr>().unwrap());
/// let key = PeerIp::new().extract(&req);
/// assert_eq!(key, Some("2001:db8::".parse::<IpAddr>().unwrap()));
///
/// // with axum: PeerIp::from_extension(|info: &ConnectInfo<SocketAddr>| info.0)
/// #[derive(Clone)]
/// struct Connected(SocketAddr);
/// let mut req = Request::new(());
/// req.extensions_mut().insert(Connected("10.0.0.7:443".parse().unwrap()));
/// let key = PeerIp::from_extension(|c: &Connected| c.0).extract(&req);
/// assert_eq!(key, Some("10.0.0.7".parse::<IpAddr>().unwrap()));
/// ```
#[derive(Debug)]
pub struct PeerIp<E = SocketAddr> {
    read: fn(&E) -> SocketAddr,
    v6_prefix: u8,
}

impl<E> Clone for PeerIp<E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for PeerIp<E> {}

impl PeerIp {
    /// Reads a `SocketAddr` request extension.
    #[must_use]
    pub fn new() -> Self {
        Self {
            read: |addr| *addr,
            v6_prefix: 64,
        }
    }
}

impl PeerIp {
    /// Reads the peer address from an extension of type `E2` (falling back to a plain
    /// `SocketAddr` extension): `PeerIp::from_extension(|i: &ConnectInfo<SocketAddr>| i.0)`.
    #[must_use]
    pub fn from_extension<E2>(read: fn(&E2) -> SocketAddr) -> PeerIp<E2> {
        PeerIp {
            read,
            v6_prefix: 64,
        }
    }
}

impl Default for PeerIp {
    fn default() -> Self {
        Self::new()
    }
}

impl<E> PeerIp<E> {
    /// Key IPv6 peers by their first `bits` bits (default 64; 128 = per address).
    #[must_use]
    pub fn ipv6_prefix(mut self, bits: u8) -> Self {
        self.v6_prefix = bits.min(128);
        self
    }
}

impl<B, E: Send + Sync + 'static> KeyExtractor<Request<B>> for PeerIp<E> {
    type Key = IpAddr;

    #[inline]
    fn extract(&self, req: &Request<B>) -> Option<IpAddr> {
        let ext = req.extensions();
        let addr = ext
            .get::<E>()
            .map(self.read)
            .or_else(|| ext.get::<SocketAddr>().copied())?;
        Some(network(addr.ip(), self.v6_prefix))
    }
}

/// The key of `ip`: IPv4 as is (IPv4-mapped IPv6 included), IPv6 cut to `prefix` bits.
fn network(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mask = match prefix {
                    0 => 0,
                    bits => u128::MAX << (128 - u32::from(bits.min(128))),
                };
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        },
    }
}

/// Keys requests by the value of a header (an API key, a tenant id). A request without the
/// header has no key, and the layer's missing-key policy applies.
///
/// ```
/// use http::Request;
/// use limitpal_tower::KeyExtractor;
/// use limitpal_tower::http::HeaderKey;
///
/// let req = Request::builder().header("x-api-key", "team-a").body(()).unwrap();
/// let api_key = HeaderKey::new("X-Api-Key")?;
/// assert_eq!(api_key.extract(&req).as_deref(), Some("team-a"));
/// assert_eq!(api_key.extract(&Request::new(())), None);
/// assert!(HeaderKey::new("bad header").is_err());
/// # Ok::<(), limitpal_core::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct HeaderKey {
    name: HeaderName,
}

impl HeaderKey {
    /// Keys by the header `name` (case-insensitive, such as `"x-api-key"`).
    ///
    /// # Errors
    /// [`ConfigError`] naming `header` when `name` is not a valid header name.
    pub fn new(name: &str) -> Result<Self, ConfigError> {
        HeaderName::from_bytes(name.as_bytes())
            .map(Self::from_name)
            .map_err(|_| ConfigError::OutOfRange {
                field: "header",
                value: name.to_owned(),
                expected: "a valid HTTP header name",
            })
    }

    /// Keys by the header `name`.
    #[must_use]
    pub fn from_name(name: HeaderName) -> Self {
        Self { name }
    }
}

impl<B> KeyExtractor<Request<B>> for HeaderKey {
    type Key = String;

    fn extract(&self, req: &Request<B>) -> Option<String> {
        let value = req.headers().get(&self.name)?;
        // Copied, so a stored key never pins the request's buffer.
        Some(String::from_utf8_lossy(value.as_bytes()).into_owned())
    }
}

/// Which header carries the proxy chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chain {
    XForwardedFor,
    Forwarded,
}

/// Keys requests by the client IP that your own proxies recorded in `X-Forwarded-For` or
/// `Forwarded`, counting from the right: with `trusted_proxies` proxies in front of the
/// server, each appending the address it received from, the client is the
/// `trusted_proxies`-th entry from the right. Entries further left were written by the client
/// and are never trusted. A chain shorter than that, or an unparsable entry, gives no key.
///
/// ```
/// use http::Request;
/// use limitpal_tower::KeyExtractor;
/// use limitpal_tower::http::ForwardedIp;
/// use std::net::IpAddr;
///
/// // the client forged "1.1.1.1"; our one load balancer appended the real peer
/// let req = Request::builder()
///     .header("x-forwarded-for", "1.1.1.1, 203.0.113.9")
///     .body(())
///     .unwrap();
/// let key = ForwardedIp::x_forwarded_for(1).extract(&req);
/// assert_eq!(key, Some("203.0.113.9".parse::<IpAddr>().unwrap()));
///
/// let req = Request::builder()
///     .header("forwarded", r#"for=192.0.2.60;proto=http, for="[2001:db8::1]:4711""#)
///     .body(())
///     .unwrap();
/// assert_eq!(ForwardedIp::forwarded(2).extract(&req), Some("192.0.2.60".parse().unwrap()));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ForwardedIp {
    chain: Chain,
    trusted_proxies: usize,
    v6_prefix: u8,
}

impl ForwardedIp {
    /// Reads `X-Forwarded-For` behind `trusted_proxies` proxies (at least 1).
    #[must_use]
    pub fn x_forwarded_for(trusted_proxies: usize) -> Self {
        Self {
            chain: Chain::XForwardedFor,
            trusted_proxies: trusted_proxies.max(1),
            v6_prefix: 64,
        }
    }

    /// Reads RFC 7239 `Forwarded` (`for=` parameters) behind `trusted_proxies` proxies.
    #[must_use]
    pub fn forwarded(trusted_proxies: usize) -> Self {
        Self {
            chain: Chain::Forwarded,
            ..Self::x_forwarded_for(trusted_proxies)
        }
    }

    /// Key IPv6 clients by their first `bits` bits (default 64).
    #[must_use]
    pub fn ipv6_prefix(mut self, bits: u8) -> Self {
        self.v6_prefix = bits.min(128);
        self
    }
}

impl<B> KeyExtractor<Request<B>> for ForwardedIp {
    type Key = IpAddr;

    fn extract(&self, req: &Request<B>) -> Option<IpAddr> {
        let name = match self.chain {
            Chain::XForwardedFor => "x-forwarded-for",
            Chain::Forwarded => "forwarded",
        };
        // Several header lines form one list, in order; walk it from the right.
        let mut entries = req
            .headers()
            .get_all(name)
            .iter()
            .rev()
            .flat_map(|value| value.to_str().unwrap_or("").rsplit(','));
        let entry = entries.nth(self.trusted_proxies - 1)?.trim();
        let ip = match self.chain {
            Chain::XForwardedFor => parse_node(entry)?,
            Chain::Forwarded => entry
                .split(';')
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                .and_then(|(_, v)| parse_node(v.trim().trim_matches('"')))?,
        };
        Some(network(ip, self.v6_prefix))
    }
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]:80`.
fn parse_node(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            s.strip_prefix('[')
                .and_then(|rest| rest.split_once(']'))
                .and_then(|(ip, _)| ip.parse().ok())
        })
}

/// Keys requests by the upstream they go to: the URI's authority (`host:port`, the port
/// made explicit from the scheme when absent, the host lower-cased), or the `Host` header
/// for a request whose URI has none. For per-host stages of a client stack:
/// `.circuit_breaker_per(breakers, Authority)`. A request with neither gives no key.
///
/// ```
/// use http::Request;
/// use limitpal_tower::KeyExtractor;
/// use limitpal_tower::http::Authority;
///
/// let req = Request::get("https://API.example.com/v1/items").body(()).unwrap();
/// assert_eq!(Authority.extract(&req).as_deref(), Some("api.example.com:443"));
/// let req = Request::get("http://10.0.0.7:8080/").body(()).unwrap();
/// assert_eq!(Authority.extract(&req).as_deref(), Some("10.0.0.7:8080"));
/// let req = Request::get("/relative").header("host", "svc.local").body(()).unwrap();
/// assert_eq!(Authority.extract(&req).as_deref(), Some("svc.local:80"));
/// assert_eq!(Authority.extract(&Request::get("/").body(()).unwrap()), None);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Authority;

impl<B> KeyExtractor<Request<B>> for Authority {
    type Key = String;

    fn extract(&self, req: &Request<B>) -> Option<String> {
        use std::fmt::Write as _;
        let uri = req.uri();
        let parsed;
        let authority = match uri.authority() {
            Some(authority) => authority,
            None => {
                let value = req.headers().get(http::header::HOST)?.to_str().ok()?;
                parsed = value.parse::<http::uri::Authority>().ok()?;
                &parsed
            }
        };
        let host = authority.host();
        if host.is_empty() {
            return None;
        }
        let port = authority
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        // one allocation: the host lower-cased, then the port
        let mut key = String::with_capacity(host.len().saturating_add(6));
        key.extend(host.chars().map(|c| c.to_ascii_lowercase()));
        let _ = write!(key, ":{port}"); // writing to a String cannot fail
        Some(key)
    }
}

/// One quota for every request (key `()`; the limiter skips hashing).
#[derive(Debug, Clone, Copy, Default)]
pub struct GlobalKey;

impl<B> KeyExtractor<Request<B>> for GlobalKey {
    type Key = ();

    #[inline]
    fn extract(&self, _: &Request<B>) -> Option<()> {
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_keys_are_normalised_host_port_pairs() {
        let key = |uri: &str, host: Option<&str>| {
            let mut req = Request::get(uri);
            if let Some(host) = host {
                req = req.header("host", host);
            }
            Authority.extract(&req.body(()).unwrap())
        };
        assert_eq!(
            key("http://[::1]:8080/x", None).as_deref(),
            Some("[::1]:8080")
        );
        assert_eq!(
            key("HTTPS://Api.Example.COM/", None).as_deref(),
            Some("api.example.com:443")
        );
        assert_eq!(
            key("/", Some("Svc.Local:9000")).as_deref(),
            Some("svc.local:9000")
        );
        assert_eq!(key("/", Some("not a host")), None);
        assert_eq!(key("/", Some("")), None);
    }

    #[test]
    fn forwarded_chain_is_read_from_the_right_across_lines() {
        let req = Request::builder()
            .header("x-forwarded-for", "9.9.9.9, 1.1.1.1")
            .header("x-forwarded-for", "2.2.2.2")
            .body(())
            .unwrap();
        let nth = |n| ForwardedIp::x_forwarded_for(n).extract(&req);
        assert_eq!(nth(1), Some("2.2.2.2".parse().unwrap()));
        assert_eq!(nth(2), Some("1.1.1.1".parse().unwrap()));
        assert_eq!(nth(3), Some("9.9.9.9".parse().unwrap()));
        assert_eq!(nth(4), None);
    }

    #[test]
    fn mapped_and_prefixed_addresses() {
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(network(mapped, 64), "10.1.2.3".parse::<IpAddr>().unwrap());
        let v6: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        assert_eq!(network(v6, 128), v6);
        assert_eq!(network(v6, 0), "::".parse::<IpAddr>().unwrap());
        assert_eq!(network(v6, 48), "2001:db8:1::".parse::<IpAddr>().unwrap());
    }
}
