//! The only module that talks to GitHub. One [`App`] per process (the app's JWT, installation
//! tokens cached per repository) and one [`RepoClient`] per job, whose methods are named for
//! what the app means to do. octocrab does the HTTP and the app JWT (it carries jsonwebtoken
//! with one crypto backend); the request and response shapes octocrab has no types for (review
//! comments with `line`/`side`/`start_line`, check-run `actions`) are our own serde types.

pub mod events;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method, StatusCode};
use octocrab::Octocrab;
use octocrab::service::middleware::retry::RetryConfig;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use kubeharden_core::review::{Annotation, InlineComment};

/// A secret that never shows in logs or error messages.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    #[error("GitHub answered {status} to {method} {path}: {message}")]
    Status {
        status: u16,
        method: Method,
        path: String,
        message: String,
    },
    #[error("cannot reach GitHub for {method} {path}: {message}")]
    Transport {
        method: Method,
        path: String,
        message: String,
    },
    #[error("unexpected answer from GitHub to {method} {path}: {message}")]
    Decode {
        method: Method,
        path: String,
        message: String,
    },
    #[error("{0}")]
    Config(String),
}

impl GitHubError {
    pub fn status(&self) -> Option<u16> {
        match self {
            GitHubError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
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

/// What a job may do; its installation tokens are narrowed to that and to one repository, so a
/// review job's token cannot push even though the app may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    Review,
    /// `/kubeharden` commands and the Apply fixes button: commits, replies and reactions.
    Commands,
}

impl Access {
    pub fn permissions(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Access::Review => REVIEW_PERMISSIONS,
            Access::Commands => COMMAND_PERMISSIONS,
        }
    }
}

/// Permissions a review job needs.
pub const REVIEW_PERMISSIONS: &[(&str, &str)] = &[
    ("contents", "read"),
    ("pull_requests", "write"),
    ("checks", "write"),
    ("metadata", "read"),
];

/// Permissions a command job needs: it commits (contents), replies and reacts (issues), and a
/// recheck reviews (pull requests, checks).
pub const COMMAND_PERMISSIONS: &[(&str, &str)] = &[
    ("contents", "write"),
    ("pull_requests", "write"),
    ("checks", "write"),
    ("issues", "write"),
    ("metadata", "read"),
];

struct CachedToken {
    token: Secret,
    expires_at: chrono::DateTime<chrono::Utc>,
}

/// The app as a whole: its JWT client and the installation tokens it has minted.
pub struct App {
    app: Octocrab,
    app_id: u64,
    api_url: String,
    retry: RetryPolicy,
    tokens: Mutex<HashMap<(u64, String, Access), CachedToken>>,
}

impl App {
    /// Build the app client. The key must be an RSA private key in PEM form; the error never
    /// repeats it.
    pub fn new(
        app_id: u64,
        private_key_pem: &Secret,
        api_url: &str,
        retry: RetryPolicy,
    ) -> Result<Arc<App>, GitHubError> {
        let key = octocrab::jsonwebtoken::EncodingKey::from_rsa_pem(private_key_pem.expose().as_bytes())
            .map_err(|_| GitHubError::Config("the private key is not an RSA private key in PEM form (as GitHub's app settings download it)".into()))?;
        let app = Octocrab::builder()
            .base_uri(api_url)
            .map_err(|e| GitHubError::Config(format!("GitHub API URL `{api_url}`: {e}")))?
            .add_retry_config(RetryConfig::None)
            .app(octocrab::models::AppId(app_id), key)
            .build()
            .map_err(|e| GitHubError::Config(format!("cannot build the GitHub client: {e}")))?;
        Ok(Arc::new(App {
            app,
            app_id,
            api_url: api_url.trim_end_matches('/').to_string(),
            retry,
            tokens: Mutex::new(HashMap::new()),
        }))
    }

    /// A client for one repository of one installation, with the review permissions.
    pub async fn repo(
        self: &Arc<Self>,
        installation: u64,
        owner: &str,
        repo: &str,
    ) -> Result<RepoClient, GitHubError> {
        self.repo_as(installation, owner, repo, Access::Review)
            .await
    }

    /// A client for one repository of one installation, with the permissions of `access`.
    pub async fn repo_as(
        self: &Arc<Self>,
        installation: u64,
        owner: &str,
        repo: &str,
        access: Access,
    ) -> Result<RepoClient, GitHubError> {
        let token = self.token(installation, repo, access, false).await?;
        RepoClient::new(self.clone(), installation, owner, repo, access, token)
    }

    /// The app's id, which marks the check runs and webhooks that are its own.
    pub fn id(&self) -> u64 {
        self.app_id
    }

    /// Ask GitHub to redeliver the app's recent webhook deliveries that never succeeded (GitHub
    /// does not retry by itself). Attempts are grouped by delivery GUID, as GitHub's own guide
    /// does: a GUID with a successful attempt is fine; otherwise its newest attempt is
    /// redelivered. Looks at the newest page of deliveries younger than `window`. Returns how
    /// many were asked for.
    pub async fn redeliver_failed(&self, window: chrono::Duration) -> Result<usize, GitHubError> {
        #[derive(Deserialize)]
        struct Delivery {
            id: u64,
            guid: String,
            delivered_at: chrono::DateTime<chrono::Utc>,
            status_code: u16,
        }
        let deliveries: Vec<Delivery> = send(
            &self.app,
            &self.retry,
            Method::GET,
            "/app/hook/deliveries?per_page=100",
            None,
        )
        .await?;
        let since = chrono::Utc::now() - window;
        let mut by_guid: HashMap<&str, Vec<&Delivery>> = HashMap::new();
        for d in deliveries.iter().filter(|d| d.delivered_at >= since) {
            by_guid.entry(d.guid.as_str()).or_default().push(d);
        }
        let mut asked = 0;
        for (guid, attempts) in by_guid {
            if attempts.iter().any(|a| (200..300).contains(&a.status_code)) {
                continue;
            }
            let Some(newest) = attempts.iter().max_by_key(|a| a.delivered_at) else {
                continue;
            };
            let path = format!("/app/hook/deliveries/{}/attempts", newest.id);
            let _: Value = send(&self.app, &self.retry, Method::POST, &path, None).await?;
            tracing::info!(
                guid,
                delivery = newest.id,
                "asked GitHub to redeliver a failed delivery"
            );
            asked += 1;
        }
        Ok(asked)
    }

    /// An installation token narrowed to one repository and the permissions of `access`,
    /// cached until five minutes before it expires.
    async fn token(
        &self,
        installation: u64,
        repo: &str,
        access: Access,
        refresh: bool,
    ) -> Result<Secret, GitHubError> {
        let key = (installation, repo.to_string(), access);
        // The cache is only locked to read and to store: minting (with its retries) must not
        // hold up jobs of every other repository.
        if !refresh
            && let Some(t) = self.tokens.lock().await.get(&key)
            && t.expires_at - chrono::Duration::minutes(5) > chrono::Utc::now()
        {
            return Ok(t.token.clone());
        }
        let permissions: serde_json::Map<String, Value> = access
            .permissions()
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let body = json!({ "repositories": [repo], "permissions": permissions });
        let path = format!("/app/installations/{installation}/access_tokens");
        #[derive(Deserialize)]
        struct Minted {
            token: String,
            expires_at: chrono::DateTime<chrono::Utc>,
        }
        let minted: Minted = send(&self.app, &self.retry, Method::POST, &path, Some(&body)).await?;
        let token = Secret::new(minted.token);
        self.tokens.lock().await.insert(
            key,
            CachedToken {
                token: token.clone(),
                expires_at: minted.expires_at,
            },
        );
        Ok(token)
    }
}

/// One request with retries: 5xx and transport errors back off exponentially with jitter;
/// 403 and 429 secondary rate limits wait for `retry-after` or the rate-limit reset.
async fn send<T: DeserializeOwned>(
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
        // created even though the answer was a 5xx or never came: it is not sent again here.
        // The job runs again instead, and looks for what it posted before posting.
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

/// A changed file of a pull request, as `GET /pulls/{n}/files` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct ChangedFile {
    pub filename: String,
    pub status: String,
    pub sha: String,
    #[serde(default)]
    pub patch: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct Sha {
    sha: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GitCommit {
    pub sha: String,
    pub message: String,
    pub tree: GitObject,
    #[serde(default)]
    pub html_url: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GitObject {
    pub sha: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CreatedCommit {
    pub sha: String,
    #[serde(default)]
    pub html_url: String,
}

/// An entry of a tree: `mode` 100644 (file), 100755 (executable), 120000 (symlink), 040000
/// (tree), 160000 (submodule).
#[derive(Debug, Clone, Deserialize)]
pub struct TreeEntry {
    pub path: String,
    pub mode: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub sha: String,
}

/// A review comment of ours already on the pull request.
#[derive(Debug, Clone)]
pub struct ReviewThread {
    pub id: String,
    pub resolved: bool,
    pub fingerprint: String,
}

#[derive(Serialize)]
struct ReviewCommentBody<'a> {
    path: &'a str,
    line: usize,
    side: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_side: Option<&'static str>,
    body: &'a str,
}

/// Check-run output. GitHub caps summary and text at 65 535 characters and annotations at 50
/// per request.
#[derive(Debug, Clone, Serialize)]
pub struct CheckOutput {
    pub title: String,
    pub summary: String,
    pub text: String,
}

/// A button on the check run (at most three; label ≤ 20, description ≤ 40, identifier ≤ 20).
#[derive(Debug, Clone, Serialize)]
pub struct CheckAction {
    pub label: String,
    pub description: String,
    pub identifier: String,
}

pub struct RepoClient {
    app: Arc<App>,
    installation: u64,
    access: Access,
    pub owner: String,
    pub repo: String,
    crab: Mutex<(Octocrab, Octocrab)>,
}

fn graphql_base(api_url: &str) -> String {
    // GitHub Enterprise Server serves REST at /api/v3 and GraphQL at /api/graphql.
    match api_url.strip_suffix("/api/v3") {
        Some(host) => format!("{host}/api"),
        None => api_url.to_string(),
    }
}

fn token_clients(api_url: &str, token: &Secret) -> Result<(Octocrab, Octocrab), GitHubError> {
    let build = |base: &str| {
        Octocrab::builder()
            .base_uri(base)
            .map_err(|e| GitHubError::Config(format!("GitHub API URL `{base}`: {e}")))?
            .add_retry_config(RetryConfig::None)
            .personal_token(token.expose().to_string())
            .build()
            .map_err(|e| GitHubError::Config(format!("cannot build the GitHub client: {e}")))
    };
    Ok((build(api_url)?, build(&graphql_base(api_url))?))
}

impl RepoClient {
    fn new(
        app: Arc<App>,
        installation: u64,
        owner: &str,
        repo: &str,
        access: Access,
        token: Secret,
    ) -> Result<Self, GitHubError> {
        let clients = token_clients(&app.api_url, &token)?;
        Ok(Self {
            app,
            installation,
            access,
            owner: owner.to_string(),
            repo: repo.to_string(),
            crab: Mutex::new(clients),
        })
    }

    /// A request as the installation; a 401 means the token went stale: mint a new one once.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, GitHubError> {
        let crab = self.crab.lock().await.0.clone();
        match send(&crab, &self.app.retry, method.clone(), path, body).await {
            Err(e) if e.status() == Some(401) => {
                let token = self
                    .app
                    .token(self.installation, &self.repo, self.access, true)
                    .await?;
                let clients = token_clients(&self.app.api_url, &token)?;
                let crab = clients.0.clone();
                *self.crab.lock().await = clients;
                send(&crab, &self.app.retry, method, path, body).await
            }
            other => other,
        }
    }

    async fn graphql(&self, query: &str, variables: Value) -> Result<Value, GitHubError> {
        let crab = self.crab.lock().await.1.clone();
        let body = json!({ "query": query, "variables": variables });
        let response: Value = send(
            &crab,
            &self.app.retry,
            Method::POST,
            "/graphql",
            Some(&body),
        )
        .await?;
        if let Some(errors) = response.get("errors") {
            return Err(GitHubError::Decode {
                method: Method::POST,
                path: "/graphql".into(),
                message: errors.to_string(),
            });
        }
        Ok(response.get("data").cloned().unwrap_or(Value::Null))
    }

    fn repo_path(&self) -> String {
        format!("/repos/{}/{}", self.owner, self.repo)
    }

    /// The files a pull request changes, 100 a page, at most the 3000 GitHub lists.
    pub async fn changed_files(&self, pr: u64) -> Result<Vec<ChangedFile>, GitHubError> {
        let mut files = Vec::new();
        for page in 1..=30 {
            let path = format!(
                "{}/pulls/{pr}/files?per_page=100&page={page}",
                self.repo_path()
            );
            let batch: Vec<ChangedFile> = self.call(Method::GET, &path, None).await?;
            let last = batch.len() < 100;
            files.extend(batch);
            if last {
                break;
            }
        }
        Ok(files)
    }

    /// A blob's text by its sha (immutable, so safe to fetch once and in any order).
    pub async fn blob(&self, sha: &str) -> Result<Vec<u8>, GitHubError> {
        #[derive(Deserialize)]
        struct Blob {
            content: String,
            encoding: String,
        }
        let path = format!("{}/git/blobs/{sha}", self.repo_path());
        let blob: Blob = self.call(Method::GET, &path, None).await?;
        decode_content(&blob.content, &blob.encoding).ok_or_else(|| GitHubError::Decode {
            method: Method::GET,
            path,
            message: format!("blob in unknown encoding `{}`", blob.encoding),
        })
    }

    /// A file's bytes at a commit, `None` when it does not exist there.
    pub async fn file_at(&self, file: &str, commit: &str) -> Result<Option<Vec<u8>>, GitHubError> {
        #[derive(Deserialize)]
        struct Content {
            content: Option<String>,
            encoding: Option<String>,
        }
        let path = format!(
            "{}/contents/{}?ref={}",
            self.repo_path(),
            encode_path(file),
            encode_path(commit)
        );
        match self.call::<Content>(Method::GET, &path, None).await {
            Ok(c) => Ok(c
                .content
                .zip(c.encoding)
                .and_then(|(content, encoding)| decode_content(&content, &encoding))),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Start the "KubeHarden" check run on a commit; the pull request number goes into
    /// `external_id` because fork pull requests come with an empty `pull_requests` list.
    pub async fn start_check_run(&self, head_sha: &str, pr: u64) -> Result<u64, GitHubError> {
        #[derive(Deserialize)]
        struct Created {
            id: u64,
        }
        let body = json!({
            "name": "KubeHarden",
            "head_sha": head_sha,
            "status": "in_progress",
            "external_id": pr.to_string(),
            "started_at": chrono::Utc::now().to_rfc3339(),
        });
        let created: Created = self
            .call(
                Method::POST,
                &format!("{}/check-runs", self.repo_path()),
                Some(&body),
            )
            .await?;
        Ok(created.id)
    }

    /// The pull request's current head sha.
    pub async fn pull_request_head(&self, pr: u64) -> Result<String, GitHubError> {
        #[derive(Deserialize)]
        struct Pull {
            head: Head,
        }
        #[derive(Deserialize)]
        struct Head {
            sha: String,
        }
        let pull: Pull = self
            .call(
                Method::GET,
                &format!("{}/pulls/{pr}", self.repo_path()),
                None,
            )
            .await?;
        Ok(pull.head.sha)
    }

    /// Our check run on a commit, if a job already started one: (id, completed).
    pub async fn find_check_run(&self, head_sha: &str) -> Result<Option<(u64, bool)>, GitHubError> {
        #[derive(Deserialize)]
        struct Runs {
            check_runs: Vec<Run>,
        }
        #[derive(Deserialize)]
        struct Run {
            id: u64,
            name: String,
            status: String,
        }
        // Only the app's own: a workflow job named KubeHarden must not pass for it.
        let path = format!(
            "{}/commits/{}/check-runs?check_name=KubeHarden&app_id={}&per_page=100",
            self.repo_path(),
            encode_path(head_sha),
            self.app.app_id
        );
        let runs: Runs = self.call(Method::GET, &path, None).await?;
        Ok(runs
            .check_runs
            .into_iter()
            .find(|r| r.name == "KubeHarden")
            .map(|r| (r.id, r.status == "completed")))
    }

    /// Whether a review of ours on this head is already posted (its body carries the marker).
    /// Only the app's own reviews count: anyone can write the marker into a comment.
    pub async fn has_review_for(&self, pr: u64, head_sha: &str) -> Result<bool, GitHubError> {
        const QUERY: &str = "query($owner: String!, $repo: String!, $number: Int!) {
  repository(owner: $owner, name: $repo) {
    pullRequest(number: $number) {
      reviews(last: 100) { nodes { body viewerDidAuthor commit { oid } } }
    }
  }
}";
        let data = self
            .graphql(
                QUERY,
                json!({ "owner": self.owner, "repo": self.repo, "number": pr }),
            )
            .await?;
        let marker = review_marker(head_sha);
        Ok(data["repository"]["pullRequest"]["reviews"]["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| {
                r["viewerDidAuthor"].as_bool() == Some(true)
                    && r["commit"]["oid"].as_str() == Some(head_sha)
                    && r["body"].as_str().is_some_and(|b| b.contains(&marker))
            }))
    }

    /// Complete a check run: its output, then the annotations 50 at a time (each PATCH appends).
    pub async fn complete_check_run(
        &self,
        id: u64,
        conclusion: &str,
        output: &CheckOutput,
        annotations: &[Annotation],
        actions: &[CheckAction],
    ) -> Result<(), GitHubError> {
        let path = format!("{}/check-runs/{id}", self.repo_path());
        let mut chunks = annotations.chunks(50);
        let first = chunks.next().unwrap_or(&[]);
        let body = json!({
            "status": "completed",
            "conclusion": conclusion,
            "completed_at": chrono::Utc::now().to_rfc3339(),
            "output": { "title": output.title, "summary": output.summary, "text": output.text, "annotations": first },
            "actions": actions,
        });
        let _: Value = self.call(Method::PATCH, &path, Some(&body)).await?;
        for chunk in chunks {
            let body = json!({ "output": { "title": output.title, "summary": output.summary, "annotations": chunk } });
            let _: Value = self.call(Method::PATCH, &path, Some(&body)).await?;
        }
        Ok(())
    }

    /// Post one review with inline comments on the commit that was linted.
    pub async fn post_review(
        &self,
        pr: u64,
        commit: &str,
        body: &str,
        comments: &[InlineComment],
    ) -> Result<(), GitHubError> {
        let comments: Vec<ReviewCommentBody<'_>> = comments
            .iter()
            .map(|c| ReviewCommentBody {
                path: &c.path,
                line: c.line,
                side: "RIGHT",
                start_line: c.start_line,
                start_side: c.start_line.map(|_| "RIGHT"),
                body: &c.body,
            })
            .collect();
        let body = format!("{body}\n\n{}", review_marker(commit));
        let payload =
            json!({ "commit_id": commit, "event": "COMMENT", "body": body, "comments": comments });
        let _: Value = self
            .call(
                Method::POST,
                &format!("{}/pulls/{pr}/reviews", self.repo_path()),
                Some(&payload),
            )
            .await?;
        Ok(())
    }

    /// Our review threads on a pull request, with the fingerprint of each first comment.
    pub async fn review_threads(&self, pr: u64) -> Result<Vec<ReviewThread>, GitHubError> {
        const QUERY: &str =
            "query($owner: String!, $repo: String!, $number: Int!, $after: String) {
  repository(owner: $owner, name: $repo) {
    pullRequest(number: $number) {
      reviewThreads(first: 100, after: $after) {
        pageInfo { hasNextPage endCursor }
        nodes { id isResolved comments(first: 1) { nodes { body viewerDidAuthor } } }
      }
    }
  }
}";
        let mut threads = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..30 {
            let data = self
                .graphql(
                    QUERY,
                    json!({ "owner": self.owner, "repo": self.repo, "number": pr, "after": after }),
                )
                .await?;
            let page = &data["repository"]["pullRequest"]["reviewThreads"];
            for node in page["nodes"].as_array().into_iter().flatten() {
                let first = &node["comments"]["nodes"][0];
                // Only threads the app started: a marker in a person's comment means nothing.
                if first["viewerDidAuthor"].as_bool() != Some(true) {
                    continue;
                }
                let body = first["body"].as_str().unwrap_or("");
                let Some(fingerprint) = kubeharden_core::review::fingerprint_of(body) else {
                    continue;
                };
                threads.push(ReviewThread {
                    id: node["id"].as_str().unwrap_or_default().to_string(),
                    resolved: node["isResolved"].as_bool().unwrap_or(false),
                    fingerprint: fingerprint.to_string(),
                });
            }
            if page["pageInfo"]["hasNextPage"].as_bool() != Some(true) {
                break;
            }
            after = page["pageInfo"]["endCursor"].as_str().map(str::to_string);
        }
        Ok(threads)
    }

    pub async fn resolve_thread(&self, thread: &str) -> Result<(), GitHubError> {
        const MUTATION: &str = "mutation($thread: ID!) { resolveReviewThread(input: {threadId: $thread}) { thread { id isResolved } } }";
        self.graphql(MUTATION, json!({ "thread": thread }))
            .await
            .map(|_| ())
    }

    /// The pull request as GitHub has it now.
    pub async fn pull_request(&self, pr: u64) -> Result<events::PullRequest, GitHubError> {
        self.call(
            Method::GET,
            &format!("{}/pulls/{pr}", self.repo_path()),
            None,
        )
        .await
    }

    /// A user's access to the repository: `admin`, `write`, `read` or `none`. GitHub's
    /// `permission` field folds maintain (and custom roles that inherit write) into write;
    /// `role_name` would name a custom role instead, so it is not used.
    pub async fn permission(&self, user: &str) -> Result<String, GitHubError> {
        #[derive(Deserialize)]
        struct Permission {
            permission: String,
        }
        let path = format!(
            "{}/collaborators/{}/permission",
            self.repo_path(),
            encode_path(user)
        );
        match self.call::<Permission>(Method::GET, &path, None).await {
            Ok(p) => Ok(p.permission),
            // Not a collaborator at all.
            Err(e) if e.status() == Some(404) => Ok("none".into()),
            Err(e) => Err(e),
        }
    }

    /// React to a pull-request conversation comment (`eyes`, `rocket`, `confused`, …).
    pub async fn react(&self, comment: u64, content: &str) -> Result<(), GitHubError> {
        let path = format!("{}/issues/comments/{comment}/reactions", self.repo_path());
        let _: Value = self
            .call(Method::POST, &path, Some(&json!({ "content": content })))
            .await?;
        Ok(())
    }

    /// Post a comment in a pull request's conversation.
    pub async fn comment(&self, pr: u64, body: &str) -> Result<(), GitHubError> {
        let path = format!("{}/issues/{pr}/comments", self.repo_path());
        let _: Value = self
            .call(Method::POST, &path, Some(&json!({ "body": body })))
            .await?;
        Ok(())
    }

    /// Whether a conversation comment posted by a bot since `since` carries `marker` (the
    /// app's reply to a request it already answered).
    pub async fn has_comment_with(
        &self,
        pr: u64,
        marker: &str,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, GitHubError> {
        #[derive(Deserialize)]
        struct Comment {
            body: Option<String>,
            user: Option<events::User>,
        }
        for page in 1..=10 {
            let path = format!(
                "{}/issues/{pr}/comments?since={}&per_page=100&page={page}",
                self.repo_path(),
                encode_path(&since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            );
            let comments: Vec<Comment> = self.call(Method::GET, &path, None).await?;
            if comments.iter().any(|c| {
                c.user.as_ref().is_some_and(events::User::is_bot)
                    && c.body.as_deref().is_some_and(|b| b.contains(marker))
            }) {
                return Ok(true);
            }
            if comments.len() < 100 {
                break;
            }
        }
        Ok(false)
    }

    /// A commit as the Git Data API has it.
    pub async fn git_commit(&self, sha: &str) -> Result<GitCommit, GitHubError> {
        let path = format!("{}/git/commits/{}", self.repo_path(), encode_path(sha));
        self.call(Method::GET, &path, None).await
    }

    /// The entries of one tree (one directory, not recursive).
    pub async fn tree(&self, sha: &str) -> Result<Vec<TreeEntry>, GitHubError> {
        #[derive(Deserialize)]
        struct Tree {
            tree: Vec<TreeEntry>,
        }
        let path = format!("{}/git/trees/{}", self.repo_path(), encode_path(sha));
        Ok(self.call::<Tree>(Method::GET, &path, None).await?.tree)
    }

    pub async fn create_blob(&self, content: &[u8]) -> Result<String, GitHubError> {
        use base64::Engine;
        let body = json!({
            "content": base64::engine::general_purpose::STANDARD.encode(content),
            "encoding": "base64",
        });
        let path = format!("{}/git/blobs", self.repo_path());
        Ok(self
            .call::<Sha>(Method::POST, &path, Some(&body))
            .await?
            .sha)
    }

    /// A tree that is `base` with the given (path, mode, blob) entries replaced.
    pub async fn create_tree(
        &self,
        base: &str,
        entries: &[(String, String, String)],
    ) -> Result<String, GitHubError> {
        let tree: Vec<Value> = entries
            .iter()
            .map(|(path, mode, sha)| json!({ "path": path, "mode": mode, "type": "blob", "sha": sha }))
            .collect();
        let body = json!({ "base_tree": base, "tree": tree });
        let path = format!("{}/git/trees", self.repo_path());
        Ok(self
            .call::<Sha>(Method::POST, &path, Some(&body))
            .await?
            .sha)
    }

    /// A commit with no author or committer: GitHub then makes the app both and signs the
    /// commit, which shows as Verified.
    pub async fn create_commit(
        &self,
        message: &str,
        tree: &str,
        parent: &str,
    ) -> Result<CreatedCommit, GitHubError> {
        let body = json!({ "message": message, "tree": tree, "parents": [parent] });
        let path = format!("{}/git/commits", self.repo_path());
        self.call(Method::POST, &path, Some(&body)).await
    }

    /// Where a branch points now (authoritative: a pull request's `head.sha` can lag a push).
    pub async fn branch_head(&self, branch: &str) -> Result<String, GitHubError> {
        #[derive(Deserialize)]
        struct Ref {
            object: GitObject,
        }
        let path = format!("{}/git/ref/heads/{}", self.repo_path(), encode_path(branch));
        Ok(self.call::<Ref>(Method::GET, &path, None).await?.object.sha)
    }

    /// Move a branch to `sha`, fast-forward only. GitHub answers 422 when it is not one (the
    /// branch moved since its head was read).
    pub async fn fast_forward(&self, branch: &str, sha: &str) -> Result<(), GitHubError> {
        let path = format!(
            "{}/git/refs/heads/{}",
            self.repo_path(),
            encode_path(branch)
        );
        let _: Value = self
            .call(
                Method::PATCH,
                &path,
                Some(&json!({ "sha": sha, "force": false })),
            )
            .await?;
        Ok(())
    }
}

/// What GitHub returns for a manifest code: the new app's id and secrets.
#[derive(Deserialize)]
pub struct ConvertedApp {
    pub id: u64,
    #[serde(default)]
    pub slug: String,
    #[serde(default)]
    pub html_url: String,
    #[serde(default)]
    pub client_id: String,
    #[serde(default, deserialize_with = "secret")]
    pub client_secret: Secret,
    #[serde(deserialize_with = "secret")]
    pub webhook_secret: Secret,
    #[serde(deserialize_with = "secret")]
    pub pem: Secret,
}

fn secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    Option::<String>::deserialize(d).map(|s| Secret::new(s.unwrap_or_default()))
}

impl Default for Secret {
    fn default() -> Self {
        Secret::new(String::new())
    }
}

/// Exchange the code of GitHub's app manifest flow for the app it registered
/// (`POST /app-manifests/{code}/conversions`, which takes no authentication; a code is good
/// once, for an hour).
pub async fn convert_manifest(api_url: &str, code: &str) -> Result<ConvertedApp, GitHubError> {
    let crab = Octocrab::builder()
        .base_uri(api_url)
        .map_err(|e| GitHubError::Config(format!("GitHub API URL `{api_url}`: {e}")))?
        .add_retry_config(RetryConfig::None)
        .build()
        .map_err(|e| GitHubError::Config(format!("cannot build the GitHub client: {e}")))?;
    // Not retried: a code that reached GitHub once is spent.
    let policy = RetryPolicy {
        attempts: 1,
        ..RetryPolicy::default()
    };
    let path = format!("/app-manifests/{}/conversions", encode_path(code));
    send(&crab, &policy, Method::POST, &path, Some(&json!({}))).await
}

/// Percent-encode a path for a URL, keeping its slashes (file names may hold spaces, `#`, `?`).
pub fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The hidden marker a review body carries so that a job re-run after a crash finds it.
pub fn review_marker(head_sha: &str) -> String {
    format!("<!-- kubeharden:review head={head_sha} -->")
}

fn decode_content(content: &str, encoding: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    match encoding {
        "base64" => {
            let compact: String = content.chars().filter(|c| !c.is_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact)
                .ok()
        }
        "utf-8" | "utf8" => Some(content.as_bytes().to_vec()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", Secret::new("ghs_abc")), "Secret(…)");
    }

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
