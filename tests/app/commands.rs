//! The Apply fixes button and `/kubeharden` commands end to end: the real server and octocrab
//! against the fake GitHub, whose Git Data API keeps real trees, commits and branch refs.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::support::{APP_ID, Harness, INSTALLATION, REPO, pull_request_event};
use kubeharden_core::fix::fix_file;
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
          # pinned by the release process
          image: ghcr.io/acme/storefront:2.4.1
          resources:
            limits: {cpu: 500m, memory: 256Mi}
";

const POD_IN_A_WORKFLOW_DIR: &str = "apiVersion: v1
kind: Pod
metadata:
  name: runner
spec:
  containers:
    - name: r
      image: ghcr.io/acme/runner:1.0.0
      securityContext:
        privileged: true
";

fn fixed(path: &str, text: &str, min: Applicability) -> String {
    let registry = Registry::builtin().unwrap();
    let linter = Linter::new(&registry, Settings::default());
    fix_file(&linter, &SourceFile::new(path, text), min)
        .unwrap()
        .fixed
}

fn repository() -> Value {
    json!({
        "id": 1296269,
        "name": "deploy",
        "full_name": REPO,
        "owner": { "login": "acme", "id": 1, "type": "Organization" }
    })
}

/// An `issue_comment` delivery as GitHub sends it for a pull request's conversation.
fn comment_event(pr: u64, id: u64, user: &str, body: &str) -> Value {
    let kind = if user.ends_with("[bot]") {
        "Bot"
    } else {
        "User"
    };
    json!({
        "action": "created",
        "issue": {
            "number": pr,
            "title": "Deploy the storefront",
            "state": "open",
            "pull_request": { "url": format!("https://api.github.com/repos/{REPO}/pulls/{pr}") },
            "user": { "login": "octocat", "type": "User" }
        },
        "comment": {
            "id": id,
            "body": body,
            "user": { "login": user, "id": 9, "type": kind },
            "created_at": chrono::Utc::now().to_rfc3339(),
            "author_association": "MEMBER"
        },
        "repository": repository(),
        "sender": { "login": user, "type": kind },
        "installation": { "id": INSTALLATION }
    })
}

/// A person's comment on pull request `pr`, delivered as GitHub would send it; its id.
async fn comment(h: &Harness, pr: u64, user: &str, body: &str) -> u64 {
    let id = h.github.add_comment(pr, user, body);
    h.deliver("issue_comment", &comment_event(pr, id, user, body))
        .await;
    id
}

/// A `check_run` delivery for a click on one of the run's buttons. Fork pull requests come
/// with an empty `pull_requests` list, so none is sent here: the app must use `external_id`.
fn button_event(
    run: &crate::support::fake_github::CheckRun,
    identifier: &str,
    user: &str,
) -> Value {
    json!({
        "action": "requested_action",
        "check_run": {
            "id": run.id,
            "name": "KubeHarden",
            "head_sha": run.head_sha,
            "external_id": run.external_id,
            "status": "completed",
            "app": { "id": APP_ID, "slug": "kubeharden" },
            "pull_requests": []
        },
        "requested_action": { "identifier": identifier },
        "repository": repository(),
        "sender": { "login": user, "type": "User" },
        "installation": { "id": INSTALLATION }
    })
}

/// A pull request with an insecure Deployment (and a Pod under `.github/workflows/`), opened
/// and reviewed; returns its completed check run.
async fn reviewed_pr(h: &Harness) -> crate::support::fake_github::CheckRun {
    h.github.commit(REPO, "base1", &[("README.md", "hello\n")]);
    h.github.commit(
        REPO,
        "head1",
        &[
            ("README.md", "hello\n"),
            ("deploy/web.yaml", INSECURE),
            (".github/workflows/pod.yaml", POD_IN_A_WORKFLOW_DIR),
        ],
    );
    h.github.open_pr(REPO, 7, "base1", "head1");
    assert_eq!(
        h.deliver(
            "pull_request",
            &pull_request_event("opened", 7, "base1", "head1")
        )
        .await,
        202
    );
    assert_eq!(h.github.take_reviews().len(), 1);
    let mut runs = h.github.take_check_runs();
    assert_eq!(runs.len(), 1);
    runs.remove(0)
}

fn git_writes(calls: &[String]) -> Vec<&String> {
    calls
        .iter()
        .filter(|c| {
            (c.starts_with("POST ") && c.contains("/git/"))
                || c.starts_with("PATCH /repos/acme/deploy/git")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_button_commits_the_safe_fixes_as_one_verified_commit() {
    let h = Harness::start().await;
    let run = reviewed_pr(&h).await;
    // Offered on a same-repository pull request with fixable findings, within GitHub's limits.
    let actions = run.actions.as_array().unwrap();
    let ids: Vec<&str> = actions
        .iter()
        .map(|a| a["identifier"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["apply_fixes", "apply_all_fixes"]);
    for a in actions {
        assert!(a["label"].as_str().unwrap().chars().count() <= 20);
        assert!(a["description"].as_str().unwrap().chars().count() <= 40);
    }

    h.github.set_permission("alice", "write");
    assert_eq!(
        h.deliver("check_run", &button_event(&run, "apply_fixes", "alice"))
            .await,
        202
    );

    let commits = h.github.made_commits();
    assert_eq!(commits.len(), 1, "one commit");
    let commit = &commits[0];
    assert_eq!(commit.parents, ["head1"]);
    assert!(commit.request.get("author").is_none() && commit.request.get("committer").is_none());
    assert!(commit.message.starts_with("Harden pod security: fix "));
    assert!(commit.message.contains("deploy/web.yaml"));
    assert!(commit.message.contains("as @alice asked"));
    // Exactly the fixed file changed: not the README, not the workflow directory.
    let before = h.github.files_at(REPO, "head1");
    let changed: BTreeSet<&String> = commit
        .files
        .iter()
        .filter(|(p, c)| before.get(*p) != Some(c))
        .map(|(p, _)| p)
        .collect();
    assert_eq!(changed, BTreeSet::from([&"deploy/web.yaml".to_string()]));
    assert_eq!(commit.files.len(), before.len());
    assert_eq!(
        commit.files["deploy/web.yaml"],
        fixed("deploy/web.yaml", INSECURE, Applicability::Safe)
    );
    assert!(commit.files["deploy/web.yaml"].contains("# pinned by the release process"));
    // The branch moved forward to it, and only that.
    assert_eq!(
        h.github.ref_updates(),
        [("feature-7".to_string(), commit.sha.clone(), 200)]
    );
    assert_eq!(h.github.pr_head(REPO, 7), commit.sha);
    // The command ran with a token that may write contents, narrowed to the repository.
    let tokens = h.github.token_requests();
    let command_token = tokens
        .iter()
        .find(|t| t.body["permissions"]["contents"] == "write")
        .expect("a token for the commit");
    assert_eq!(command_token.body["repositories"], json!(["deploy"]));

    let replies = h.github.take_comments();
    assert_eq!(replies.len(), 1);
    let reply = &replies[0].body;
    assert!(reply.starts_with("@alice committed [`"), "{reply}");
    assert!(
        reply.contains(&format!("/commit/{}", commit.sha)),
        "{reply}"
    );
    assert!(reply.contains("`.github/workflows/pod.yaml`"), "{reply}");
    assert!(reply.contains("unsafe fix"), "{reply}");

    // GitHub then sends a synchronize for the app's push: the review resolves what was fixed.
    let threads_before = h.github.threads(7);
    assert!(threads_before.iter().all(|t| !t.resolved));
    h.deliver(
        "pull_request",
        &pull_request_event("synchronize", 7, "base1", &commit.sha),
    )
    .await;
    let runs = h.github.take_check_runs();
    assert_eq!(runs.len(), 1);
    // Only unsafe fixes are left: the safe button is gone.
    let ids: Vec<&str> = runs[0]
        .actions
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["identifier"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["apply_all_fixes"]);
    let threads = h.github.threads(7);
    let resolved = threads.iter().filter(|t| t.resolved).count();
    assert!(resolved > 0, "fixed threads are resolved");
    assert!(resolved < threads.len(), "unsafe ones stay open");
    let _ = h.github.take_reviews();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_is_refused_and_a_maintainer_commits_with_a_comment() {
    let h = Harness::start().await;
    let _ = reviewed_pr(&h).await;

    h.github.set_permission("rita", "read");
    let id = h.github.add_comment(7, "rita", "/kubeharden fix");
    assert_eq!(
        h.deliver(
            "issue_comment",
            &comment_event(7, id, "rita", "/kubeharden fix")
        )
        .await,
        202
    );
    let replies = h.github.take_comments();
    assert_eq!(replies.len(), 1);
    assert!(
        replies[0]
            .body
            .contains("only people with write access to this repository can have KubeHarden commit to it (your access: `read`)"),
        "{}",
        replies[0].body
    );
    assert_eq!(
        h.github.reactions(),
        [(id, "eyes".to_string()), (id, "confused".to_string())]
    );
    assert!(git_writes(&h.github.calls()).is_empty());

    h.github.set_permission("max", "maintain");
    let id2 = comment(&h, 7, "max", "Looks right.\n/kubeharden fix\nThanks").await;
    assert_eq!(h.github.made_commits().len(), 1);
    let replies = h.github.take_comments();
    assert_eq!(replies.len(), 1);
    assert!(
        replies[0].body.starts_with("@max committed"),
        "{}",
        replies[0].body
    );
    assert_eq!(
        h.github.reactions()[2..],
        [(id2, "eyes".to_string()), (id2, "rocket".to_string())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fix_unsafe_commits_the_unsafe_fixes_too() {
    let h = Harness::start().await;
    let _ = reviewed_pr(&h).await;
    h.github.set_permission("alice", "admin");
    let body = "/kubeharden fix --unsafe";
    comment(&h, 7, "alice", body).await;
    let commits = h.github.made_commits();
    assert_eq!(commits.len(), 1);
    let all = fixed("deploy/web.yaml", INSECURE, Applicability::Unsafe);
    assert_ne!(all, fixed("deploy/web.yaml", INSECURE, Applicability::Safe));
    assert_eq!(commits[0].files["deploy/web.yaml"], all);
    // Never the workflow directory, unsafe or not.
    assert_eq!(
        commits[0].files[".github/workflows/pod.yaml"],
        POD_IN_A_WORKFLOW_DIR
    );
    let replies = h.github.take_comments();
    assert_eq!(replies.len(), 1);
    assert!(
        !replies[0].body.contains("was left out"),
        "{}",
        replies[0].body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_that_moves_meanwhile_is_never_forced() {
    let h = Harness::start().await;
    let _ = reviewed_pr(&h).await;
    // Someone pushes a second manifest while the app is committing.
    let second = INSECURE.replace("storefront", "checkout");
    h.github.commit(
        REPO,
        "head2",
        &[
            ("README.md", "hello\n"),
            ("deploy/web.yaml", INSECURE),
            ("deploy/checkout.yaml", &second),
            (".github/workflows/pod.yaml", POD_IN_A_WORKFLOW_DIR),
        ],
    );
    h.github.race_next_ref_update(REPO, "feature-7", "head2");
    h.github.set_permission("alice", "write");
    comment(&h, 7, "alice", "/kubeharden fix").await;

    let updates = h.github.ref_updates();
    assert_eq!(updates.len(), 2, "{updates:?}");
    assert_eq!(updates[0].2, 422, "the first update is not a fast-forward");
    assert_eq!(updates[1].2, 200);
    let commits = h.github.made_commits();
    let last = commits.last().unwrap();
    assert_eq!(last.parents, ["head2"], "worked out again on the new head");
    assert_eq!(h.github.pr_head(REPO, 7), last.sha);
    // The other person's file is kept, and fixed too.
    assert_eq!(
        last.files["deploy/checkout.yaml"],
        fixed("deploy/checkout.yaml", &second, Applicability::Safe)
    );
    let replies = h.github.take_comments();
    assert_eq!(replies.len(), 1);
    assert!(
        replies[0]
            .body
            .contains("The branch moved away from `head1`")
            && replies[0].body.contains("nothing was force-pushed"),
        "{}",
        replies[0].body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_gets_the_patch_and_no_write_at_all() {
    let h = Harness::start().await;
    h.github.commit(REPO, "base1", &[("README.md", "hello\n")]);
    h.github.commit(
        REPO,
        "head1",
        &[("README.md", "hello\n"), ("deploy/web.yaml", INSECURE)],
    );
    h.github.open_pr(REPO, 8, "base1", "head1");
    h.github.make_fork(REPO, 8);
    let mut event = pull_request_event("opened", 8, "base1", "head1");
    event["pull_request"]["head"]["repo"]["id"] = json!(55555);
    h.deliver("pull_request", &event).await;
    let runs = h.github.take_check_runs();
    assert_eq!(
        runs[0].actions,
        json!([]),
        "no button where the app cannot commit"
    );
    let _ = h.github.take_reviews();

    h.github.set_permission("alice", "write");
    comment(&h, 8, "alice", "/kubeharden fix").await;
    assert!(git_writes(&h.github.calls()).is_empty());
    assert!(h.github.made_commits().is_empty());
    let replies = h.github.take_comments();
    assert_eq!(replies.len(), 1);
    let reply = &replies[0].body;
    assert!(reply.contains("comes from a fork"), "{reply}");
    assert!(
        reply.contains("<details><summary>Patch</summary>"),
        "{reply}"
    );
    // The patch in the reply is the safe fix, as a unified diff.
    let expected = kubeharden_core::commands::unified_diff(
        "deploy/web.yaml",
        INSECURE,
        &fixed("deploy/web.yaml", INSECURE, Applicability::Safe),
    );
    assert!(reply.contains(&format!("```diff\n{}", expected)), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_to_fix_is_said_and_nothing_is_committed() {
    let h = Harness::start().await;
    h.github.commit(REPO, "base1", &[("README.md", "hello\n")]);
    h.github.commit(
        REPO,
        "head1",
        &[
            ("README.md", "hello\n"),
            ("deploy/api.yaml", crate::support::HARDENED),
        ],
    );
    h.github.open_pr(REPO, 9, "base1", "head1");
    h.github.set_permission("alice", "write");
    comment(&h, 9, "alice", "/kubeharden fix").await;
    assert!(git_writes(&h.github.calls()).is_empty());
    let replies = h.github.take_comments();
    assert_eq!(replies.len(), 1);
    assert!(
        replies[0].body.contains("nothing KubeHarden can fix"),
        "{}",
        replies[0].body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bots_and_non_commands_are_ignored_at_the_door() {
    let h = Harness::start().await;
    h.github.commit(REPO, "base1", &[("README.md", "hello\n")]);
    h.github.open_pr(REPO, 7, "base1", "base1");
    for (user, body) in [
        ("kubeharden[bot]", "/kubeharden fix"),
        ("dependabot[bot]", "/kubeharden fix --unsafe"),
        ("alice", "I will run /kubeharden fix later"),
        ("alice", "> /kubeharden fix\n\nwhy?"),
    ] {
        let status = h
            .deliver("issue_comment", &comment_event(7, 1, user, body))
            .await;
        assert_eq!(status, 200, "{user}: {body}");
    }
    // Edited comments and comments on issues are not commands either.
    let mut edited = comment_event(7, 1, "alice", "/kubeharden fix");
    edited["action"] = json!("edited");
    assert_eq!(h.deliver("issue_comment", &edited).await, 200);
    let mut issue = comment_event(7, 1, "alice", "/kubeharden fix");
    issue["issue"]
        .as_object_mut()
        .unwrap()
        .remove("pull_request");
    assert_eq!(h.deliver("issue_comment", &issue).await, 200);
    // A button on another app's check run.
    let run = crate::support::fake_github::CheckRun {
        id: 1,
        head_sha: "base1".into(),
        external_id: Some("7".into()),
        status: "completed".into(),
        conclusion: None,
        title: None,
        summary: None,
        annotations: vec![],
        actions: Value::Null,
    };
    let mut other = button_event(&run, "apply_fixes", "alice");
    other["check_run"]["app"]["id"] = json!(1);
    assert_eq!(h.deliver("check_run", &other).await, 200);
    assert!(h.github.calls().is_empty(), "{:?}", h.github.calls());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_and_unknown_commands_get_the_table() {
    let h = Harness::start().await;
    h.github.commit(REPO, "base1", &[("README.md", "hello\n")]);
    h.github.open_pr(REPO, 7, "base1", "base1");
    for body in ["/kubeharden help", "/kubeharden frobnicate @everyone"] {
        comment(&h, 7, "rita", body).await;
    }
    let replies = h.github.take_comments();
    assert_eq!(replies.len(), 2);
    assert!(replies[0].body.contains("| `/kubeharden fix --unsafe` |"));
    assert!(
        replies[1]
            .body
            .contains("does not know the command `frobnicate @everyone`"),
        "{}",
        replies[1].body
    );
    assert!(
        !h.github
            .calls()
            .iter()
            .any(|c| c.contains("/collaborators/")),
        "help needs no permission"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_again_after_a_lost_reply_neither_commits_nor_replies_twice() {
    let h = Harness::start().await;
    let _ = reviewed_pr(&h).await;
    h.github.set_permission("alice", "write");
    // The reply fails four times (a POST that creates is not resent by the request itself):
    // the job fails after committing and runs again.
    h.github
        .fail(http::Method::POST, "/issues/7/comments", 502, &[], 4);
    comment(&h, 7, "alice", "/kubeharden fix").await;
    let posts = h
        .github
        .calls()
        .iter()
        .filter(|c| c.starts_with("POST /repos/acme/deploy/issues/7/comments"))
        .count();
    assert_eq!(posts, 5, "four failed replies, then the fifth run's");
    let commits = h.github.made_commits();
    assert_eq!(commits.len(), 1, "committed once");
    let replies = h.github.take_comments();
    assert_eq!(replies.len(), 1, "replied once");
    assert!(
        replies[0]
            .body
            .contains(&format!("/commit/{}", commits[0].sha)),
        "{}",
        replies[0].body
    );
    assert_eq!(h.github.ref_updates().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recheck_reviews_again_for_the_author_and_not_for_strangers() {
    let h = Harness::start().await;
    let _ = reviewed_pr(&h).await;
    comment(&h, 7, "mallory", "/kubeharden recheck").await;
    assert!(h.github.take_check_runs().is_empty());
    let replies = h.github.take_comments();
    assert!(
        replies[0].body.contains("can ask for a recheck"),
        "{}",
        replies[0].body
    );

    // The author (octocat) may: a new check run on the same head, no duplicate comments.
    comment(&h, 7, "octocat", "/kubeharden recheck").await;
    let runs = h.github.take_check_runs();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, "completed");
    assert!(h.github.take_reviews().is_empty(), "nothing new to say");
    assert!(h.github.take_comments().is_empty());
    assert_eq!(h.github.reactions().last().unwrap().1, "rocket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_and_executables_keep_their_mode() {
    let h = Harness::start().await;
    h.github.commit(REPO, "base1", &[("README.md", "hello\n")]);
    h.github.commit(
        REPO,
        "head1",
        &[
            ("README.md", "hello\n"),
            ("deploy/web.yaml", INSECURE),
            ("deploy/nested/link.yaml", INSECURE),
        ],
    );
    h.github.set_mode(REPO, "deploy/web.yaml", "100755");
    h.github.set_mode(REPO, "deploy/nested/link.yaml", "120000");
    h.github.open_pr(REPO, 7, "base1", "head1");
    h.github.set_permission("alice", "write");
    comment(&h, 7, "alice", "/kubeharden fix").await;
    let commits = h.github.made_commits();
    assert_eq!(commits.len(), 1);
    let trees = h.github.tree_requests();
    assert_eq!(trees.len(), 1);
    let entries = trees[0]["tree"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["path"], "deploy/web.yaml");
    assert_eq!(entries[0]["mode"], "100755");
    assert_eq!(commits[0].files["deploy/nested/link.yaml"], INSECURE);
    assert_ne!(commits[0].files["deploy/web.yaml"], INSECURE);
    let replies = h.github.take_comments();
    assert!(
        replies[0]
            .body
            .contains("`deploy/nested/link.yaml`: `not a regular file"),
        "{}",
        replies[0].body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_button_on_an_older_commits_check_run_commits_nothing() {
    let h = Harness::start().await;
    let run = reviewed_pr(&h).await;
    // A new push after the review: the clicked run is about head1, the branch is at head2.
    h.github.commit(
        REPO,
        "head2",
        &[
            ("README.md", "hello again\n"),
            ("deploy/web.yaml", INSECURE),
            (".github/workflows/pod.yaml", POD_IN_A_WORKFLOW_DIR),
        ],
    );
    h.github.push(REPO, 7, "head2");
    h.github.set_permission("alice", "write");
    h.deliver("check_run", &button_event(&run, "apply_all_fixes", "alice"))
        .await;
    assert!(git_writes(&h.github.calls()).is_empty());
    let replies = h.github.take_comments();
    assert_eq!(replies.len(), 1);
    assert!(
        replies[0]
            .body
            .contains("belongs to the check run of an older commit"),
        "{}",
        replies[0].body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_branch_is_reported_not_retried_as_a_race() {
    let h = Harness::start().await;
    let _ = reviewed_pr(&h).await;
    h.github.set_permission("alice", "write");
    // GitHub refuses the update (a protected branch) while the head stays where it was.
    h.github
        .fail(http::Method::PATCH, "/git/refs/heads/", 422, &[], 1);
    comment(&h, 7, "alice", "/kubeharden fix").await;
    assert_eq!(h.github.made_commits().len(), 1, "one attempt, no rounds");
    assert_eq!(h.github.pr_head(REPO, 7), "head1");
    let replies = h.github.take_comments();
    assert_eq!(replies.len(), 1);
    assert!(
        replies[0]
            .body
            .contains("GitHub refused to move the branch `feature-7`"),
        "{}",
        replies[0].body
    );
    assert_eq!(h.github.reactions().last().unwrap().1, "confused");
}
