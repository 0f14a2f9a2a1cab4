//! Resolve an image tag to the manifest digest a registry serves for it, over the OCI
//! distribution API: `HEAD /v2/<path>/manifests/<tag>` with every manifest media type in
//! `Accept`, answering a `401` challenge once (a bearer token from the realm the registry names,
//! or HTTP Basic), and reading `Docker-Content-Digest` (or hashing the manifest bytes when a
//! registry leaves that header out).
//!
//! One [`OciClient`] per process: it holds the connection pools and the token cache and is
//! cheap to clone. The HTTP stack is hyper-util's client with hyper-rustls (ring, native roots),
//! the same one octocrab already builds into the app.
//!
//! Here: the client, its requests and how answers map to errors. Apart: `config` (an image's
//! configuration and the users of its layers), `auth` (the
//! `WWW-Authenticate` challenge, token requests and their cache), `docker_config` (credentials
//! from a Docker `config.json`) and `guard` (which hosts may be contacted, checked again on
//! every connection).
//!
//! Never in an error message or a log line: a password, a `Basic` header or a token.

mod auth;
mod config;
mod docker_config;
mod guard;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{ACCEPT, AUTHORIZATION, HeaderValue, USER_AGENT};
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};

use auth::{CachedToken, Credentials, bearer};
pub use config::{complete_names, inspect_all, inspect_with_scans};
use docker_config::auth_key;
use guard::{GuardedResolver, host_of, is_loopback};
pub use guard::{is_public, may_contact};

/// All four manifest media types, index and list first. distribution answers 404 for an OCI
/// manifest or an index when its type is missing from `Accept`, so all of them go every time.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.oci.image.manifest.v1+json";

/// Manifests the fallback `GET` reads (registries accept at least 4 MiB).
const MAX_MANIFEST_BYTES: usize = 8 << 20;
/// Error answers: only their `errors[].code` is read.
const MAX_ERROR_BYTES: usize = 64 << 10;

type Body = Empty<Bytes>;

/// Why a tag could not be resolved. Every message names the registry and the reference; none
/// carries a password or a token.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The registry has no such repository or no such tag (`404`, `MANIFEST_UNKNOWN`,
    /// `NAME_UNKNOWN`).
    #[error("{reference} not found on {registry}: {detail}")]
    NotFound {
        registry: String,
        reference: String,
        detail: String,
    },
    /// A `401`/`403` that the configured credentials (or anonymous access) could not get past.
    #[error("not authorized to pull {reference} from {registry}: {detail}")]
    Unauthorized {
        registry: String,
        reference: String,
        detail: String,
    },
    /// Connection refused, DNS, TLS handshake, timeout, or a registry that answers `429`/`5xx`:
    /// try again later.
    #[error("registry {registry} unreachable while resolving {reference}: {detail}")]
    Unreachable {
        registry: String,
        reference: String,
        detail: String,
    },
    /// An answer the API does not allow: a bad digest, an unexpected status, a token server
    /// without a token.
    #[error("registry {registry} answered unexpectedly for {reference}: {detail}")]
    Protocol {
        registry: String,
        reference: String,
        detail: String,
    },
    /// Bad input or local set-up: an invalid reference, an unreadable Docker config, no TLS roots.
    #[error("registry client: {0}")]
    Config(String),
}

/// Resolves `domain/path:tag` to a manifest digest. Clones share the connection pools and the
/// token cache.
#[derive(Clone)]
pub struct OciClient {
    auth: Arc<HashMap<String, Credentials>>,
    timeout: Duration,
    http: Client<HttpConnector<GuardedResolver>, Body>,
    /// `Err` when the machine has no TLS roots: only plain-http registries work then.
    https: Result<Client<HttpsConnector<HttpConnector<GuardedResolver>>, Body>, String>,
    insecure_http_hosts: Arc<Vec<String>>,
    /// When set, only public hosts and these listed ones are contacted (registries and token
    /// realms alike), checked on what the name resolves to.
    guard: Option<Arc<Vec<String>>>,
    /// The same list, read by the connections' resolver: the address connected to is the one
    /// checked (a name cannot answer public to the check and private to the connection).
    resolver_guard: Arc<std::sync::RwLock<Option<Arc<Vec<String>>>>>,
    /// Bearer tokens per (registry API host, scope).
    tokens: Arc<Mutex<HashMap<(String, String), CachedToken>>>,
    /// Image configurations read, by manifest digest (immutable, so never stale).
    configs: Arc<Mutex<HashMap<String, kubeharden_core::facts::ImageConfig>>>,
    /// IDs of named users read from layers, by (manifest digest, `USER`).
    names: Arc<Mutex<HashMap<(String, String), kubeharden_core::facts::NamedIds>>>,
}

impl std::fmt::Debug for OciClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut hosts: Vec<&String> = self.auth.keys().collect();
        hosts.sort();
        f.debug_struct("OciClient")
            .field("credentials_for", &hosts)
            .field("timeout", &self.timeout)
            .field("insecure_http_hosts", &self.insecure_http_hosts)
            .field("tls", &self.https.as_ref().map(|_| "native roots"))
            .finish_non_exhaustive()
    }
}

/// What an error is about: the registry as the caller named it and the full reference.
struct Target {
    registry: String,
    reference: String,
}

/// What follows the repository in a reference: digest pinning resolves tags only.
#[derive(Clone, Copy)]
pub(super) enum Reference<'a> {
    Tag(&'a str),
    TagOrDigest(&'a str),
}

impl Target {
    fn not_found(&self, detail: String) -> OciError {
        OciError::NotFound {
            registry: self.registry.clone(),
            reference: self.reference.clone(),
            detail,
        }
    }
    fn unauthorized(&self, detail: String) -> OciError {
        OciError::Unauthorized {
            registry: self.registry.clone(),
            reference: self.reference.clone(),
            detail,
        }
    }
    fn unreachable(&self, detail: String) -> OciError {
        OciError::Unreachable {
            registry: self.registry.clone(),
            reference: self.reference.clone(),
            detail,
        }
    }
    fn protocol(&self, detail: String) -> OciError {
        OciError::Protocol {
            registry: self.registry.clone(),
            reference: self.reference.clone(),
            detail,
        }
    }
}

/// One answer, body read in full (bounded).
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl OciClient {
    /// `auth`: host -> (user, password), e.g. from a Docker config.json; `timeout` per request.
    ///
    /// Hosts are matched as [`auth_from_docker_config`](Self::auth_from_docker_config) writes
    /// them: lowercase `host[:port]`, with `docker.io` standing for Docker Hub (a scheme or a
    /// path, as in `https://index.docker.io/v1/`, is dropped).
    pub fn new(
        auth: HashMap<String, (String, String)>,
        timeout: Duration,
    ) -> Result<Self, OciError> {
        if timeout.is_zero() {
            return Err(OciError::Config(
                "the request timeout must not be zero".into(),
            ));
        }
        let auth = auth
            .into_iter()
            .map(|(host, (user, password))| (auth_key(&host), Credentials { user, password }))
            .collect();

        let resolver_guard = Arc::new(std::sync::RwLock::new(None));
        let mut connector = HttpConnector::new_with_resolver(GuardedResolver {
            guard: resolver_guard.clone(),
        });
        connector.set_connect_timeout(Some(timeout));
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector.clone());

        connector.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map(|builder| {
                let connector = builder
                    .https_only()
                    .enable_http1()
                    .wrap_connector(connector);
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(30))
                    .build(connector)
            })
            .map_err(|e| format!("no TLS root certificates could be loaded ({e})"));
        if let Err(why) = &https {
            tracing::warn!("registry client: {why}; only plain-http registries will work");
        }

        Ok(Self {
            auth: Arc::new(auth),
            timeout,
            http,
            https,
            insecure_http_hosts: Arc::new(Vec::new()),
            guard: None,
            resolver_guard,
            tokens: Arc::new(Mutex::new(HashMap::new())),
            configs: Arc::new(Mutex::new(HashMap::new())),
            names: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// Registries besides loopback to reach over plain http (`host` or `host:port`, as in the
    /// image reference), e.g. an in-cluster registry without TLS.
    pub fn set_insecure_http_hosts(&mut self, hosts: Vec<String>) {
        self.insecure_http_hosts = Arc::new(
            hosts
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .collect(),
        );
    }

    /// Contact only public hosts and `listed` ones (`host[:port]`): names that a pull request
    /// writes into an image reference, or a registry writes into its token realm, must not reach
    /// loopback, private, link-local or metadata addresses of the server's own network.
    pub fn guard_network(&mut self, listed: Vec<String>) {
        let listed = Arc::new(listed);
        self.guard = Some(listed.clone());
        *self
            .resolver_guard
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(listed);
    }

    async fn allowed(&self, authority: &str) -> bool {
        match &self.guard {
            None => true,
            Some(listed) => may_contact(authority, listed).await,
        }
    }

    /// The digest (`sha256:<64 hex>`) the registry serves for `domain/path:tag`.
    /// `domain` is as in a normalized reference (`docker.io` means Docker Hub: talk to
    /// `registry-1.docker.io`; `localhost:5000`, `127.0.0.1:5000`, `ghcr.io`, ...). `path` is the
    /// repository path (`library/nginx`). Loopback registries (`localhost`, `127.0.0.1`,
    /// `[::1]`, any port) and [`set_insecure_http_hosts`](Self::set_insecure_http_hosts) are
    /// reached over plain http, everything else over https.
    ///
    /// For a multi-arch tag this is the index (manifest list) digest, the one to pin with
    /// `image@sha256:`. At most: one `HEAD`, one token request, one `HEAD` with the answer to
    /// the challenge, one `GET` when the registry sends no `Docker-Content-Digest`; each bounded
    /// by the timeout.
    pub async fn resolve_digest(
        &self,
        domain: &str,
        path: &str,
        tag: &str,
    ) -> Result<String, OciError> {
        let (target, scheme, host) = self.open(domain, path, Reference::Tag(tag)).await?;
        let invalid = |why: &str| {
            OciError::Config(format!(
                "invalid image reference {}: {why}",
                target.reference
            ))
        };
        let uri: Uri = format!("{scheme}://{host}/v2/{path}/manifests/{tag}")
            .parse()
            .map_err(|_| invalid("not a valid URL"))?;
        let scope = format!("repository:{path}:pull");
        let cache_key = (host, scope);
        let credentials = self.auth.get(&auth_key(domain));

        // A token from an earlier resolution, if it is still good.
        let mut authorization = self.cached_token(&cache_key).and_then(|t| bearer(&t));
        let mut answer = self
            .manifest(Method::HEAD, &uri, authorization.as_ref(), &target)
            .await?;

        // One answer to the challenge, one retry.
        if answer.status == StatusCode::UNAUTHORIZED {
            if authorization.is_some() {
                self.forget_token(&cache_key);
            }
            let value = self
                .answer_challenge(&answer.headers, &cache_key, credentials, &target)
                .await?;
            authorization = Some(value);
            answer = self
                .manifest(Method::HEAD, &uri, authorization.as_ref(), &target)
                .await?;
            if answer.status == StatusCode::UNAUTHORIZED {
                let whose = match credentials {
                    Some(_) => format!("the credentials configured for {}", auth_key(domain)),
                    None => "anonymous access".to_string(),
                };
                return Err(target.unauthorized(format!("HEAD {uri} refused {whose} (401)")));
            }
        }

        let status = answer.status;
        if status == StatusCode::OK {
            if let Some(value) = answer.headers.get("docker-content-digest") {
                let digest = String::from_utf8_lossy(value.as_bytes()).trim().to_string();
                if is_sha256_digest(&digest) {
                    return Ok(digest);
                }
                return Err(target.protocol(format!(
                    "HEAD {uri}: Docker-Content-Digest {digest:?} is not sha256:<64 lowercase hex>"
                )));
            }
        } else if matches!(status.as_u16(), 401 | 403 | 404 | 429) || status.is_server_error() {
            return Err(classify(&answer, &target, &format!("HEAD {uri}")));
        }

        // No digest header (or a registry that does not do HEAD): the manifest itself, hashed
        // exactly as received.
        let got = self
            .manifest(Method::GET, &uri, authorization.as_ref(), &target)
            .await?;
        if got.status != StatusCode::OK {
            return Err(classify(&got, &target, &format!("GET {uri}")));
        }
        Ok(format!("sha256:{}", hex::encode(Sha256::digest(&got.body))))
    }

    /// Check a reference and the network guard before any request: the target for messages,
    /// and the scheme and host to reach. Digest resolution and image inspection both start here.
    async fn open(
        &self,
        domain: &str,
        path: &str,
        reference: Reference<'_>,
    ) -> Result<(Target, &'static str, String), OciError> {
        let (sep, value, valid, what) = match reference {
            Reference::Tag(t) => (":", t, valid_tag(t), "bad tag"),
            Reference::TagOrDigest(r) if r.starts_with("sha256:") => {
                ("@", r, is_sha256_digest(r), "bad tag or digest")
            }
            Reference::TagOrDigest(r) => (":", r, valid_tag(r), "bad tag or digest"),
        };
        let target = Target {
            registry: domain.to_string(),
            reference: format!("{domain}/{path}{sep}{value}"),
        };
        let invalid = |why: &str| {
            OciError::Config(format!(
                "invalid image reference {}: {why}",
                target.reference
            ))
        };
        if !valid_domain(domain) {
            return Err(invalid("bad registry host"));
        }
        if !valid_path(path) {
            return Err(invalid("bad repository path"));
        }
        if !valid {
            return Err(invalid(what));
        }
        let (scheme, host) = self.endpoint(domain);
        if !self.allowed(&host).await {
            return Err(OciError::Config(format!(
                "not contacting {host} for {}: a loopback or private address the server does not list",
                target.reference
            )));
        }
        Ok((target, scheme, host))
    }

    /// `(scheme, API host)` for a reference's domain.
    fn endpoint(&self, domain: &str) -> (&'static str, String) {
        let domain = domain.to_ascii_lowercase();
        let host = api_host(&domain).to_string();
        let scheme = if self.plain_http_allowed(&host) {
            "http"
        } else {
            "https"
        };
        (scheme, host)
    }

    /// Loopback, or a host the caller listed as insecure.
    fn plain_http_allowed(&self, authority: &str) -> bool {
        let authority = authority.to_ascii_lowercase();
        let host = host_of(&authority);
        is_loopback(host)
            || self
                .insecure_http_hosts
                .iter()
                .any(|h| *h == authority || h == host)
    }

    async fn manifest(
        &self,
        method: Method,
        uri: &Uri,
        authorization: Option<&HeaderValue>,
        target: &Target,
    ) -> Result<Answer, OciError> {
        let limit = if method == Method::GET {
            MAX_MANIFEST_BYTES
        } else {
            MAX_ERROR_BYTES
        };
        self.send(
            method,
            uri,
            Some(MANIFEST_ACCEPT),
            authorization,
            limit,
            target,
        )
        .await
    }

    /// One request, its body read to the end (at most `limit` bytes), all within the timeout.
    async fn send(
        &self,
        method: Method,
        uri: &Uri,
        accept: Option<&str>,
        authorization: Option<&HeaderValue>,
        limit: usize,
        target: &Target,
    ) -> Result<Answer, OciError> {
        let what = format!("{method} {uri}");
        let mut request = Request::builder().method(method).uri(uri.clone()).header(
            USER_AGENT,
            concat!("kubeharden/", env!("CARGO_PKG_VERSION")),
        );
        if let Some(accept) = accept {
            request = request.header(ACCEPT, accept);
        }
        if let Some(authorization) = authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        let request = request
            .body(Body::new())
            .map_err(|e| target.protocol(format!("{what}: cannot build the request: {e}")))?;

        let exchange = async {
            let response = if uri.scheme_str() == Some("http") {
                self.http.request(request).await
            } else {
                match &self.https {
                    Ok(client) => client.request(request).await,
                    Err(why) => {
                        return Err(OciError::Config(format!(
                            "cannot reach {} over https for {}: {why}",
                            target.registry, target.reference
                        )));
                    }
                }
            }
            .map_err(|e| transport_error(&e, &what, target))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, limit)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<LengthLimitError>().is_some() {
                        target.protocol(format!("{what}: answer larger than {limit} bytes"))
                    } else {
                        target.unreachable(format!("{what}: reading the answer: {}", chain(&*e)))
                    }
                })?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(target.unreachable(format!(
                "{what}: no answer within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }
}

/// A transport failure: refused, DNS, TLS, reset, timeout → Unreachable; a peer that does not
/// speak HTTP → Protocol.
fn transport_error(e: &hyper_util::client::legacy::Error, what: &str, target: &Target) -> OciError {
    let detail = format!("{what}: {}", chain(e));
    if e.is_connect() {
        return target.unreachable(detail);
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        // `is_parse` covers every malformed head, an oversized one included.
        if let Some(h) = s.downcast_ref::<hyper::Error>()
            && (h.is_parse() || h.is_parse_status())
        {
            return target.protocol(detail);
        }
        source = s.source();
    }
    target.unreachable(detail)
}

/// An error and its sources, `: `-separated.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Map a non-success answer to an error, by status and by the `errors[].code` of its body.
fn classify(answer: &Answer, target: &Target, what: &str) -> OciError {
    let codes = error_codes(&answer.body);
    let status = answer.status;
    let detail = if codes.is_empty() {
        format!("{what} answered {status}")
    } else {
        format!("{what} answered {status} ({})", codes.join(", "))
    };
    let has = |wanted: &[&str]| codes.iter().any(|c| wanted.contains(&c.as_str()));
    if status == StatusCode::NOT_FOUND || has(&["MANIFEST_UNKNOWN", "NAME_UNKNOWN"]) {
        target.not_found(detail)
    } else if matches!(status.as_u16(), 401 | 403) || has(&["UNAUTHORIZED", "DENIED"]) {
        target.unauthorized(detail)
    } else if status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
        || has(&["TOOMANYREQUESTS"])
    {
        target.unreachable(detail)
    } else {
        target.protocol(detail)
    }
}

/// The `code`s of an OCI error body `{"errors":[{"code":..}]}`; empty for anything else.
fn error_codes(body: &[u8]) -> Vec<String> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    value
        .get("errors")
        .and_then(|e| e.as_array())
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e.get("code")?.as_str())
                .filter(|c| c.len() <= 64)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The host a registry's API is served from: Docker Hub's is not `docker.io`.
pub fn api_host(domain: &str) -> &str {
    match domain {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        other => other,
    }
}

/// `sha256:` and 64 lowercase hex digits.
fn is_sha256_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// `host[:port]` or `[v6]:port`: what may go between `://` and `/v2/` (the reference grammar's
/// domain, with a port of at most five digits).
fn valid_domain(domain: &str) -> bool {
    let port = domain
        .rsplit_once(':')
        .filter(|(h, _)| !h.starts_with('[') || h.ends_with(']'))
        .map(|(_, p)| p);
    domain.len() <= 255
        && kubeharden_core::image::valid_domain(domain)
        && port.is_none_or(|p| p.len() <= 5)
}

/// The reference grammar's path, 255 characters at most.
fn valid_path(path: &str) -> bool {
    path.len() <= 255 && kubeharden_core::image::valid_path(path)
}

fn valid_tag(tag: &str) -> bool {
    kubeharden_core::image::valid_tag(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_format() {
        let good = format!("sha256:{}", "0123456789abcdef".repeat(4));
        assert!(is_sha256_digest(&good));
        assert!(!is_sha256_digest(&good.to_uppercase()));
        assert!(!is_sha256_digest(&format!("sha256:{}", "A".repeat(64))));
        assert!(!is_sha256_digest(&good[..good.len() - 1]));
        assert!(!is_sha256_digest(&format!("{good}0")));
        assert!(!is_sha256_digest(&format!("sha512:{}", "a".repeat(128))));
        assert!(!is_sha256_digest(&"a".repeat(64)));
        assert!(!is_sha256_digest(&format!(" {good}")));
        assert!(!is_sha256_digest(&format!("sha256:{}", "g".repeat(64))));
        assert!(!is_sha256_digest(""));
    }

    #[test]
    fn endpoints_and_schemes() {
        let mut client = OciClient::new(HashMap::new(), Duration::from_secs(1)).unwrap();
        let ep = |c: &OciClient, d: &str| {
            let (s, h) = c.endpoint(d);
            format!("{s}://{h}")
        };
        assert_eq!(ep(&client, "docker.io"), "https://registry-1.docker.io");
        assert_eq!(
            ep(&client, "index.docker.io"),
            "https://registry-1.docker.io"
        );
        assert_eq!(ep(&client, "ghcr.io"), "https://ghcr.io");
        assert_eq!(ep(&client, "localhost:5000"), "http://localhost:5000");
        assert_eq!(ep(&client, "localhost"), "http://localhost");
        assert_eq!(ep(&client, "127.0.0.1:5000"), "http://127.0.0.1:5000");
        assert_eq!(ep(&client, "127.1.2.3:1"), "http://127.1.2.3:1");
        assert_eq!(ep(&client, "[::1]:5000"), "http://[::1]:5000");
        assert_eq!(
            ep(&client, "localhost.example.com"),
            "https://localhost.example.com"
        );
        assert_eq!(ep(&client, "registry:5000"), "https://registry:5000");
        client.set_insecure_http_hosts(vec!["registry:5000".into(), "Mirror.Local".into()]);
        assert_eq!(ep(&client, "registry:5000"), "http://registry:5000");
        assert_eq!(ep(&client, "registry:5001"), "https://registry:5001");
        assert_eq!(ep(&client, "mirror.local:443"), "http://mirror.local:443");
    }

    #[test]
    fn references_are_validated_before_any_request() {
        for d in [
            "docker.io",
            "localhost:5000",
            "[::1]:5000",
            "[::1]",
            "Ghcr.IO",
            "a-b.c",
        ] {
            assert!(valid_domain(d), "{d}");
        }
        for d in [
            "", "a/b", "a@b", "a:b", "a:123456", "[::1", "[::1]x", "-a.com", "a..b", "a b",
        ] {
            assert!(!valid_domain(d), "{d}");
        }
        for p in ["library/nginx", "a", "team/app", "a.b_c__d---e/f0", "x/y/z"] {
            assert!(valid_path(p), "{p}");
        }
        for p in [
            "", "Team/app", "a//b", "/a", "a/", "a/../b", "a..b", "a___b", "a/b?x=1", "a-",
        ] {
            assert!(!valid_path(p), "{p}");
        }
        assert!(!valid_path(&"a".repeat(256)));
        for t in ["1.0", "latest", "_x", "v1.2.3-rc.1", &"a".repeat(128)] {
            assert!(valid_tag(t), "{t}");
        }
        for t in ["", ".x", "-x", "a/b", "a:b", "a b", &"a".repeat(129)] {
            assert!(!valid_tag(t), "{t}");
        }
    }

    #[tokio::test]
    async fn invalid_reference_is_a_config_error_without_a_request() {
        let client = OciClient::new(HashMap::new(), Duration::from_secs(1)).unwrap();
        let err = client
            .resolve_digest("127.0.0.1:1", "a/../b", "1.0")
            .await
            .unwrap_err();
        assert!(matches!(err, OciError::Config(_)), "{err}");
        assert!(err.to_string().contains("127.0.0.1:1/a/../b:1.0"), "{err}");
    }

    #[test]
    fn error_bodies_are_classified_by_code() {
        let target = Target {
            registry: "r".into(),
            reference: "r/a:1".into(),
        };
        let answer = |status: u16, body: &str| Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: Bytes::copy_from_slice(body.as_bytes()),
        };
        let name_unknown =
            r#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known"}]}"#;
        assert!(matches!(
            classify(&answer(400, name_unknown), &target, "GET"),
            OciError::NotFound { .. }
        ));
        assert!(matches!(
            classify(&answer(404, ""), &target, "HEAD"),
            OciError::NotFound { .. }
        ));
        assert!(matches!(
            classify(&answer(403, ""), &target, "HEAD"),
            OciError::Unauthorized { .. }
        ));
        assert!(matches!(
            classify(&answer(429, ""), &target, "HEAD"),
            OciError::Unreachable { .. }
        ));
        assert!(matches!(
            classify(&answer(503, ""), &target, "HEAD"),
            OciError::Unreachable { .. }
        ));
        let err = classify(
            &answer(400, r#"{"errors":[{"code":"MANIFEST_INVALID"}]}"#),
            &target,
            "GET",
        );
        assert!(matches!(err, OciError::Protocol { .. }));
        assert!(err.to_string().contains("MANIFEST_INVALID"), "{err}");
    }

    #[test]
    fn debug_never_shows_a_password() {
        let auth = HashMap::from([(
            "ghcr.io".to_string(),
            ("me".to_string(), "top-secret-pw".to_string()),
        )]);
        let client = OciClient::new(auth, Duration::from_secs(1)).unwrap();
        let shown = format!("{client:?}");
        assert!(shown.contains("ghcr.io"), "{shown}");
        assert!(!shown.contains("top-secret-pw"), "{shown}");
        let creds = Credentials {
            user: "me".into(),
            password: "top-secret-pw".into(),
        };
        assert!(!format!("{creds:?}").contains("top-secret-pw"));
        assert!(creds.basic().is_sensitive());
    }

    #[test]
    fn zero_timeout_is_refused() {
        assert!(matches!(
            OciClient::new(HashMap::new(), Duration::ZERO),
            Err(OciError::Config(_))
        ));
    }
}
