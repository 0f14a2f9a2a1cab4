//! The webhook events the app acts on, as its own types. Anything else GitHub sends, including
//! actions added after this was written, parses to a catch-all and is ignored.

use serde::Deserialize;

#[derive(Debug, Clone)]
pub enum Event {
    PullRequest(Box<PullRequestEvent>),
    Ping,
    /// An event or action the app does not handle.
    Other {
        event: String,
    },
}

impl Event {
    /// Parse a delivery by its `X-GitHub-Event` name. A body that is not JSON is an error; a
    /// body of an unexpected shape for a known event is an error too (GitHub's payloads are
    /// stable, so that is a forged or broken delivery).
    pub fn parse(event: &str, body: &[u8]) -> Result<Event, serde_json::Error> {
        // Reject anything that is not JSON at all before looking at the event name.
        let value: serde_json::Value = serde_json::from_slice(body)?;
        Ok(match event {
            "pull_request" => Event::PullRequest(Box::new(serde_json::from_value(value)?)),
            "ping" => Event::Ping,
            other => Event::Other {
                event: other.to_string(),
            },
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PullRequestAction {
    Opened,
    Reopened,
    ReadyForReview,
    Synchronize,
    Edited,
    Closed,
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PullRequestEvent {
    pub action: PullRequestAction,
    pub number: u64,
    pub pull_request: PullRequest,
    pub repository: Repository,
    pub installation: Option<Installation>,
    /// For `edited`: what changed; only a new base matters to us.
    #[serde(default)]
    pub changes: Option<serde_json::Value>,
}

impl PullRequestEvent {
    /// Whether this delivery asks for a review: new code or a new base.
    pub fn wants_review(&self, review_drafts: bool) -> bool {
        let relevant = match self.action {
            PullRequestAction::Opened
            | PullRequestAction::Reopened
            | PullRequestAction::ReadyForReview
            | PullRequestAction::Synchronize => true,
            PullRequestAction::Edited => self
                .changes
                .as_ref()
                .is_some_and(|c| c.get("base").is_some()),
            PullRequestAction::Closed | PullRequestAction::Other => false,
        };
        relevant && (review_drafts || !self.pull_request.draft)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct PullRequest {
    pub number: u64,
    #[serde(default)]
    pub draft: bool,
    pub head: GitRef,
    pub base: GitRef,
}

impl PullRequest {
    /// A pull request from a fork: its head lives in another repository (or one since deleted).
    pub fn is_fork(&self) -> bool {
        match (&self.head.repo, &self.base.repo) {
            (Some(head), Some(base)) => head.id != base.id,
            _ => true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct GitRef {
    pub sha: String,
    #[serde(rename = "ref")]
    pub branch: String,
    pub repo: Option<Repository>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Repository {
    pub id: u64,
    pub name: String,
    pub owner: Owner,
}

impl Repository {
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner.login, self.name)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Owner {
    pub login: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Installation {
    pub id: u64,
}
