//! The "KubeHarden" check run: started on a head, found again after a crash, completed with
//! its output, annotations and buttons.

use http::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use kubeharden_core::review::Annotation;

use super::{GitHubError, RepoClient, encode_path};

/// Check-run output. GitHub caps summary and text at 65 535 characters and annotations at 50
/// per request.
#[derive(Debug, Clone, Serialize)]
pub struct CheckOutput {
    pub title: String,
    pub summary: String,
    pub text: String,
}

/// How a completed check run ends, as GitHub spells it (the ones the app uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckConclusion {
    Success,
    Failure,
}

impl From<kubeharden_core::review::Conclusion> for CheckConclusion {
    fn from(c: kubeharden_core::review::Conclusion) -> Self {
        match c {
            kubeharden_core::review::Conclusion::Success => CheckConclusion::Success,
            kubeharden_core::review::Conclusion::Failure => CheckConclusion::Failure,
        }
    }
}

/// A button on the check run (at most three; label ≤ 20, description ≤ 40, identifier ≤ 20).
#[derive(Debug, Clone, Serialize)]
pub struct CheckAction {
    pub label: String,
    pub description: String,
    pub identifier: String,
}

impl RepoClient {
    /// Start the "KubeHarden" check run on a commit; the pull request number goes into
    /// `external_id` because fork pull requests come with an empty `pull_requests` list.
    /// Created once: after a 5xx or a lost answer, a run of ours found on the commit is taken.
    pub async fn start_check_run(&self, head_sha: &str, pr: u64) -> Result<u64, GitHubError> {
        self.create_once(
            "check run",
            || self.send_check_run(head_sha, pr),
            || async { Ok(self.find_check_run(head_sha).await?.map(|(id, _)| id)) },
        )
        .await
    }

    async fn send_check_run(&self, head_sha: &str, pr: u64) -> Result<u64, GitHubError> {
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

    /// Complete a check run: its output, then the annotations 50 at a time (each PATCH appends).
    pub async fn complete_check_run(
        &self,
        id: u64,
        conclusion: CheckConclusion,
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
}
