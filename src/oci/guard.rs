//! The network guard: image references and token realms come from pull requests and
//! registries, so the app contacts only public hosts and the ones the server lists, and its
//! connections resolve names through the same check.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// The host of `host[:port]` or `[v6]:port`.
pub(super) fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        authority.split(':').next().unwrap_or(authority)
    }
}

/// Resolves names for the client's connections, dropping non-public addresses when the guard
/// is on (unless the name is listed), so what is connected to is what was checked.
#[derive(Clone)]
pub(super) struct GuardedResolver {
    pub(super) guard: Arc<std::sync::RwLock<Option<Arc<Vec<String>>>>>,
}

impl tower::Service<hyper_util::client::legacy::connect::dns::Name> for GuardedResolver {
    type Response = std::vec::IntoIter<std::net::SocketAddr>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        let guard = self.guard.read().unwrap_or_else(|e| e.into_inner()).clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let Some(listed) = guard else {
                return Ok(addrs.into_iter());
            };
            let is_listed = listed
                .iter()
                .any(|l| host_of(l.trim()).eq_ignore_ascii_case(&host));
            if is_listed {
                return Ok(addrs.into_iter());
            }
            let public: Vec<_> = addrs.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("{host} resolves to a loopback or private address"),
                ));
            }
            Ok(public.into_iter())
        })
    }
}

/// Whether the app may contact `authority` (`host[:port]`): any host listed; otherwise only
/// when every address it resolves to is public. Literal addresses are checked as they are;
/// names (and the numeric spellings resolvers accept, such as `127.1`) by resolving them.
pub async fn may_contact(authority: &str, listed: &[String]) -> bool {
    let authority = authority.trim().to_ascii_lowercase();
    if listed
        .iter()
        .any(|h| h.trim().eq_ignore_ascii_case(&authority))
    {
        return true;
    }
    let host = host_of(&authority).to_string();
    let port = authority
        .rsplit_once(':')
        .filter(|(h, _)| !h.ends_with('[') && (authority.starts_with('[') == h.ends_with(']')))
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .unwrap_or(443);
    if host.is_empty() || host == "localhost" || host.ends_with(".localhost") {
        return false;
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return is_public(ip);
    }
    match tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::lookup_host((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(addrs)) => {
            let addrs: Vec<_> = addrs.collect();
            !addrs.is_empty() && addrs.iter().all(|a| is_public(a.ip()))
        }
        // Unresolvable: nothing to contact.
        _ => false,
    }
}

/// Not loopback, private, link-local (cloud metadata), shared (CGNAT), unspecified, broadcast,
/// or an IPv4 address in IPv6 clothing.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            let [a, b, c, d] = ip.octets();
            !(ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_broadcast()
                || ip.is_documentation()
                || ip.is_multicast()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (18..20).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                // Azure's WireServer, a metadata endpoint outside the link-local range.
                || [a, b, c, d] == [168, 63, 129, 16])
        }
        IpAddr::V6(ip) => {
            let seg = ip.segments();
            let first = seg[0];
            !(ip.is_loopback()
                || ip.is_unspecified()
                || ip.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first & 0xffc0) == 0xfec0
                // 6to4 and NAT64 carry IPv4 addresses, private ones included.
                || first == 0x2002
                || (first == 0x64 && seg[1] == 0xff9b)
                || ip.to_ipv4_mapped().is_some()
                || ip.to_ipv4().is_some())
        }
    }
}

pub(super) fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_resolve_through_the_guard() {
        use tower::Service;
        let guard = Arc::new(std::sync::RwLock::new(None));
        let mut resolver = GuardedResolver {
            guard: guard.clone(),
        };
        let name = |h: &str| {
            h.parse::<hyper_util::client::legacy::connect::dns::Name>()
                .unwrap()
        };
        // No guard: as the system resolves.
        assert!(resolver.call(name("localhost")).await.is_ok());
        *guard.write().unwrap() = Some(Arc::new(Vec::new()));
        let refused = resolver.call(name("localhost")).await.unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::PermissionDenied);
        *guard.write().unwrap() = Some(Arc::new(vec!["localhost:5000".to_string()]));
        assert!(resolver.call(name("localhost")).await.is_ok());
    }

    #[tokio::test]
    async fn pull_requests_cannot_point_the_app_at_its_own_network() {
        for denied in [
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1:5000",
            "10.0.0.7",
            "192.168.1.1:443",
            "169.254.169.254",
            "100.64.0.1",
            "[::1]:5000",
            "[fd00::1]",
            "[::ffff:127.0.0.1]",
            "[64:ff9b::a00:7]",
            "[2002:a00:7::1]",
            "168.63.129.16",
            "198.18.0.1",
            "0.0.0.0",
            "app.localhost",
        ] {
            assert!(!may_contact(denied, &[]).await, "{denied}");
        }
        for allowed in ["8.8.8.8", "[2001:4860:4860::8888]:443"] {
            assert!(may_contact(allowed, &[]).await, "{allowed}");
        }
        assert!(may_contact("127.0.0.1:5000", &["127.0.0.1:5000".to_string()]).await);
        assert!(!may_contact("127.0.0.1:5001", &["127.0.0.1:5000".to_string()]).await);
    }
}
