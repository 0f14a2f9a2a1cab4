//! Resolve an image tag to the manifest digest a registry serves for it, over the OCI
//! distribution API: `HEAD /v2/<path>/manifests/<tag>` with every manifest media type in
//! `Accept`, answering a `401` challenge once (a bearer token from the realm the registry names,
//! or HTTP Basic), and reading `Docker-Content-Digest` (or hashing the manifest bytes when a
//! registry leaves that header out).
//!
//! One [`RegistryClient`] per process: it holds the connection pools and the token cache and is
//! cheap to clone. The HTTP stack is hyper-util's client with hyper-rustls (ring, native roots),
//! the same one octocrab already builds into the app.
//!
//! Never in an error message or a log line: a password, a `Basic` header or a token.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use http::header::{ACCEPT, AUTHORIZATION, HeaderValue, USER_AGENT, WWW_AUTHENTICATE};
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};

/// All four manifest media types, index and list first. distribution answers 404 for an OCI
/// manifest or an index when its type is missing from `Accept`, so all of them go every time.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.oci.image.manifest.v1+json";

/// Manifests the fallback `GET` reads (registries accept at least 4 MiB).
const MAX_MANIFEST_BYTES: usize = 8 << 20;
/// Token server answers (a JWT is a few KiB).
const MAX_TOKEN_BYTES: usize = 1 << 20;
/// Error answers: only their `errors[].code` is read.
const MAX_ERROR_BYTES: usize = 64 << 10;
/// The token spec's default lifetime when `expires_in` is missing.
const DEFAULT_TOKEN_SECONDS: u64 = 60;

type Body = Empty<Bytes>;

/// Why a tag could not be resolved. Every message names the registry and the reference; none
/// carries a password or a token.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
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

/// Credentials for one registry host; `Debug` shows the user only.
#[derive(Clone)]
struct Credentials {
    user: String,
    password: String,
}

impl Credentials {
    fn basic(&self) -> HeaderValue {
        let encoded = STANDARD.encode(format!("{}:{}", self.user, self.password));
        sensitive(&format!("Basic {encoded}")).unwrap_or_else(|| HeaderValue::from_static(""))
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, …)", self.user)
    }
}

struct CachedToken {
    token: String,
    valid_until: Instant,
}

/// Resolves `domain/path:tag` to a manifest digest. Clones share the connection pools and the
/// token cache.
#[derive(Clone)]
pub struct RegistryClient {
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
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut hosts: Vec<&String> = self.auth.keys().collect();
        hosts.sort();
        f.debug_struct("RegistryClient")
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

impl Target {
    fn not_found(&self, detail: String) -> RegistryError {
        RegistryError::NotFound {
            registry: self.registry.clone(),
            reference: self.reference.clone(),
            detail,
        }
    }
    fn unauthorized(&self, detail: String) -> RegistryError {
        RegistryError::Unauthorized {
            registry: self.registry.clone(),
            reference: self.reference.clone(),
            detail,
        }
    }
    fn unreachable(&self, detail: String) -> RegistryError {
        RegistryError::Unreachable {
            registry: self.registry.clone(),
            reference: self.reference.clone(),
            detail,
        }
    }
    fn protocol(&self, detail: String) -> RegistryError {
        RegistryError::Protocol {
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

impl RegistryClient {
    /// `auth`: host -> (user, password), e.g. from a Docker config.json; `timeout` per request.
    ///
    /// Hosts are matched as [`auth_from_docker_config`](Self::auth_from_docker_config) writes
    /// them: lowercase `host[:port]`, with `docker.io` standing for Docker Hub (a scheme or a
    /// path, as in `https://index.docker.io/v1/`, is dropped).
    pub fn new(
        auth: HashMap<String, (String, String)>,
        timeout: Duration,
    ) -> Result<Self, RegistryError> {
        if timeout.is_zero() {
            return Err(RegistryError::Config(
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

    /// Load credentials from a Docker `config.json` (`{"auths": {"host": {"auth":
    /// base64("user:pass")}}}` or `username`/`password` fields). Keys come back normalised
    /// (`https://index.docker.io/v1/` → `docker.io`); entries with neither form (an
    /// `identitytoken`, an empty entry left by a credential helper) are skipped. A config
    /// without `auths` gives an empty map.
    pub fn auth_from_docker_config(
        path: &Path,
    ) -> Result<HashMap<String, (String, String)>, RegistryError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            RegistryError::Config(format!("cannot read Docker config {}: {e}", path.display()))
        })?;
        parse_docker_config(&text).map_err(|why| {
            RegistryError::Config(format!("Docker config {}: {why}", path.display()))
        })
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
    ) -> Result<String, RegistryError> {
        let target = Target {
            registry: domain.to_string(),
            reference: format!("{domain}/{path}:{tag}"),
        };
        let invalid = |why: &str| {
            RegistryError::Config(format!(
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
        if !valid_tag(tag) {
            return Err(invalid("bad tag"));
        }

        let (scheme, host) = self.endpoint(domain);
        if !self.allowed(&host).await {
            return Err(RegistryError::Config(format!(
                "not contacting {host} for {}: a loopback or private address the server does not list",
                target.reference
            )));
        }
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
    ) -> Result<Answer, RegistryError> {
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

    /// The `Authorization` value that answers a `401`'s challenge: a fresh bearer token (now
    /// cached) or Basic credentials.
    async fn answer_challenge(
        &self,
        headers: &HeaderMap,
        cache_key: &(String, String),
        credentials: Option<&Credentials>,
        target: &Target,
    ) -> Result<HeaderValue, RegistryError> {
        let challenges: Vec<Challenge> = headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .flat_map(|v| parse_www_authenticate(&String::from_utf8_lossy(v.as_bytes())))
            .collect();
        let host = &cache_key.0;
        if let Some(bearer_challenge) = challenges.iter().find(|c| c.scheme == "bearer") {
            let Some(realm) = bearer_challenge.params.get("realm") else {
                return Err(
                    target.protocol(format!("{host} asks for a bearer token but names no realm"))
                );
            };
            let service = bearer_challenge.params.get("service").map(String::as_str);
            let token = self
                .fetch_token(realm, service, &cache_key.1, credentials, target)
                .await?;
            let value = bearer(&token.token).ok_or_else(|| {
                target.protocol(format!(
                    "the token server {realm} sent a token that is not a valid header value"
                ))
            })?;
            self.remember_token(cache_key.clone(), token);
            return Ok(value);
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            return match credentials {
                Some(c) => Ok(c.basic()),
                None => Err(target.unauthorized(format!(
                    "{host} asks for Basic credentials and none are configured for {}",
                    auth_key(&target.registry)
                ))),
            };
        }
        Err(target.unauthorized(format!(
            "{host} answered 401 without a Bearer or Basic challenge"
        )))
    }

    /// `GET realm?service=..&scope=..`, with Basic credentials when there are some and the realm
    /// is https (or loopback / listed as insecure).
    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        credentials: Option<&Credentials>,
        target: &Target,
    ) -> Result<CachedToken, RegistryError> {
        let realm_uri: Uri = realm
            .parse()
            .map_err(|_| target.protocol(format!("the token realm {realm:?} is not a URL")))?;
        // Host and port only: userinfo (`public@internal`) must not pass for another host.
        if realm_uri
            .authority()
            .is_some_and(|a| a.as_str().contains('@'))
        {
            return Err(target.protocol(format!(
                "the token realm {realm:?} carries user information"
            )));
        }
        let realm_host = realm_uri.host().map(|h| match realm_uri.port_u16() {
            Some(port) => format!("{h}:{port}"),
            None => h.to_string(),
        });
        let (Some(scheme), Some(realm_host)) = (realm_uri.scheme_str(), realm_host) else {
            return Err(
                target.protocol(format!("the token realm {realm:?} is not an absolute URL"))
            );
        };
        if scheme != "https" && scheme != "http" {
            return Err(target.protocol(format!("the token realm {realm:?} is not http(s)")));
        }
        // A registry names its token realm: it must not send the app into the server's network.
        if !self.allowed(&realm_host).await {
            return Err(target.protocol(format!(
                "the token realm {realm:?} is on a loopback or private address"
            )));
        }
        let mut url = realm.to_string();
        url.push(if realm.contains('?') { '&' } else { '?' });
        if let Some(service) = service {
            url.push_str("service=");
            url.push_str(&percent_encode(service));
            url.push('&');
        }
        url.push_str("scope=");
        url.push_str(&percent_encode(scope));
        let uri: Uri = url
            .parse()
            .map_err(|_| target.protocol(format!("the token realm {realm:?} is not a URL")))?;

        let send_credentials = credentials.filter(|_| {
            let safe = scheme == "https" || self.plain_http_allowed(&realm_host);
            if !safe {
                tracing::warn!(
                    realm,
                    "not sending registry credentials to a plain-http token realm"
                );
            }
            safe
        });
        let basic = send_credentials.map(Credentials::basic);
        let answer = self
            .send(
                Method::GET,
                &uri,
                None,
                basic.as_ref(),
                MAX_TOKEN_BYTES,
                target,
            )
            .await?;
        let what = format!("the token server {realm}");
        match answer.status {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                let whose = match send_credentials {
                    Some(_) => format!(
                        "the credentials configured for {}",
                        auth_key(&target.registry)
                    ),
                    None => "anonymous access".to_string(),
                };
                return Err(
                    target.unauthorized(format!("{what} refused {whose} ({})", answer.status))
                );
            }
            _ => return Err(classify(&answer, target, &what)),
        }
        parse_token(&answer.body, Instant::now())
            .map_err(|why| target.protocol(format!("{what}: {why}")))
    }

    fn cached_token(&self, key: &(String, String)) -> Option<String> {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        match tokens.get(key) {
            Some(t) if t.valid_until > Instant::now() => Some(t.token.clone()),
            Some(_) => {
                tokens.remove(key);
                None
            }
            None => None,
        }
    }

    fn remember_token(&self, key: (String, String), token: CachedToken) {
        let now = Instant::now();
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.retain(|_, t| t.valid_until > now);
        if token.valid_until > now {
            tokens.insert(key, token);
        }
    }

    fn forget_token(&self, key: &(String, String)) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.remove(key);
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
    ) -> Result<Answer, RegistryError> {
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
                        return Err(RegistryError::Config(format!(
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
fn transport_error(
    e: &hyper_util::client::legacy::Error,
    what: &str,
    target: &Target,
) -> RegistryError {
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
fn classify(answer: &Answer, target: &Target, what: &str) -> RegistryError {
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

/// A token server's JSON: `token` or `access_token`, `expires_in` seconds (60 by default),
/// cached until shortly before it runs out.
fn parse_token(body: &[u8], now: Instant) -> Result<CachedToken, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| "the answer is not JSON".to_string())?;
    let token = ["token", "access_token"]
        .iter()
        .filter_map(|k| value.get(*k)?.as_str())
        .find(|t| !t.is_empty())
        .ok_or("the answer has neither `token` nor `access_token`")?;
    let seconds = value
        .get("expires_in")
        .and_then(serde_json::Value::as_u64)
        .filter(|s| *s > 0)
        .unwrap_or(DEFAULT_TOKEN_SECONDS);
    Ok(CachedToken {
        token: token.to_string(),
        valid_until: now + token_lifetime(seconds),
    })
}

/// How long to reuse a token that lives `seconds`: a tenth less (at least 1 s, at most 30 s
/// less), so that it never runs out between the cache and the registry.
fn token_lifetime(seconds: u64) -> Duration {
    let margin = (seconds / 10).clamp(1, 30);
    Duration::from_secs(seconds.saturating_sub(margin))
}

fn bearer(token: &str) -> Option<HeaderValue> {
    sensitive(&format!("Bearer {token}"))
}

fn sensitive(value: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(value).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// Query-string encoding: unreserved characters stay, everything else is `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The host of `host[:port]` or `[v6]:port`.
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        authority.split(':').next().unwrap_or(authority)
    }
}

/// Resolves names for the client's connections, dropping non-public addresses when the guard
/// is on (unless the name is listed), so what is connected to is what was checked.
#[derive(Clone)]
struct GuardedResolver {
    guard: Arc<std::sync::RwLock<Option<Arc<Vec<String>>>>>,
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

/// The host a registry's API is served from: Docker Hub's is not `docker.io`.
pub fn api_host(domain: &str) -> &str {
    match domain {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        other => other,
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

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The key credentials are stored and looked up under: lowercase `host[:port]`, no scheme or
/// path, every Docker Hub alias as `docker.io`.
fn auth_key(host: &str) -> String {
    let host = host.trim();
    let host = host
        .strip_prefix("https://")
        .or_else(|| host.strip_prefix("http://"))
        .unwrap_or(host);
    let host = host.split('/').next().unwrap_or(host).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_string(),
        _ => host,
    }
}

/// `{"auths": {host: {"auth": base64(user:pass)} | {"username", "password"}}}`. Errors name the
/// entry, never its content.
fn parse_docker_config(text: &str) -> Result<HashMap<String, (String, String)>, String> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| format!("not JSON (line {}, column {})", e.line(), e.column()))?;
    let mut out = HashMap::new();
    let Some(auths) = value.get("auths") else {
        return Ok(out);
    };
    let auths = auths.as_object().ok_or("`auths` is not an object")?;
    for (host, entry) in auths {
        let entry = entry
            .as_object()
            .ok_or_else(|| format!("auths.{host} is not an object"))?;
        let encoded = entry
            .get("auth")
            .and_then(|a| a.as_str())
            .map(str::trim)
            .filter(|a| !a.is_empty());
        let pair = if let Some(encoded) = encoded {
            let decoded = STANDARD
                .decode(encoded)
                .or_else(|_| STANDARD_NO_PAD.decode(encoded.trim_end_matches('=')))
                .map_err(|_| format!("auths.{host}.auth is not base64"))?;
            let decoded = String::from_utf8(decoded)
                .map_err(|_| format!("auths.{host}.auth is not UTF-8"))?;
            let (user, password) = decoded
                .split_once(':')
                .ok_or_else(|| format!("auths.{host}.auth is not user:password"))?;
            (user.to_string(), password.to_string())
        } else {
            let field = |k: &str| {
                entry
                    .get(k)
                    .and_then(|v| v.as_str())
                    .filter(|v| !v.is_empty())
            };
            match (field("username"), field("password")) {
                (Some(user), Some(password)) => (user.to_string(), password.to_string()),
                _ => continue,
            }
        };
        out.insert(auth_key(host), pair);
    }
    Ok(out)
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

/// One challenge of a `WWW-Authenticate` header: the scheme (lowercase) and its parameters
/// (keys lowercase).
#[derive(Debug, PartialEq, Eq)]
struct Challenge {
    scheme: String,
    params: HashMap<String, String>,
}

/// Parse `WWW-Authenticate` (RFC 9110 §11.6.1): challenges and `key=value` / `key="quoted"`
/// parameters, separated by commas. A comma inside quotes belongs to the value (as in
/// `scope="repository:a/b:pull,push"`); a token not followed by `=` starts a new challenge.
/// Never fails: what it cannot read it skips.
fn parse_www_authenticate(header: &str) -> Vec<Challenge> {
    let s = header.as_bytes();
    let mut i = 0;
    let mut out: Vec<Challenge> = Vec::new();
    let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    let skip_ws = |i: &mut usize| {
        while *i < s.len() && (s[*i] == b' ' || s[*i] == b'\t') {
            *i += 1;
        }
    };
    while i < s.len() {
        skip_ws(&mut i);
        if i < s.len() && s[i] == b',' {
            i += 1;
            continue;
        }
        let start = i;
        while i < s.len() && is_tchar(s[i]) {
            i += 1;
        }
        if start == i {
            // Not a token: skip the byte.
            i += 1;
            continue;
        }
        let token = header[start..i].to_ascii_lowercase();
        let after_token = i;
        skip_ws(&mut i);
        if i < s.len() && s[i] == b'=' {
            i += 1;
            skip_ws(&mut i);
            let value = if i < s.len() && s[i] == b'"' {
                i += 1;
                let mut value = Vec::new();
                while i < s.len() && s[i] != b'"' {
                    if s[i] == b'\\' && i + 1 < s.len() {
                        i += 1;
                    }
                    value.push(s[i]);
                    i += 1;
                }
                i += 1; // the closing quote (past the end if unterminated)
                String::from_utf8_lossy(&value).into_owned()
            } else {
                let start = i;
                while i < s.len() && s[i] != b',' && s[i] != b' ' && s[i] != b'\t' {
                    i += 1;
                }
                String::from_utf8_lossy(&s[start..i]).into_owned()
            };
            if let Some(challenge) = out.last_mut() {
                challenge.params.entry(token).or_insert(value);
            }
        } else {
            i = after_token;
            out.push(Challenge {
                scheme: token,
                params: HashMap::new(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(c: &Challenge) -> Vec<(&str, &str)> {
        let mut p: Vec<(&str, &str)> = c
            .params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        p.sort();
        p
    }

    #[test]
    fn www_authenticate_docker_hub_bearer_keeps_commas_inside_quotes() {
        let c = parse_www_authenticate(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(
            params(&c[0]),
            vec![
                ("realm", "https://auth.docker.io/token"),
                ("scope", "repository:samalba/my-app:pull,push"),
                ("service", "registry.docker.io"),
            ]
        );
    }

    #[test]
    fn www_authenticate_several_challenges_spaces_case_and_escapes() {
        let c = parse_www_authenticate(
            r#"Basic realm="Registry \"main\", eu" , BEARER Realm = "http://127.0.0.1:1/token" ,Service=test, error="insufficient_scope""#,
        );
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(params(&c[0]), vec![("realm", r#"Registry "main", eu"#)]);
        assert_eq!(c[1].scheme, "bearer");
        assert_eq!(
            params(&c[1]),
            vec![
                ("error", "insufficient_scope"),
                ("realm", "http://127.0.0.1:1/token"),
                ("service", "test"),
            ]
        );
    }

    #[test]
    fn www_authenticate_unquoted_url_scheme_only_and_garbage() {
        let c = parse_www_authenticate("Bearer realm=https://ghcr.io/token,service=ghcr.io");
        assert_eq!(
            params(&c[0]),
            vec![("realm", "https://ghcr.io/token"), ("service", "ghcr.io")]
        );
        assert_eq!(parse_www_authenticate("Basic")[0].scheme, "basic");
        assert!(parse_www_authenticate("").is_empty());
        assert!(parse_www_authenticate(" , ,").is_empty());
        // Unterminated quote, stray bytes, a parameter before any scheme: no panic.
        let c = parse_www_authenticate(r#"realm="x", Bearer realm="unterminated"#);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].params["realm"], "unterminated");
        let _ = parse_www_authenticate("\"\"\"==,,=\\ é Bearer =");
    }

    proptest::proptest! {
        #[test]
        fn www_authenticate_never_panics(s in "\\PC{0,80}") {
            let _ = parse_www_authenticate(&s);
        }

        #[test]
        fn www_authenticate_round_trips_quoted_values(v in "[ -~]{0,40}") {
            let quoted = v.replace('\\', "\\\\").replace('"', "\\\"");
            let header = format!(r#"Bearer realm="{quoted}",service="s""#);
            let c = parse_www_authenticate(&header);
            proptest::prop_assert_eq!(c.len(), 1);
            proptest::prop_assert_eq!(&c[0].params["realm"], &v);
            proptest::prop_assert_eq!(&c[0].params["service"], "s");
        }
    }

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
    fn docker_config_auth_field_and_username_password() {
        let auth = STANDARD.encode("alice:pa:ss");
        let text = format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{auth}"}},
                "Registry.Example.com:5000": {{"username": "bob", "password": "hunter2"}},
                "ghcr.io": {{"identitytoken": "abc"}},
                "quay.io": {{}},
                "unpadded.example": {{"auth": "{}"}}
            }}, "credsStore": "desktop"}}"#,
            STANDARD.encode("u:p").trim_end_matches('=')
        );
        let map = parse_docker_config(&text).unwrap();
        assert_eq!(map.len(), 3, "{:?}", map.keys());
        assert_eq!(map["docker.io"], ("alice".into(), "pa:ss".into()));
        assert_eq!(
            map["registry.example.com:5000"],
            ("bob".into(), "hunter2".into())
        );
        assert_eq!(map["unpadded.example"], ("u".into(), "p".into()));
    }

    #[test]
    fn docker_config_errors_name_the_entry_not_the_secret() {
        assert!(parse_docker_config("{}").unwrap().is_empty());
        assert!(
            parse_docker_config(r#"{"credsStore":"x"}"#)
                .unwrap()
                .is_empty()
        );
        assert!(
            parse_docker_config("not json")
                .unwrap_err()
                .contains("not JSON")
        );
        assert!(parse_docker_config(r#"{"auths": []}"#).is_err());
        let err = parse_docker_config(r#"{"auths": {"h": {"auth": "%%%secret%%%"}}}"#).unwrap_err();
        assert!(err.contains("auths.h.auth"), "{err}");
        assert!(!err.contains("secret"), "{err}");
        let no_colon = STANDARD.encode("justapassword");
        let err = parse_docker_config(&format!(
            r#"{{"auths": {{"h": {{"auth": "{no_colon}"}}}}}}"#
        ))
        .unwrap_err();
        assert!(!err.contains("justapassword"), "{err}");
    }

    #[test]
    fn auth_from_docker_config_reads_a_file_and_reports_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            format!(
                r#"{{"auths":{{"ghcr.io":{{"auth":"{}"}}}}}}"#,
                STANDARD.encode("me:tok")
            ),
        )
        .unwrap();
        let map = RegistryClient::auth_from_docker_config(&path).unwrap();
        assert_eq!(map["ghcr.io"], ("me".into(), "tok".into()));
        let missing = RegistryClient::auth_from_docker_config(&dir.path().join("nope.json"));
        assert!(matches!(missing, Err(RegistryError::Config(_))));
    }

    #[test]
    fn auth_keys_are_normalised() {
        assert_eq!(auth_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(auth_key("registry-1.docker.io"), "docker.io");
        assert_eq!(auth_key("docker.io"), "docker.io");
        assert_eq!(auth_key("http://LOCALHOST:5000/"), "localhost:5000");
        assert_eq!(auth_key(" ghcr.io "), "ghcr.io");
    }

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

    #[test]
    fn endpoints_and_schemes() {
        let mut client = RegistryClient::new(HashMap::new(), Duration::from_secs(1)).unwrap();
        let ep = |c: &RegistryClient, d: &str| {
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
        let client = RegistryClient::new(HashMap::new(), Duration::from_secs(1)).unwrap();
        let err = client
            .resolve_digest("127.0.0.1:1", "a/../b", "1.0")
            .await
            .unwrap_err();
        assert!(matches!(err, RegistryError::Config(_)), "{err}");
        assert!(err.to_string().contains("127.0.0.1:1/a/../b:1.0"), "{err}");
    }

    #[test]
    fn token_answers_and_lifetimes() {
        let now = Instant::now();
        let t = parse_token(br#"{"token":"abc","expires_in":300}"#, now).unwrap();
        assert_eq!(t.token, "abc");
        assert_eq!(t.valid_until - now, Duration::from_secs(270));
        let t = parse_token(br#"{"access_token":"xyz"}"#, now).unwrap();
        assert_eq!(t.token, "xyz");
        assert_eq!(t.valid_until - now, Duration::from_secs(54));
        let t = parse_token(br#"{"token":"","access_token":"xyz","expires_in":0}"#, now).unwrap();
        assert_eq!(t.token, "xyz");
        assert!(parse_token(br#"{"expires_in":60}"#, now).is_err());
        assert!(parse_token(b"<html>", now).is_err());
        assert_eq!(token_lifetime(3600), Duration::from_secs(3570));
        assert_eq!(token_lifetime(5), Duration::from_secs(4));
        assert_eq!(token_lifetime(1), Duration::ZERO);
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            percent_encode("repository:team/app:pull"),
            "repository%3Ateam%2Fapp%3Apull"
        );
        assert_eq!(percent_encode("a b&c=d~-._"), "a%20b%26c%3Dd~-._");
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
            RegistryError::NotFound { .. }
        ));
        assert!(matches!(
            classify(&answer(404, ""), &target, "HEAD"),
            RegistryError::NotFound { .. }
        ));
        assert!(matches!(
            classify(&answer(403, ""), &target, "HEAD"),
            RegistryError::Unauthorized { .. }
        ));
        assert!(matches!(
            classify(&answer(429, ""), &target, "HEAD"),
            RegistryError::Unreachable { .. }
        ));
        assert!(matches!(
            classify(&answer(503, ""), &target, "HEAD"),
            RegistryError::Unreachable { .. }
        ));
        let err = classify(
            &answer(400, r#"{"errors":[{"code":"MANIFEST_INVALID"}]}"#),
            &target,
            "GET",
        );
        assert!(matches!(err, RegistryError::Protocol { .. }));
        assert!(err.to_string().contains("MANIFEST_INVALID"), "{err}");
    }

    #[test]
    fn debug_never_shows_a_password() {
        let auth = HashMap::from([(
            "ghcr.io".to_string(),
            ("me".to_string(), "top-secret-pw".to_string()),
        )]);
        let client = RegistryClient::new(auth, Duration::from_secs(1)).unwrap();
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
            RegistryClient::new(HashMap::new(), Duration::ZERO),
            Err(RegistryError::Config(_))
        ));
    }
}
