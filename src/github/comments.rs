//! The pull request's conversation: replies to commands, reactions, and who may give them.

use http::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{GitHubError, RepoClient, encode_path, events};

impl RepoClient {
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

    /// Post a reply carrying `marker` in a pull request's conversation, once: after a 5xx or a
    /// lost answer it is sent again only if no comment of a bot since `since` carries it.
    pub async fn reply(
        &self,
        pr: u64,
        body: &str,
        marker: &str,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), GitHubError> {
        self.create_once(
            "reply",
            || self.comment(pr, body),
            || async {
                Ok(self
                    .has_comment_with(pr, marker, since)
                    .await?
                    .then_some(()))
            },
        )
        .await
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
}
