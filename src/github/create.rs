//! Requests that create something (a review, a check run, a reply) are sent at most once per
//! object. The transport never repeats them: after a 5xx or a lost answer GitHub may have
//! created the object anyway. Here, within the job and seconds later, the app looks for what
//! it meant to create (by the marker or name it carries) and sends again only when it is not
//! there, instead of failing the job into the queue's retries of 30 s and more.

use std::future::Future;
use std::time::Duration;

use super::{GitHubError, RepoClient};

/// Sends of one creating request, in all, within a job.
const ATTEMPTS: u32 = 4;

impl GitHubError {
    /// Whether the request may have taken effect although it failed: a 5xx, or no answer.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            GitHubError::Status { status, .. } => *status >= 500,
            GitHubError::Transport { .. } => true,
            GitHubError::Decode { .. } | GitHubError::Config(_) => false,
        }
    }
}

impl RepoClient {
    /// `create`, and after a failure whose outcome is unknown, `find` (what `create` made, if
    /// GitHub made it) before each new send. A failure that certainly created nothing, or a
    /// `find` that cannot answer, ends it with that error: the queue retries the job, which
    /// looks again before it creates.
    pub(super) async fn create_once<T, C, F>(
        &self,
        what: &str,
        mut create: impl FnMut() -> C,
        mut find: impl FnMut() -> F,
    ) -> Result<T, GitHubError>
    where
        C: Future<Output = Result<T, GitHubError>>,
        F: Future<Output = Result<Option<T>, GitHubError>>,
    {
        let mut attempt = 1;
        loop {
            let error = match create().await {
                Ok(created) => return Ok(created),
                Err(e) if e.outcome_unknown() && attempt < ATTEMPTS => e,
                Err(e) => return Err(e),
            };
            let wait = self.create_backoff(attempt);
            tracing::warn!(
                what,
                attempt,
                wait_ms = wait.as_millis() as u64,
                "creating failed with an unknown outcome; looking for it before sending again: {error}"
            );
            tokio::time::sleep(wait).await;
            match find().await {
                Ok(Some(found)) => {
                    tracing::info!(what, attempt, "it was created after all");
                    return Ok(found);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(what, "cannot look for it, leaving the job to retry: {e}");
                    return Err(error);
                }
            }
            attempt += 1;
        }
    }

    /// Seconds, not the transport's fractions of one: a 5xx on a create is often GitHub
    /// still writing what it was asked to (four times the request backoff: 1, 2, 4 s by default).
    fn create_backoff(&self, attempt: u32) -> Duration {
        self.app.retry.base_delay * 4 * 2u32.saturating_pow(attempt.saturating_sub(1))
    }
}
