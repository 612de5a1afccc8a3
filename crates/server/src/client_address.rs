//! The address a request comes from, for per-address limits. Behind a reverse proxy
//! every request comes from the proxy: only a proxy listed in `trusted_proxies` is
//! believed about the client (`X-Forwarded-For`), and only for the hops it added, so a
//! client cannot choose its own address by sending the header itself.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::HeaderMap;

const FORWARDED_FOR: &str = "x-forwarded-for";

/// The client's address: the peer, or, when the peer is a trusted proxy, the right-most
/// address of `X-Forwarded-For` that is not itself a trusted proxy. Without a peer (an
/// in-process call) the unspecified address.
pub fn client_ip(
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    trusted_proxies: &[IpAddr],
) -> IpAddr {
    let Some(peer) = peer.map(|p| canonical(p.ip())) else {
        return IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    };
    if !trusted_proxies.contains(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all(FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    // From the nearest hop back: trusted proxies are skipped; the first other address
    // is the client. Anything unreadable on the way means the chain cannot be trusted.
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>().map(canonical) {
            Ok(ip) if trusted_proxies.contains(&ip) => continue,
            Ok(ip) => return ip,
            Err(_) => return peer,
        }
    }
    peer
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, what a dual-stack socket reports) as
/// plain IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The peer's address (absent for an in-process call).
pub struct Peer(pub Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(peer_of(parts)))
    }
}

/// The peer of a request's connection, if it has one.
pub fn peer_of(parts: &Parts) -> Option<SocketAddr> {
    parts
        .extensions
        .get::<ConnectInfo<crate::listener::PeerAddr>>()
        .map(|c| c.0 .0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append(FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_peer_is_the_client_unless_it_is_a_trusted_proxy() {
        let peer = Some("192.0.2.7:5000".parse().unwrap());
        // An untrusted peer cannot claim another address.
        assert_eq!(
            client_ip(peer, &headers(&["10.9.9.9"]), &[]),
            ip("192.0.2.7")
        );
        let proxy = [ip("192.0.2.7")];
        assert_eq!(
            client_ip(peer, &headers(&["198.51.100.1"]), &proxy),
            ip("198.51.100.1")
        );
        // The client's own header is to the left of what the proxy appended.
        assert_eq!(
            client_ip(peer, &headers(&["10.9.9.9, 198.51.100.1"]), &proxy),
            ip("198.51.100.1")
        );
        // Two trusted hops.
        let proxies = [ip("192.0.2.7"), ip("192.0.2.8")];
        assert_eq!(
            client_ip(peer, &headers(&["198.51.100.1", "192.0.2.8"]), &proxies),
            ip("198.51.100.1")
        );
        // No header, or garbage: the proxy itself.
        assert_eq!(client_ip(peer, &headers(&[]), &proxy), ip("192.0.2.7"));
        assert_eq!(
            client_ip(peer, &headers(&["not-an-ip"]), &proxy),
            ip("192.0.2.7")
        );
        assert_eq!(client_ip(None, &headers(&[]), &[]), ip("0.0.0.0"));
        let mapped = Some("[::ffff:192.0.2.9]:1".parse().unwrap());
        assert_eq!(client_ip(mapped, &headers(&[]), &[]), ip("192.0.2.9"));
    }
}
