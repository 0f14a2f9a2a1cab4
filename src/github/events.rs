//! The webhook events the app acts on, as its own types. Anything else GitHub sends, including
//! actions added after this was written, parses to a catch-all and is ignored.

use serde::Deserialize;

#[derive(Debug, Clone)]
pub enum Event {
    PullRequest(Box<PullRequestEvent>),
    CheckRun(Box<CheckRunEvent>),
    IssueComment(Box<IssueCommentEvent>),
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
            "check_run" => Event::CheckRun(Box::new(serde_json::from_value(value)?)),
            "issue_comment" => Event::IssueComment(Box::new(serde_json::from_value(value)?)),
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
    /// `open` or `closed`.
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub draft: bool,
    #[serde(default)]
    pub user: Option<User>,
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
    /// `null` when the fork the pull request came from was deleted.
    pub repo: Option<RefRepository>,
}

/// The repository a pull request's head or base lives in. GitHub's description lets its
/// `owner` be `null` (a deleted fork's), so only the id is relied on.
#[derive(Debug, Clone, Deserialize)]
pub struct RefRepository {
    pub id: u64,
    #[serde(default)]
    pub owner: Option<Owner>,
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

#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub login: String,
    /// `User`, `Bot` or `Organization`.
    #[serde(rename = "type", default)]
    pub kind: String,
}

impl User {
    /// Bots, the app itself among them, never give commands: two bots must not talk to each
    /// other forever.
    pub fn is_bot(&self) -> bool {
        self.kind == "Bot" || self.login.ends_with("[bot]")
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct CheckRunEvent {
    /// `requested_action` (a button), `rerequested` ("Re-run"), `created`, `completed`; GitHub's
    /// description does not require it.
    #[serde(default)]
    pub action: Option<String>,
    pub check_run: CheckRun,
    #[serde(default)]
    pub requested_action: Option<RequestedAction>,
    pub repository: Repository,
    pub installation: Option<Installation>,
    pub sender: User,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CheckRun {
    pub id: u64,
    pub head_sha: String,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub app: Option<AppRef>,
    #[serde(default)]
    pub pull_requests: Vec<PullRequestRef>,
}

impl CheckRun {
    /// The pull request the run is about: `external_id`, which the app sets, since GitHub
    /// leaves `pull_requests` empty for forks.
    pub fn pull_request(&self) -> Option<u64> {
        self.external_id
            .as_deref()
            .and_then(|id| id.parse().ok())
            .or_else(|| self.pull_requests.first().map(|p| p.number))
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct AppRef {
    pub id: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PullRequestRef {
    pub number: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RequestedAction {
    /// Not required by GitHub's description: without one, no button of ours was pressed.
    #[serde(default)]
    pub identifier: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IssueCommentEvent {
    /// `created`, `edited` or `deleted`: only new comments are commands.
    pub action: String,
    pub issue: Issue,
    pub comment: Comment,
    pub repository: Repository,
    pub installation: Option<Installation>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Issue {
    pub number: u64,
    /// Present when the issue is a pull request.
    #[serde(default)]
    pub pull_request: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Comment {
    pub id: u64,
    #[serde(default)]
    pub body: String,
    /// `null` for a deleted user.
    pub user: Option<User>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}
