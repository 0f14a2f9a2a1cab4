//! What GitHub may really send, per its published OpenAPI description (npm `@octokit/openapi`,
//! `generated/api.github.com.json`): `pulls/list-files` entries with a null `sha`, pull
//! requests whose head repository was deleted or whose repositories have a null `owner`, a
//! comment whose `user` is null, `check_run` deliveries without `action` or without
//! `requested_action.identifier`, and `repos/get-content` answering a directory's listing.
//! Each is a clear skip or a clear message, never a failed job. (That every request carries
//! GitHub's `Accept` and a `User-Agent` naming KubeHarden, the fake checks on every request of
//! every test.)

use serde_json::{Value, json};

use crate::support::{APP_ID, Harness, INSTALLATION, REPO, pull_request_event};
use kubeharden::jobs::JobState;

const INSECURE: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: storefront
spec:
  template:
    spec:
      containers:
        - name: web
          image: ghcr.io/acme/storefront:2.4.1
";

fn repository() -> Value {
    json!({
        "id": 1296269,
        "name": "deploy",
        "full_name": REPO,
        "owner": { "login": "acme", "id": 1, "type": "Organization" }
    })
}

/// A pull request adding `files` (path, text) to a base with a README.
fn open_pr(h: &Harness, files: &[(&str, &str)]) {
    h.github.commit(REPO, "base1", &[("README.md", "hello\n")]);
    let mut head = vec![("README.md", "hello\n")];
    head.extend_from_slice(files);
    h.github.commit(REPO, "head1", &head);
    h.github.open_pr(REPO, 7, "base1", "head1");
}

async fn job_states(h: &Harness) -> Vec<JobState> {
    let jobs = h.state.store.list(None, 100).await.unwrap();
    jobs.into_iter().map(|j| j.state).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_listed_without_a_sha_is_skipped_and_the_others_reviewed() {
    let h = Harness::start().await;
    open_pr(
        &h,
        &[("deploy/a.yaml", INSECURE), ("deploy/b.yaml", INSECURE)],
    );
    h.github.null_file_sha("deploy/a.yaml");
    let event = pull_request_event("opened", 7, "base1", "head1");
    assert_eq!(h.deliver("pull_request", &event).await, 202);

    let runs = h.github.take_check_runs();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, "completed");
    assert!(
        runs[0]
            .annotations
            .iter()
            .any(|a| a["path"] == "deploy/b.yaml")
    );
    assert!(
        !runs[0]
            .annotations
            .iter()
            .any(|a| a["path"] == "deploy/a.yaml")
    );
    let reviews = h.github.take_reviews();
    assert_eq!(reviews.len(), 1);
    assert!(!reviews[0].comments.is_empty());
    assert!(
        reviews[0]
            .comments
            .iter()
            .all(|c| c.path == "deploy/b.yaml")
    );
    assert_eq!(job_states(&h).await, [JobState::Done]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_from_a_deleted_fork_with_null_owners_is_reviewed_without_buttons() {
    let h = Harness::start().await;
    open_pr(&h, &[("deploy/web.yaml", INSECURE)]);
    h.github.delete_fork(REPO, 7);
    h.github.null_repo_owners();
    let mut event = pull_request_event("opened", 7, "base1", "head1");
    event["pull_request"]["head"]["repo"] = Value::Null;
    event["pull_request"]["base"]["repo"]["owner"] = Value::Null;
    assert_eq!(h.deliver("pull_request", &event).await, 202);

    let runs = h.github.take_check_runs();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, "completed");
    assert_eq!(runs[0].conclusion.as_deref(), Some("failure"));
    // A fork's branch is never committed to: no buttons.
    assert!(
        runs[0].actions.as_array().is_none_or(Vec::is_empty),
        "{:?}",
        runs[0].actions
    );
    assert_eq!(h.github.take_reviews().len(), 1);
    assert_eq!(job_states(&h).await, [JobState::Done]);
}

/// An `issue_comment` delivery on pull request 7; `user` as given (`null` for a deleted user).
fn comment_event(id: u64, user: Value, body: &str) -> Value {
    json!({
        "action": "created",
        "issue": {
            "number": 7,
            "state": "open",
            "pull_request": { "url": format!("https://api.github.com/repos/{REPO}/pulls/7") },
            "user": { "login": "octocat", "type": "User" }
        },
        "comment": {
            "id": id,
            "body": body,
            "user": user,
            "created_at": chrono::Utc::now().to_rfc3339(),
            "author_association": "NONE"
        },
        "repository": repository(),
        "sender": { "login": "ghost", "type": "User" },
        "installation": { "id": INSTALLATION }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recheck_reads_a_pull_request_whose_repositories_have_null_owners() {
    let h = Harness::start().await;
    open_pr(&h, &[("deploy/web.yaml", INSECURE)]);
    let event = pull_request_event("opened", 7, "base1", "head1");
    assert_eq!(h.deliver("pull_request", &event).await, 202);
    assert_eq!(h.github.take_check_runs().len(), 1);
    assert_eq!(h.github.take_reviews().len(), 1);

    h.github.null_repo_owners();
    let id = h.github.add_comment(7, "octocat", "/kubeharden recheck");
    let user = json!({ "login": "octocat", "id": 2, "type": "User" });
    let status = h
        .deliver(
            "issue_comment",
            &comment_event(id, user, "/kubeharden recheck"),
        )
        .await;
    assert_eq!(status, 202);
    let runs = h.github.take_check_runs();
    assert_eq!(
        runs.len(),
        1,
        "the recheck completes a check run of its own"
    );
    assert_eq!(runs[0].status, "completed");
    assert_eq!(h.github.take_reviews().len(), 0, "nothing new to say");
    assert!(h.github.reactions().contains(&(id, "rocket".to_string())));
    assert_eq!(job_states(&h).await, [JobState::Done, JobState::Done]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comment_by_a_deleted_user_is_acknowledged_and_ignored() {
    let h = Harness::start().await;
    open_pr(&h, &[("deploy/web.yaml", INSECURE)]);
    let id = h.github.add_comment(7, "ghost", "/kubeharden fix");
    let status = h
        .deliver(
            "issue_comment",
            &comment_event(id, Value::Null, "/kubeharden fix"),
        )
        .await;
    assert_eq!(status, 200);
    assert!(job_states(&h).await.is_empty());
    assert!(h.github.reactions().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_run_deliveries_without_action_or_identifier_are_acknowledged_and_ignored() {
    let h = Harness::start().await;
    let check_run = json!({
        "id": 4,
        "name": "KubeHarden",
        "head_sha": "head1",
        "external_id": "7",
        "status": "completed",
        "app": { "id": APP_ID, "slug": "kubeharden" },
        "pull_requests": []
    });
    let base = json!({
        "check_run": check_run,
        "repository": repository(),
        "sender": { "login": "octocat", "type": "User" },
        "installation": { "id": INSTALLATION }
    });
    // No `action` at all.
    assert_eq!(h.deliver("check_run", &base).await, 200);
    // A button press whose `requested_action` has no `identifier`.
    let mut pressed = base.clone();
    pressed["action"] = json!("requested_action");
    pressed["requested_action"] = json!({});
    assert_eq!(h.deliver("check_run", &pressed).await, 200);
    assert!(job_states(&h).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_where_the_configuration_should_be_is_named_in_the_check_run() {
    let h = Harness::start().await;
    let files = [
        ("README.md", "hello\n"),
        (".github/kubeharden.yaml/notes.md", "not a configuration\n"),
    ];
    h.github.commit(REPO, "base1", &files);
    let mut head = files.to_vec();
    head.push(("deploy/web.yaml", INSECURE));
    h.github.commit(REPO, "head1", &head);
    h.github.open_pr(REPO, 7, "base1", "head1");
    let event = pull_request_event("opened", 7, "base1", "head1");
    assert_eq!(h.deliver("pull_request", &event).await, 202);

    let runs = h.github.take_check_runs();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].conclusion.as_deref(), Some("failure"));
    assert_eq!(
        runs[0].title.as_deref(),
        Some("invalid KubeHarden configuration")
    );
    let summary = runs[0].summary.as_deref().unwrap_or_default();
    assert!(
        summary.contains(".github/kubeharden.yaml: a directory"),
        "{summary}"
    );
    assert_eq!(job_states(&h).await, [JobState::Done]);
}
