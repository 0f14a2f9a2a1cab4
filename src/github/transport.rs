//! Requests to GitHub: building the octocrab clients, one request with its retries (5xx and
//! transport errors back off; rate limits are waited out), and where GraphQL lives.

use std::sync::Arc;
use std::time::Duration;

use http::header::{ACCEPT, HeaderValue, USER_AGENT};
use http::{HeaderMap, Method, StatusCode, Uri};
use octocrab::service::middleware::auth_header::AuthHeaderLayer;
use octocrab::service::middleware::base_uri::BaseUriLayer;
use octocrab::service::middleware::extra_headers::ExtraHeadersLayer;
use octocrab::{AuthState, OctoBody, Octocrab, OctocrabBuilder};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{GitHubError, Secret};

/// What every request to GitHub says about itself, as GitHub asks: who is calling (a
/// `User-Agent` naming the app and its version) and which media type it wants.
pub const USER_AGENT_VALUE: &str = concat!("kubeharden/", env!("CARGO_PKG_VERSION"));
pub const ACCEPT_VALUE: &str = "application/vnd.github+json";

/// How a client authenticates: as the app (a JWT octocrab signs per request), with an
/// installation token, or not at all (the manifest conversion).
pub(super) enum ClientAuth<'a> {
    App(octocrab::auth::AppAuth),
    Token(&'a Secret),
    None,
}

/// The one place GitHub clients are built. octocrab's default builder always sends
/// `User-Agent: octocrab` and appends extra headers beside it (two user agents), so the stack
/// is put together here from octocrab's own layers: the connection (rustls, native roots,
/// http or https like octocrab's), redirects followed, our headers, the base URL, and the
/// token only to that host.
pub(super) fn client(base: &str, auth: ClientAuth<'_>) -> Result<Octocrab, GitHubError> {
    let config = |what: String| GitHubError::Config(what);
    let base_uri: Uri = base
        .parse()
        .map_err(|e| config(format!("GitHub API URL `{base}`: {e}")))?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| config(format!("cannot load the TLS root certificates: {e}")))?
        .https_or_http()
        .enable_http1()
        .build();
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, OctoBody>(connector);
    let headers = vec![
        (USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE)),
        (ACCEPT, HeaderValue::from_static(ACCEPT_VALUE)),
    ];
    let (token, state) = match auth {
        ClientAuth::App(app) => (None, AuthState::App(app)),
        ClientAuth::Token(token) => {
            let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                .map_err(|_| config("the installation token is not a valid header value".into()))?;
            value.set_sensitive(true);
            (Some(value), AuthState::None)
        }
        ClientAuth::None => (None, AuthState::None),
    };
    let crab = OctocrabBuilder::new_empty()
        .with_service(http)
        .with_layer(&tower_http::follow_redirect::FollowRedirectLayer::new())
        .with_layer(&ExtraHeadersLayer::new(Arc::new(headers)))
        .with_layer(&BaseUriLayer::new(base_uri.clone()))
        .with_layer(&AuthHeaderLayer::new(token, base_uri.clone(), base_uri))
        .with_auth(state)
        .build()
        .map_err(|e| config(format!("cannot build the GitHub client: {e}")))?;
    Ok(crab)
}

/// How hard requests try before giving up.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base_delay: Duration,
    /// The longest a `retry-after` or rate-limit reset is waited for.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 4,
            base_delay: Duration::from_millis(250),
            max_wait: Duration::from_secs(60),
        }
    }
}

/// One request with retries: 5xx and transport errors back off exponentially with jitter;
/// 403 and 429 secondary rate limits wait for `retry-after` or the rate-limit reset.
pub(super) async fn send<T: DeserializeOwned>(
    crab: &Octocrab,
    retry: &RetryPolicy,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<T, GitHubError> {
    let text = send_raw(crab, retry, method.clone(), path, body).await?;
    let text = if text.trim().is_empty() {
        "null".to_string()
    } else {
        text
    };
    serde_json::from_str(&text).map_err(|e| GitHubError::Decode {
        method,
        path: path.to_string(),
        message: e.to_string(),
    })
}

async fn send_raw(
    crab: &Octocrab,
    retry: &RetryPolicy,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<String, GitHubError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let response = match method {
            Method::GET => crab._get(path).await,
            Method::POST => crab._post(path, body).await,
            Method::PATCH => crab._patch(path, body).await,
            Method::PUT => crab._put(path, body).await,
            _ => crab._delete(path, body).await,
        };
        // A POST that creates something (a review, a comment, a check run) may have been
        // created even though the answer was a 5xx or never came: it is not sent again here,
        // where nobody can look for it first. `create::create_once` does that.
        let repeatable = method != Method::POST || !creates(path);
        let response = match response {
            Ok(r) => r,
            Err(e) if attempt < retry.attempts && repeatable => {
                tracing::warn!(%method, path, attempt, "GitHub unreachable, retrying: {e}");
                tokio::time::sleep(backoff(retry, attempt)).await;
                continue;
            }
            Err(e) => {
                return Err(GitHubError::Transport {
                    method,
                    path: path.to_string(),
                    message: e.to_string(),
                });
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        let remaining = headers
            .get("x-ratelimit-remaining")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        crate::metrics::github_request(status.as_u16(), remaining);
        let text = crab
            .body_to_string(response)
            .await
            .map_err(|e| GitHubError::Transport {
                method: method.clone(),
                path: path.to_string(),
                message: e.to_string(),
            })?;
        if status.is_success() {
            return Ok(text);
        }
        let wait = if status.is_server_error() && repeatable {
            Some(backoff(retry, attempt))
        } else if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::FORBIDDEN {
            rate_limit_wait(&headers, &text)
        } else {
            None
        };
        match wait {
            Some(wait) if attempt < retry.attempts && wait <= retry.max_wait => {
                tracing::warn!(%method, path, %status, attempt, wait_ms = wait.as_millis() as u64, "retrying GitHub request");
                tokio::time::sleep(wait).await;
            }
            _ => {
                let message = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
                    .unwrap_or_else(|| text.chars().take(200).collect());
                return Err(GitHubError::Status {
                    status: status.as_u16(),
                    method,
                    path: path.to_string(),
                    message,
                });
            }
        }
    }
}

/// Whether a POST to `path` creates a new object each time it is sent (rate-limit refusals
/// create nothing, so those are still waited out and sent again).
fn creates(path: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    path.ends_with("/reviews") || path.ends_with("/comments") || path.ends_with("/check-runs")
}

fn backoff(retry: &RetryPolicy, attempt: u32) -> Duration {
    let base = retry.base_delay * 2u32.saturating_pow(attempt.saturating_sub(1));
    // Jitter from the clock's nanoseconds: enough to spread replicas apart.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    base + Duration::from_millis(u64::from(nanos % 100))
}

/// How long GitHub asks us to wait: `retry-after` seconds, or until `x-ratelimit-reset` when
/// the limit is spent. `None` for a 403 that is not about rate limits.
fn rate_limit_wait(headers: &HeaderMap, body: &str) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(seconds) = header("retry-after").and_then(|v| v.parse::<u64>().ok()) {
        return Some(Duration::from_secs(seconds));
    }
    if header("x-ratelimit-remaining") == Some("0")
        && let Some(reset) = header("x-ratelimit-reset").and_then(|v| v.parse::<i64>().ok())
    {
        let now = chrono::Utc::now().timestamp();
        return Some(Duration::from_secs(reset.saturating_sub(now).max(1) as u64));
    }
    // A secondary limit without headers: GitHub says to wait at least a minute.
    body.contains("secondary rate limit")
        .then(|| Duration::from_secs(60))
}

fn graphql_base(api_url: &str) -> String {
    // GitHub Enterprise Server serves REST at /api/v3 and GraphQL at /api/graphql.
    match api_url.strip_suffix("/api/v3") {
        Some(host) => format!("{host}/api"),
        None => api_url.to_string(),
    }
}

/// The clients one installation token speaks through: REST at the API URL, GraphQL where it
/// lives (beside it on github.com, at `/api/graphql` on GitHub Enterprise Server).
#[derive(Clone)]
pub(super) struct TokenClients {
    pub(super) rest: Octocrab,
    pub(super) graphql: Octocrab,
}

pub(super) fn token_clients(api_url: &str, token: &Secret) -> Result<TokenClients, GitHubError> {
    Ok(TokenClients {
        rest: client(api_url, ClientAuth::Token(token))?,
        graphql: client(&graphql_base(api_url), ClientAuth::Token(token))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graphql_lives_beside_the_rest_api() {
        assert_eq!(
            graphql_base("https://ghe.example.com/api/v3"),
            "https://ghe.example.com/api"
        );
        assert_eq!(
            graphql_base("https://api.github.com"),
            "https://api.github.com"
        );
    }

    #[test]
    fn rate_limit_headers() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(rate_limit_wait(&h, ""), Some(Duration::from_secs(3)));
        assert_eq!(
            rate_limit_wait(&HeaderMap::new(), "Resource not accessible by integration"),
            None
        );
    }
}
