//! The app's identity: its JWT client, the installation tokens it mints (narrowed to one
//! repository and to what a job may do), and the per-repository client that uses them and
//! mints a new one when GitHub calls the old one stale.

use std::collections::HashMap;
use std::sync::Arc;

use http::Method;
use octocrab::Octocrab;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::transport::{ClientAuth, RetryPolicy, TokenClients, client, send, token_clients};
use super::{GitHubError, Secret};

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
    pub(super) app: Octocrab,
    pub(super) app_id: u64,
    api_url: String,
    pub(super) retry: RetryPolicy,
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
        let app = client(
            api_url,
            ClientAuth::App(octocrab::auth::AppAuth {
                app_id: octocrab::models::AppId(app_id),
                key,
            }),
        )?;
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

pub struct RepoClient {
    pub(super) app: Arc<App>,
    installation: u64,
    access: Access,
    pub owner: String,
    pub repo: String,
    clients: Mutex<TokenClients>,
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
            clients: Mutex::new(clients),
        })
    }

    /// A request as the installation; a 401 means the token went stale: mint a new one once.
    pub(super) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, GitHubError> {
        let crab = self.clients.lock().await.rest.clone();
        match send(&crab, &self.app.retry, method.clone(), path, body).await {
            Err(e) if e.status() == Some(401) => {
                let token = self
                    .app
                    .token(self.installation, &self.repo, self.access, true)
                    .await?;
                let clients = token_clients(&self.app.api_url, &token)?;
                let crab = clients.rest.clone();
                *self.clients.lock().await = clients;
                send(&crab, &self.app.retry, method, path, body).await
            }
            other => other,
        }
    }

    pub(super) async fn graphql(
        &self,
        query: &str,
        variables: Value,
    ) -> Result<Value, GitHubError> {
        let crab = self.clients.lock().await.graphql.clone();
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

    pub(super) fn repo_path(&self) -> String {
        format!("/repos/{}/{}", self.owner, self.repo)
    }
}
