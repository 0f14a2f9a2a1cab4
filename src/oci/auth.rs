//! Answering a registry's `401`: the `WWW-Authenticate` challenge, the token request to the
//! realm it names (or HTTP Basic), and the cache of bearer tokens per host and scope.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::header::{HeaderValue, WWW_AUTHENTICATE};
use http::{HeaderMap, Method, StatusCode, Uri};

use super::{OciClient, OciError, Target, auth_key, classify};

/// Token server answers (a JWT is a few KiB).
const MAX_TOKEN_BYTES: usize = 1 << 20;
/// The token spec's default lifetime when `expires_in` is missing.
const DEFAULT_TOKEN_SECONDS: u64 = 60;

/// Credentials for one registry host; `Debug` shows the user only.
#[derive(Clone)]
pub(super) struct Credentials {
    pub(super) user: String,
    pub(super) password: String,
}

impl Credentials {
    pub(super) fn basic(&self) -> HeaderValue {
        let encoded = STANDARD.encode(format!("{}:{}", self.user, self.password));
        sensitive(&format!("Basic {encoded}")).unwrap_or_else(|| HeaderValue::from_static(""))
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, …)", self.user)
    }
}

pub(super) struct CachedToken {
    token: String,
    valid_until: Instant,
}

impl OciClient {
    /// The `Authorization` value that answers a `401`'s challenge: a fresh bearer token (now
    /// cached) or Basic credentials.
    pub(super) async fn answer_challenge(
        &self,
        headers: &HeaderMap,
        cache_key: &(String, String),
        credentials: Option<&Credentials>,
        target: &Target,
    ) -> Result<HeaderValue, OciError> {
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
    ) -> Result<CachedToken, OciError> {
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

    pub(super) fn cached_token(&self, key: &(String, String)) -> Option<String> {
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

    pub(super) fn remember_token(&self, key: (String, String), token: CachedToken) {
        let now = Instant::now();
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.retain(|_, t| t.valid_until > now);
        if token.valid_until > now {
            tokens.insert(key, token);
        }
    }

    pub(super) fn forget_token(&self, key: &(String, String)) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.remove(key);
    }
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

pub(super) fn bearer(token: &str) -> Option<HeaderValue> {
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
}
