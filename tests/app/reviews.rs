//! The GitHub App end to end: the real server over HTTP, real octocrab, against the fake GitHub.

use crate::support::{Harness, REPO, pull_request_event};
use kubeharden_core::fix::{fix_file, suggest};
use kubeharden_core::lint::{Linter, Settings};
use kubeharden_core::rules::{Applicability, Registry};
use kubeharden_core::source::SourceFile;

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
fn apply_comments(text: &str, comments: &[crate::support::fake_github::ReviewComment]) -> String {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn findings_outside_the_diff_become_annotations_not_a_rejected_review() {
    let h = Harness::start().await;
    // The base already has an insecure Deployment; the pull request renames it (line 4, far from
    // where its container's fix goes, after line 13) and appends a second insecure one.
    let old = format!(
        "{INSECURE}      volumes:\n        - name: cache\n          emptyDir: {{}}\n        - name: config\n          configMap: {{name: web}}\n        - name: tmp\n          emptyDir: {{}}\n"
    );
    let appended = INSECURE.replace("storefront", "checkout");
    let new = format!(
        "{}---\n{appended}",
        old.replace("name: storefront", "name: storefront-v2")
    );
    h.github.commit(REPO, "base1", &[("app.yaml", &old)]);
    h.github.commit(REPO, "head1", &[("app.yaml", &new)]);
    h.github.open_pr(REPO, 8, "base1", "head1");
    assert_eq!(
        h.deliver(
            "pull_request",
            &pull_request_event("opened", 8, "base1", "head1")
        )
        .await,
        202
    );
    assert_eq!(
        h.github.rejected_reviews(),
        0,
        "a comment was anchored outside the diff"
    );
    let runs = h.github.take_check_runs();
    // Both Deployments' findings are annotations.
    let escalation: Vec<u64> = runs[0]
        .annotations
        .iter()
        .filter(|a| a["title"] == "KubeHarden [privilege-escalation-allowed]")
        .filter_map(|a| a["start_line"].as_u64())
        .collect();
    assert_eq!(escalation, [10, 31]);
    // The renamed Deployment's container fix (after line 13) lies in no hunk: no comment there;
    // the appended Deployment (lines 21-34) carries suggestions.
    let reviews = h.github.take_reviews();
    assert_eq!(reviews.len(), 1);
    assert!(reviews[0].comments.iter().any(|c| c.line >= 21));
    for c in &reviews[0].comments {
        assert!(
            !(8..=14).contains(&c.line),
            "comment outside the hunks: {c:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_that_fixes_half_posts_nothing_twice_and_resolves_the_fixed_threads() {
    let h = Harness::start().await;
    let second = INSECURE.replace("storefront", "checkout");
    h.github.commit(REPO, "base1", &[]);
    h.github
        .commit(REPO, "head1", &[("a.yaml", INSECURE), ("b.yaml", &second)]);
    h.github.open_pr(REPO, 9, "base1", "head1");
    h.deliver(
        "pull_request",
        &pull_request_event("opened", 9, "base1", "head1"),
    )
    .await;
    let first = h.github.take_reviews();
    assert_eq!(first.len(), 1);
    let a_threads: Vec<_> = first[0]
        .comments
        .iter()
        .filter(|c| c.path == "a.yaml")
        .cloned()
        .collect();
    let b_threads: Vec<_> = first[0]
        .comments
        .iter()
        .filter(|c| c.path == "b.yaml")
        .cloned()
        .collect();
    assert!(!a_threads.is_empty() && !b_threads.is_empty());
    h.github.take_check_runs();

    // Commit every suggestion for a.yaml, as a reviewer would.
    let fixed_a = apply_comments(INSECURE, &a_threads);
    h.github
        .commit(REPO, "head2", &[("a.yaml", &fixed_a), ("b.yaml", &second)]);
    h.github.push(REPO, 9, "head2");
    h.deliver(
        "pull_request",
        &pull_request_event("synchronize", 9, "base1", "head2"),
    )
    .await;
    // b.yaml's threads are still open: nothing new to say, so no second review.
    assert!(h.github.take_reviews().is_empty());
    let runs = h.github.take_check_runs();
    assert_eq!(runs[0].head_sha, "head2");
    let threads = h.github.threads(9);
    for t in &threads {
        assert_eq!(t.resolved, t.path == "a.yaml", "{t:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_pull_requests_still_get_suggestions() {
    let h = Harness::start().await;
    h.github.commit(REPO, "base1", &[]);
    h.github.commit(REPO, "head1", &[("web.yaml", INSECURE)]);
    h.github.open_pr(REPO, 10, "base1", "head1");
    let mut event = pull_request_event("opened", 10, "base1", "head1");
    event["pull_request"]["head"]["repo"]["id"] = serde_json::json!(999);
    event["pull_request"]["head"]["repo"]["owner"]["login"] = serde_json::json!("contributor");
    assert_eq!(h.deliver("pull_request", &event).await, 202);
    let reviews = h.github.take_reviews();
    assert!(!reviews[0].comments.is_empty());
    h.github.take_check_runs();
    // Read-only: reviews and check runs are the only writes.
    let writes: Vec<_> = h
        .github
        .calls()
        .into_iter()
        .filter(|c| !c.starts_with("GET") && !c.contains("access_tokens") && !c.contains("graphql"))
        .collect();
    assert!(
        writes
            .iter()
            .all(|c| c.contains("/check-runs") || c.contains("/reviews")),
        "{writes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_base_branch_configuration_applies_not_the_pull_requests() {
    let h = Harness::start().await;
    let base_config =
        "rules:\n  disable: [resource-limits-missing, image-tag-mutable]\nfail-on: error\n";
    // The pull request tries to switch the whole check off; it must not work.
    let head_config = "profile: baseline\nfail-on: error\nrules:\n  disable: [host-pid]\n";
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  hostPID: true\n  containers:\n    - name: c\n      image: nginx\n";
    h.github
        .commit(REPO, "base1", &[(".github/kubeharden.yaml", base_config)]);
    h.github.commit(
        REPO,
        "head1",
        &[(".github/kubeharden.yaml", head_config), ("pod.yaml", pod)],
    );
    h.github.open_pr(REPO, 11, "base1", "head1");
    h.deliver(
        "pull_request",
        &pull_request_event("opened", 11, "base1", "head1"),
    )
    .await;
    let runs = h.github.take_check_runs();
    let titles: Vec<&str> = runs[0]
        .annotations
        .iter()
        .filter_map(|a| a["title"].as_str())
        .collect();
    assert!(titles.contains(&"KubeHarden [host-pid]"), "{titles:?}");
    assert!(
        !titles.contains(&"KubeHarden [image-tag-mutable]"),
        "{titles:?}"
    );
    assert!(
        titles.contains(&"KubeHarden [run-as-root-allowed]"),
        "nsa profile from the base: {titles:?}"
    );
    assert_eq!(runs[0].conclusion.as_deref(), Some("failure"));
    h.github.take_reviews();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_yaml_is_an_annotation_not_a_crash() {
    let h = Harness::start().await;
    h.github.commit(REPO, "base1", &[]);
    h.github.commit(
        REPO,
        "head1",
        &[(
            "broken.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata:\n\tname: x\n",
        )],
    );
    h.github.open_pr(REPO, 12, "base1", "head1");
    h.deliver(
        "pull_request",
        &pull_request_event("opened", 12, "base1", "head1"),
    )
    .await;
    let runs = h.github.take_check_runs();
    assert_eq!(runs[0].status, "completed");
    assert!(
        runs[0]
            .annotations
            .iter()
            .any(|a| a["title"] == "KubeHarden [invalid-yaml]" && a["start_line"] == 4)
    );
    let reviews = h.github.take_reviews();
    assert!(reviews.iter().all(|r| r.comments.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_unsigned_malformed_unknown_and_irrelevant_deliveries_do_nothing() {
    let h = Harness::start().await;
    let event = pull_request_event("opened", 13, "base1", "head1");
    assert_eq!(
        h.deliver_signed("pull_request", &event, Some("not the secret"))
            .await,
        401
    );
    assert_eq!(h.deliver_signed("pull_request", &event, None).await, 401);
    assert_eq!(
        h.deliver("issues", &serde_json::json!({"action": "opened"}))
            .await,
        200
    );
    assert_eq!(
        h.deliver(
            "pull_request",
            &pull_request_event("labeled", 13, "base1", "head1")
        )
        .await,
        200
    );
    assert_eq!(
        h.deliver(
            "pull_request",
            &pull_request_event("some_future_action", 13, "base1", "head1")
        )
        .await,
        200
    );
    assert_eq!(
        h.deliver("pull_request", &serde_json::json!({"action": "opened"}))
            .await,
        400
    );
    let (status, _) = crate::support::post(
        &h.url,
        "/api/github/webhooks",
        &[
            ("X-GitHub-Event".into(), "pull_request".into()),
            ("X-Hub-Signature-256".into(), sign(b"{not json")),
        ],
        b"{not json",
    )
    .await;
    assert_eq!(status, 400);
    assert!(h.github.calls().is_empty(), "{:?}", h.github.calls());
}

fn sign(body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(crate::support::SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_502_and_a_secondary_rate_limit_are_retried() {
    let h = Harness::start().await;
    h.github.commit(REPO, "base1", &[]);
    h.github.commit(REPO, "head1", &[("web.yaml", INSECURE)]);
    h.github.open_pr(REPO, 14, "base1", "head1");
    h.github
        .fail(http::Method::GET, "/pulls/14/files", 502, &[], 1);
    h.github.fail(
        http::Method::POST,
        "/pulls/14/reviews",
        403,
        &[("retry-after", "1")],
        1,
    );
    let started = std::time::Instant::now();
    h.deliver(
        "pull_request",
        &pull_request_event("opened", 14, "base1", "head1"),
    )
    .await;
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "retry-after was not honoured"
    );
    assert_eq!(h.github.take_reviews().len(), 1);
    assert_eq!(h.github.take_check_runs()[0].status, "completed");
    let files_calls = h
        .github
        .calls()
        .iter()
        .filter(|c| c.contains("/pulls/14/files"))
        .count();
    assert_eq!(files_calls, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_of_300_manifests() {
    let h = Harness::start().await;
    let files: Vec<(String, String)> = (0..300)
        .map(|i| {
            (
                format!("apps/app-{i:03}.yaml"),
                INSECURE.replace("storefront", &format!("app-{i}")),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    h.github.commit(REPO, "base1", &[]);
    h.github.commit(REPO, "head1", &refs);
    h.github.open_pr(REPO, 15, "base1", "head1");
    h.deliver(
        "pull_request",
        &pull_request_event("opened", 15, "base1", "head1"),
    )
    .await;
    let reviews = h.github.take_reviews();
    assert_eq!(reviews.len(), 1);
    assert_eq!(
        reviews[0].comments.len(),
        kubeharden_core::review::MAX_COMMENTS
    );
    assert!(
        reviews[0]
            .body
            .contains("more suggestions are not shown inline"),
        "{}",
        reviews[0].body
    );
    let runs = h.github.take_check_runs();
    assert!(runs[0].annotations.len() > 300);
    // Pages of files, not calls per finding: 3 pages of 100.
    let pages = h
        .github
        .calls()
        .iter()
        .filter(|c| c.contains("/pulls/15/files"))
        .count();
    assert_eq!(pages, 4, "three full pages and an empty one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drafts_wait_unless_the_repository_reviews_them() {
    let h = Harness::start().await;
    h.github.commit(REPO, "base1", &[]);
    h.github.commit(REPO, "head1", &[("web.yaml", INSECURE)]);
    h.github.open_pr(REPO, 16, "base1", "head1");
    let mut event = pull_request_event("opened", 16, "base1", "head1");
    event["pull_request"]["draft"] = serde_json::json!(true);
    assert_eq!(h.deliver("pull_request", &event).await, 202);
    assert!(h.github.take_check_runs().is_empty());
    h.github.commit(
        REPO,
        "base2",
        &[(".github/kubeharden.yaml", "review-drafts: true\n")],
    );
    let mut event = pull_request_event("opened", 16, "base2", "head1");
    event["pull_request"]["draft"] = serde_json::json!(true);
    h.deliver("pull_request", &event).await;
    assert_eq!(h.github.take_check_runs().len(), 1);
    assert_eq!(h.github.take_reviews().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_pull_request_gets_a_green_check_and_no_review() {
    let h = Harness::start().await;
    let sa = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: default, namespace: shop}\n";
    h.github.commit(REPO, "base1", &[]);
    h.github.commit(
        REPO,
        "head1",
        &[
            ("api.yaml", crate::support::HARDENED),
            ("sa.yaml", sa),
            ("notes.md", "# not YAML\n"),
        ],
    );
    h.github.open_pr(REPO, 17, "base1", "head1");
    h.deliver(
        "pull_request",
        &pull_request_event("opened", 17, "base1", "head1"),
    )
    .await;
    let runs = h.github.take_check_runs();
    assert_eq!(
        runs[0].conclusion.as_deref(),
        Some("success"),
        "{:?}",
        runs[0].annotations
    );
    assert!(runs[0].annotations.is_empty());
    assert!(
        h.github.take_reviews().is_empty(),
        "nothing to say, no review"
    );
    // Markdown is not fetched.
    assert!(!h.github.calls().iter().any(|c| c.contains("notes.md")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_minted_again_and_graphql_failures_degrade() {
    let h = Harness::start().await;
    h.github.commit(REPO, "base1", &[]);
    h.github.commit(REPO, "head1", &[("web.yaml", INSECURE)]);
    h.github.open_pr(REPO, 18, "base1", "head1");
    h.deliver(
        "pull_request",
        &pull_request_event("opened", 18, "base1", "head1"),
    )
    .await;
    assert_eq!(h.github.take_reviews().len(), 1);
    h.github.take_check_runs();
    assert_eq!(
        h.github.token_requests().len(),
        1,
        "the token is cached between jobs"
    );

    // The cached token stops working: the job re-mints once and carries on.
    h.github.revoke_tokens();
    h.github.fail(http::Method::POST, "/graphql", 502, &[], 10);
    h.github.commit(
        REPO,
        "head2",
        &[("web.yaml", &INSECURE.replace("2.4.1", "2.4.2"))],
    );
    h.github.push(REPO, 18, "head2");
    h.deliver(
        "pull_request",
        &pull_request_event("synchronize", 18, "base1", "head2"),
    )
    .await;
    assert_eq!(h.github.token_requests().len(), 2);
    let runs = h.github.take_check_runs();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, "completed");
    // Without the thread list the job cannot know what it posted: it posts again rather than
    // stay silent, and leaves the old threads alone.
    assert_eq!(h.github.take_reviews().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_only_reviews_when_the_base_changed() {
    let h = Harness::start().await;
    let mut title_only = pull_request_event("edited", 19, "base1", "head1");
    title_only["changes"] = serde_json::json!({"title": {"from": "old"}});
    assert_eq!(h.deliver("pull_request", &title_only).await, 200);
    assert!(h.github.calls().is_empty());
    h.github.commit(REPO, "base1", &[]);
    h.github.commit(REPO, "head1", &[("web.yaml", INSECURE)]);
    h.github.open_pr(REPO, 19, "base1", "head1");
    let mut new_base = pull_request_event("edited", 19, "base1", "head1");
    new_base["changes"] =
        serde_json::json!({"base": {"ref": {"from": "develop"}, "sha": {"from": "abc"}}});
    assert_eq!(h.deliver("pull_request", &new_base).await, 202);
    assert_eq!(h.github.take_reviews().len(), 1);
    assert_eq!(h.github.take_check_runs().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_run_again_for_the_same_head_posts_nothing_twice() {
    let h = Harness::start().await;
    h.github.commit(REPO, "base1", &[]);
    h.github.commit(REPO, "head1", &[("web.yaml", INSECURE)]);
    h.github.open_pr(REPO, 20, "base1", "head1");
    h.deliver(
        "pull_request",
        &pull_request_event("opened", 20, "base1", "head1"),
    )
    .await;
    assert_eq!(h.github.take_reviews().len(), 1);
    assert_eq!(h.github.take_check_runs().len(), 1);
    // The same head again (a reopen, or a job re-run after a crash): the completed check run
    // says the work is done.
    h.deliver(
        "pull_request",
        &pull_request_event("reopened", 20, "base1", "head1"),
    )
    .await;
    assert!(h.github.take_reviews().is_empty());
    assert!(h.github.take_check_runs().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_is_acknowledged_and_not_processed_twice() {
    let h = Harness::start().await;
    h.github.commit(REPO, "base1", &[]);
    h.github.commit(REPO, "head1", &[("web.yaml", INSECURE)]);
    h.github.open_pr(REPO, 21, "base1", "head1");
    let event = pull_request_event("opened", 21, "base1", "head1");
    assert_eq!(
        h.deliver_as(
            "pull_request",
            &event,
            Some(crate::support::SECRET),
            "guid-1"
        )
        .await,
        202
    );
    assert_eq!(
        h.deliver_as(
            "pull_request",
            &event,
            Some(crate::support::SECRET),
            "guid-1"
        )
        .await,
        200
    );
    tokio::time::timeout(std::time::Duration::from_secs(30), h.state.wait_idle())
        .await
        .unwrap();
    assert_eq!(h.github.take_reviews().len(), 1);
    assert_eq!(h.github.take_check_runs().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_50_pushes_reviews_only_the_newest_head() {
    let h = Harness::start().await;
    h.github.commit(REPO, "base", &[]);
    for i in 0..50 {
        h.github.commit(
            REPO,
            &format!("head{i}"),
            &[("web.yaml", &INSECURE.replace("2.4.1", &format!("2.4.{i}")))],
        );
    }
    h.github.open_pr(REPO, 22, "base", "head49");
    for i in 0..50 {
        let status = h
            .deliver_signed(
                "pull_request",
                &pull_request_event("synchronize", 22, "base", &format!("head{i}")),
                Some(crate::support::SECRET),
            )
            .await;
        assert_eq!(status, 202);
    }
    tokio::time::timeout(std::time::Duration::from_secs(60), h.state.wait_idle())
        .await
        .unwrap();
    let runs = h.github.take_check_runs();
    assert_eq!(
        runs.iter().map(|r| r.head_sha.as_str()).collect::<Vec<_>>(),
        ["head49"]
    );
    let reviews = h.github.take_reviews();
    assert_eq!(reviews.len(), 1);
    assert_eq!(reviews[0].commit_id, "head49");
    let jobs = h.state.store.list(None, 100).await.unwrap();
    assert_eq!(
        jobs.iter()
            .filter(|j| j.state == kubeharden::jobs::JobState::Done)
            .count(),
        1
    );
    assert_eq!(
        jobs.iter()
            .filter(|j| j.state == kubeharden::jobs::JobState::Superseded)
            .count(),
        49
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_are_retried_and_a_deleted_repository_stops_at_once() {
    let h = Harness::start().await;
    h.github.commit(REPO, "base1", &[]);
    h.github.commit(REPO, "head1", &[("web.yaml", INSECURE)]);
    h.github.open_pr(REPO, 23, "base1", "head1");
    // Three 502s: the client's own retries ride them out.
    h.github
        .fail(http::Method::GET, "/pulls/23/files", 502, &[], 3);
    h.deliver(
        "pull_request",
        &pull_request_event("opened", 23, "base1", "head1"),
    )
    .await;
    assert_eq!(h.github.take_reviews().len(), 1);
    assert_eq!(h.github.take_check_runs()[0].status, "completed");

    // Eight: two job attempts fail, the third succeeds after a backoff.
    h.github.commit(
        REPO,
        "head2",
        &[("web.yaml", &INSECURE.replace("2.4.1", "2.5.0"))],
    );
    h.github.push(REPO, 23, "head2");
    h.github
        .fail(http::Method::GET, "/pulls/23/files", 502, &[], 8);
    h.deliver(
        "pull_request",
        &pull_request_event("synchronize", 23, "base1", "head2"),
    )
    .await;
    let job = h.state.store.list(None, 1).await.unwrap().remove(0);
    assert_eq!(
        (job.state, job.attempts),
        (kubeharden::jobs::JobState::Done, 3)
    );
    h.github.take_reviews();
    let runs = h.github.take_check_runs();
    assert_eq!(
        runs.len(),
        1,
        "the check run started by the first attempt is reused"
    );
    assert_eq!(runs[0].status, "completed");

    // A 404 (the repository is gone) is permanent: dead after one attempt, error kept.
    h.github.commit(REPO, "head3", &[("web.yaml", INSECURE)]);
    h.github.push(REPO, 23, "head3");
    h.github
        .fail(http::Method::GET, "/pulls/23/files", 404, &[], 100);
    h.deliver(
        "pull_request",
        &pull_request_event("synchronize", 23, "base1", "head3"),
    )
    .await;
    let job = h.state.store.list(None, 1).await.unwrap().remove(0);
    assert_eq!(
        (job.state, job.attempts),
        (kubeharden::jobs::JobState::Dead, 1)
    );
    assert!(job.last_error.unwrap().contains("404"));
    h.github.take_check_runs();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_down_at_delivery_time_is_a_5xx() {
    let h = Harness::start().await;
    h.state.store.close().await;
    let status = h
        .deliver_signed(
            "pull_request",
            &pull_request_event("opened", 24, "base1", "head1"),
            Some(crate::support::SECRET),
        )
        .await;
    assert_eq!(status, 503);
    let (status, _) = crate::support::get(&h.url, "/readyz").await;
    assert_eq!(status, 503);
    assert!(h.github.calls().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_postgresql_share_200_deliveries_for_50_prs() {
    let Some(db_url) = kubeharden::jobs::test_postgres_database().await else {
        eprintln!("KUBEHARDEN_TEST_POSTGRES not set: the replica test needs PostgreSQL; skipped");
        return;
    };
    let mut h = Harness::start_on(db_url, tempfile::tempdir().unwrap()).await;
    let second = h.add_replica().await;
    let urls = [h.url.clone(), second];
    h.github.commit(REPO, "base", &[]);
    for pr in 0..50u64 {
        for push in 0..4 {
            let head = format!("h{pr}-{push}");
            h.github.commit(
                REPO,
                &head,
                &[(
                    "web.yaml",
                    &INSECURE.replace("2.4.1", &format!("{pr}.{push}")),
                )],
            );
        }
        h.github
            .open_pr(REPO, 100 + pr, "base", &format!("h{pr}-0"));
    }
    let mut sent = 0;
    for push in 0..4 {
        for pr in 0..50u64 {
            let head = format!("h{pr}-{push}");
            h.github.push(REPO, 100 + pr, &head);
            let event = pull_request_event(
                if push == 0 { "opened" } else { "synchronize" },
                100 + pr,
                "base",
                &head,
            );
            let status = crate::support::deliver_to(
                &urls[sent % 2],
                "pull_request",
                &event,
                Some(crate::support::SECRET),
                &format!("d-{pr}-{push}"),
            )
            .await;
            assert_eq!(status, 202);
            sent += 1;
        }
    }
    assert_eq!(sent, 200);
    tokio::time::timeout(std::time::Duration::from_secs(120), h.wait_all_idle())
        .await
        .unwrap();
    let reviews = h.github.take_reviews();
    let runs = h.github.take_check_runs();
    let mut reviewed: Vec<(u64, String)> = reviews
        .iter()
        .map(|r| (r.pr, r.commit_id.clone()))
        .collect();
    let n = reviewed.len();
    reviewed.sort();
    reviewed.dedup();
    assert_eq!(reviewed.len(), n, "a head was reviewed twice");
    let mut checked: Vec<&str> = runs.iter().map(|r| r.head_sha.as_str()).collect();
    let m = checked.len();
    checked.sort_unstable();
    checked.dedup();
    assert_eq!(checked.len(), m, "a head got two check runs");
    for pr in 0..50u64 {
        // Every pull request was reviewed, and no finding was posted twice: the pushes change
        // nothing the findings are about, so each comment exists exactly once.
        let fingerprints: Vec<&str> = reviews
            .iter()
            .filter(|r| r.pr == 100 + pr)
            .flat_map(|r| r.comments.iter())
            .filter_map(|c| kubeharden_core::review::fingerprint_of(&c.body))
            .collect();
        assert!(!fingerprints.is_empty(), "PR {} lost its review", 100 + pr);
        let mut unique = fingerprints.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            unique.len(),
            fingerprints.len(),
            "PR {}: a comment was posted twice",
            100 + pr
        );
        // The newest head has its completed check run.
        let newest = format!("h{pr}-3");
        assert!(
            runs.iter()
                .any(|r| r.head_sha == newest && r.status == "completed"),
            "PR {}: no check on {newest}",
            100 + pr
        );
    }
    assert_eq!(h.github.rejected_reviews(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_are_redelivered_grouped_by_guid() {
    let h = Harness::start().await;
    let now = chrono::Utc::now();
    let at = |minutes: i64| (now - chrono::Duration::minutes(minutes)).to_rfc3339();
    h.github.set_hook_deliveries(vec![
        // Failed, then redelivered with success: fine.
        serde_json::json!({"id": 1, "guid": "a", "delivered_at": at(30), "status_code": 502, "event": "pull_request"}),
        serde_json::json!({"id": 2, "guid": "a", "delivered_at": at(20), "status_code": 202, "event": "pull_request"}),
        // Failed twice (the app was down): the newest attempt is redelivered.
        serde_json::json!({"id": 3, "guid": "b", "delivered_at": at(25), "status_code": 503, "event": "pull_request"}),
        serde_json::json!({"id": 4, "guid": "b", "delivered_at": at(15), "status_code": 0, "event": "pull_request"}),
        // Succeeded once.
        serde_json::json!({"id": 5, "guid": "c", "delivered_at": at(10), "status_code": 200, "event": "issue_comment"}),
        // Failed, but too long ago for this window.
        serde_json::json!({"id": 6, "guid": "d", "delivered_at": at(600), "status_code": 500, "event": "pull_request"}),
    ]);
    let asked = h
        .state
        .jobs
        .app
        .redeliver_failed(chrono::Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(asked, 1);
    assert_eq!(h.github.redelivered(), [4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_deliveries_jobs_requests_and_findings() {
    let h = Harness::start().await;
    h.github.commit(REPO, "base1", &[]);
    h.github.commit(REPO, "head1", &[("web.yaml", INSECURE)]);
    h.github.open_pr(REPO, 25, "base1", "head1");
    h.deliver(
        "pull_request",
        &pull_request_event("opened", 25, "base1", "head1"),
    )
    .await;
    h.github.take_reviews();
    h.github.take_check_runs();
    let (status, text) = crate::support::get(&h.url, "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "kubeharden_jobs{state=\"done\"} 1",
        "# TYPE kubeharden_job_duration_seconds histogram",
        "kubeharden_github_requests_total{status=\"200\"}",
        "kubeharden_findings_total{rule=\"run-as-root-allowed\"}",
        "kubeharden_deliveries_total{event=\"pull_request\",outcome=\"queued\"}",
    ] {
        assert!(text.contains(line), "missing `{line}` in\n{text}");
    }
    let (status, body) = crate::support::get(&h.url, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markers_copied_by_people_do_not_silence_the_app() {
    let h = Harness::start().await;
    h.github.commit(REPO, "base1", &[]);
    h.github.commit(REPO, "head1", &[("web.yaml", INSECURE)]);
    h.github.open_pr(REPO, 26, "base1", "head1");
    // Someone pastes the app's review marker and every fingerprint the review would carry.
    let registry = Registry::builtin().unwrap();
    let linter = Linter::new(&registry, Settings::default());
    let plan = kubeharden_core::review::plan(
        &linter,
        &[kubeharden_core::change::PrFile::new(
            "web.yaml",
            INSECURE,
            Some("@@ -0,0 +1,13 @@\n".into()),
        )],
    );
    let marker = kubeharden::github::review_marker("head1");
    let copied: Vec<String> = plan
        .fingerprints
        .iter()
        .map(|f| {
            format!(
                "LGTM {}{f} -->",
                kubeharden_core::review::FINGERPRINT_PREFIX
            )
        })
        .collect();
    let copied: Vec<&str> = copied.iter().map(String::as_str).collect();
    h.github
        .add_human_review(26, "head1", &format!("looks fine {marker}"), &copied);
    h.deliver(
        "pull_request",
        &pull_request_event("opened", 26, "base1", "head1"),
    )
    .await;
    let reviews = h.github.take_reviews();
    assert_eq!(reviews.len(), 1, "the app reviewed anyway");
    assert_eq!(reviews[0].comments.len(), plan.comments.len());
    h.github.take_check_runs();
    // And the people's threads are not resolved by the app.
    assert!(
        h.github
            .threads(26)
            .iter()
            .filter(|t| t.thread.starts_with("PRRT_human"))
            .all(|t| !t.resolved)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_cannot_finish_fails_its_check_run_instead_of_leaving_it_running() {
    let h = Harness::start().await;
    h.github.commit(REPO, "base1", &[]);
    h.github.commit(REPO, "head1", &[("web.yaml", INSECURE)]);
    h.github.open_pr(REPO, 27, "base1", "head1");
    h.github
        .fail(http::Method::GET, "/git/blobs/", 404, &[], 100);
    h.deliver(
        "pull_request",
        &pull_request_event("opened", 27, "base1", "head1"),
    )
    .await;
    let runs = h.github.take_check_runs();
    assert_eq!(runs.len(), 1);
    assert_eq!(
        (runs[0].status.as_str(), runs[0].conclusion.as_deref()),
        ("completed", Some("failure"))
    );
    assert_eq!(
        runs[0].title.as_deref(),
        Some("KubeHarden could not finish the review")
    );
    assert!(h.github.take_reviews().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_without_an_installation_is_dead_at_once() {
    let h = Harness::start().await;
    let mut event = pull_request_event("opened", 28, "base1", "head1");
    event.as_object_mut().unwrap().remove("installation");
    assert_eq!(h.deliver("pull_request", &event).await, 202);
    let job = h.state.store.list(None, 1).await.unwrap().remove(0);
    assert_eq!(
        (job.state, job.attempts),
        (kubeharden::jobs::JobState::Dead, 1)
    );
    assert!(job.last_error.unwrap().contains("no installation"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_502_after_the_review_was_created_does_not_post_it_twice() {
    let h = Harness::start().await;
    h.github.commit(REPO, "base1", &[]);
    h.github.commit(REPO, "head1", &[("web.yaml", INSECURE)]);
    h.github.open_pr(REPO, 15, "base1", "head1");
    // GitHub creates the review, then a proxy answers 502: sending the POST again would post
    // a second review. The job runs again instead and finds the first.
    h.github
        .fail_after(http::Method::POST, "/pulls/15/reviews", 502, 1);
    h.deliver(
        "pull_request",
        &pull_request_event("opened", 15, "base1", "head1"),
    )
    .await;
    assert_eq!(h.github.take_reviews().len(), 1, "one review");
    let runs = h.github.take_check_runs();
    assert_eq!(runs.len(), 1, "one check run");
    assert_eq!(runs[0].status, "completed");
}
