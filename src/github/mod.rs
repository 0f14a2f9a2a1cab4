//! The only module that talks to GitHub. One [`App`] per process (the app's JWT, installation
//! tokens cached per repository) and one [`RepoClient`] per job, whose methods are named for
//! what the app means to do. octocrab does the HTTP and the app JWT (it carries jsonwebtoken
//! with one crypto backend); the request and response shapes octocrab has no types for (review
//! comments with `line`/`side`/`start_line`, check-run `actions`) are our own serde types.
//!
//! By concern: `transport` (the clients, requests, retries and rate limits), `auth` (the app's
//! JWT, installation tokens, the per-repository client), `create` (a creating request sent
//! again within the job only when what it creates is not there), `pulls` (a pull request, its
//! files and contents), `checks`, `reviews`, `comments` (the conversation: replies, reactions,
//! who may give commands), `git` (the Git Data API a fix commit is made with), `deliveries`
//! (asking GitHub to redeliver failed webhooks) and `manifest` (the setup flow's manifest
//! conversion).

mod auth;
mod checks;
mod comments;
mod create;
mod deliveries;
pub mod events;
mod git;
mod manifest;
mod pulls;
mod reviews;
mod transport;

use http::Method;

pub use auth::{Access, App, COMMAND_PERMISSIONS, REVIEW_PERMISSIONS, RepoClient};
pub use checks::{CheckAction, CheckConclusion, CheckOutput};
pub use git::{CreatedCommit, GitCommit, GitObject, ListedEntry, RecursiveTree, TreeEntry};
pub use manifest::{ConvertedApp, convert_manifest};
pub use pulls::{ChangedFile, FileAt};
pub use reviews::{ReviewThread, review_marker};
pub use transport::RetryPolicy;

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

impl Default for Secret {
    fn default() -> Self {
        Secret::new(String::new())
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

    /// Whether no retry can change the answer: 404 (a deleted repository), 422 (a request a
    /// retry cannot change) and refusals of permission are final; outages, 5xx, rate limits
    /// and answers that did not decode may go away by themselves.
    pub fn is_permanent(&self) -> bool {
        match self {
            GitHubError::Status {
                status, message, ..
            } => {
                matches!(status, 400 | 401 | 404 | 410 | 422)
                    || (*status == 403 && !message.contains("rate limit"))
            }
            GitHubError::Config(_) => true,
            GitHubError::Transport { .. } | GitHubError::Decode { .. } => false,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", Secret::new("ghs_abc")), "Secret(…)");
    }
}
