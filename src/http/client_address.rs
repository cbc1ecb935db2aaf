//! The network address a request comes from: what per-client limits (sign-in attempts,
//! anonymous WebSockets) are keyed by.
//!
//! By default that is the TCP peer. Behind a reverse proxy or load balancer every request
//! comes from the proxy, so one shared limit would apply to all clients; an operator whose
//! proxy writes the client's address into a header names it with
//! `--client-address-header`, and the address the nearest proxy wrote (the rightmost of a
//! list, as `X-Forwarded-For` appends) is used instead. The header is only trusted when
//! configured, since any client can send one.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::{Extensions, HeaderMap, HeaderName};

/// The client's address: from `trusted_header` when configured and it holds a valid
/// address, else the TCP peer (when the server recorded it).
pub fn client_address(
    headers: &HeaderMap,
    extensions: &Extensions,
    trusted_header: Option<&HeaderName>,
) -> Option<IpAddr> {
    trusted_header
        .and_then(|name| from_header(headers, name))
        .or_else(|| {
            extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|peer| peer.0.ip())
        })
}

/// The rightmost entry of the (last) header line, if it is an address (`1.2.3.4`,
/// `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]:5678`).
fn from_header(headers: &HeaderMap, name: &HeaderName) -> Option<IpAddr> {
    let line = headers.get_all(name).iter().next_back()?.to_str().ok()?;
    let entry = line.rsplit(',').next()?.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn address(header: Option<&'static str>, trusted: bool) -> Option<IpAddr> {
        let mut headers = HeaderMap::new();
        if let Some(value) = header {
            headers.insert("x-forwarded-for", HeaderValue::from_static(value));
        }
        let mut extensions = Extensions::new();
        extensions.insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 1], 4000))));
        let name = HeaderName::from_static("x-forwarded-for");
        client_address(&headers, &extensions, trusted.then_some(&name))
    }

    #[test]
    fn the_peer_unless_a_trusted_header_names_the_client() {
        let peer = Some(IpAddr::from([10, 0, 0, 1]));
        assert_eq!(address(None, false), peer);
        assert_eq!(
            address(Some("203.0.113.9"), false),
            peer,
            "untrusted header"
        );
        assert_eq!(address(None, true), peer);
        assert_eq!(
            address(Some("198.51.100.1, 203.0.113.9"), true),
            Some(IpAddr::from([203, 0, 113, 9])),
            "the entry the nearest proxy appended"
        );
        assert_eq!(
            address(Some("[2001:db8::1]:443"), true),
            "2001:db8::1".parse().ok()
        );
        assert_eq!(
            address(Some("1.2.3.4:80"), true),
            Some(IpAddr::from([1, 2, 3, 4]))
        );
        assert_eq!(
            address(Some("1.2.3.4, garbage"), true),
            peer,
            "not an address"
        );
    }
}
