//! The review: one per head, with inline comments; the app's own threads, found by the
//! fingerprints their first comments carry, and resolved when their finding is gone.

use http::Method;
use serde::Serialize;
use serde_json::{Value, json};

use kubeharden_core::review::InlineComment;

use super::{GitHubError, RepoClient};

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

impl RepoClient {
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

    /// Post one review with inline comments on the commit that was linted, once: after a 5xx
    /// or a lost answer it is sent again only if no review of ours on `commit` is there.
    pub async fn post_review(
        &self,
        pr: u64,
        commit: &str,
        body: &str,
        comments: &[InlineComment],
    ) -> Result<(), GitHubError> {
        self.create_once(
            "review",
            || self.send_review(pr, commit, body, comments),
            || async { Ok(self.has_review_for(pr, commit).await?.then_some(())) },
        )
        .await
    }

    async fn send_review(
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
}

/// The hidden marker a review body carries so that a job re-run after a crash finds it.
pub fn review_marker(head_sha: &str) -> String {
    format!("<!-- kubeharden:review head={head_sha} -->")
}
