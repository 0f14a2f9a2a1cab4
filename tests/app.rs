//! The GitHub App end to end: the real server over HTTP, real octocrab, against the fake GitHub.

mod support;

use kubeharden::fix::{fix_file, suggest};
use kubeharden::lint::{Linter, Settings};
use kubeharden::rules::{Applicability, Registry};
use kubeharden::source::SourceFile;
use support::{Harness, REPO, pull_request_event};

const INSECURE: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: storefront
  namespace: shop
spec:
  template:
    spec:
      containers:
        - name: web
          image: ghcr.io/acme/storefront:2.4.1
          resources:
            limits: {cpu: 500m, memory: 256Mi}
";

/// Apply the suggestions of a review to a file, as "Commit suggestion" on each would.
fn apply_comments(text: &str, comments: &[support::fake_github::ReviewComment]) -> String {
    let mut suggestions: Vec<suggest::Suggestion> = comments
        .iter()
        .map(|c| {
            let body = &c.body;
            let start = body.find("suggestion\n").unwrap() + "suggestion\n".len();
            let end = body[start..].find("\n```").unwrap() + start;
            let mut replacement = body[start..end].to_string();
            replacement.push('\n');
            suggest::Suggestion {
                start_line: c.start_line.unwrap_or(c.line) as usize,
                end_line: c.line as usize,
                replacement,
            }
        })
        .collect();
    suggestions.sort_by_key(|s| s.start_line);
    suggest::apply(text, &suggestions)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_insecure_deployment_gets_a_check_run_and_a_review_with_suggestions() {
    let h = Harness::start().await;
    h.github.commit(REPO, "base1", &[("README.md", "hello\n")]);
    h.github.commit(
        REPO,
        "head1",
        &[("README.md", "hello\n"), ("deploy/web.yaml", INSECURE)],
    );
    h.github.open_pr(REPO, 7, "base1", "head1");
    let status = h
        .deliver(
            "pull_request",
            &pull_request_event("opened", 7, "base1", "head1"),
        )
        .await;
    assert_eq!(status, 202);

    let runs = h.github.take_check_runs();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(run.head_sha, "head1");
    assert_eq!(run.external_id.as_deref(), Some("7"));
    assert_eq!(run.status, "completed");
    assert_eq!(run.conclusion.as_deref(), Some("failure"));
    assert!(run.annotations.iter().any(
        |a| a["title"] == "KubeHarden [run-as-root-allowed]" && a["path"] == "deploy/web.yaml"
    ));

    let reviews = h.github.take_reviews();
    assert_eq!(reviews.len(), 1);
    let review = &reviews[0];
    assert_eq!(review.commit_id, "head1");
    assert!(review.body.contains("## KubeHarden:"), "{}", review.body);
    assert!(!review.comments.is_empty());
    for c in &review.comments {
        assert!(c.body.contains("```suggestion\n"), "{}", c.body);
        assert!(c.body.contains("<!-- kubeharden:fingerprint="));
    }
    // Committing every suggestion gives exactly what `kubeharden fix --unsafe-fixes` writes.
    let registry = Registry::builtin().unwrap();
    let linter = Linter::new(&registry, Settings::default());
    let fixed = fix_file(
        &linter,
        &SourceFile::new("deploy/web.yaml", INSECURE),
        Applicability::Unsafe,
    )
    .unwrap()
    .fixed;
    assert_eq!(apply_comments(INSECURE, &review.comments), fixed);

    // The token was narrowed to this repository and the review's permissions.
    let tokens = h.github.token_requests();
    assert!(!tokens.is_empty());
    assert_eq!(
        tokens[0].body["repositories"],
        serde_json::json!(["deploy"])
    );
    assert_eq!(tokens[0].body["permissions"]["pull_requests"], "write");
    assert_eq!(tokens[0].body["permissions"]["contents"], "read");
    assert_eq!(h.github.rejected_reviews(), 0);
}
