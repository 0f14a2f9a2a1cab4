//! The app renders pull requests: the head's files from the Git Data API, the charts and
//! kustomizations the change reaches rendered with the real `helm` and Kustomize, findings on
//! the values and patch lines they come from. Skipped when the tools are missing, unless
//! `KUBEHARDEN_REQUIRE_RENDER=1`.

use crate::render_support::tools;
use crate::support::{Harness, REPO, pull_request_event};

const CHART: &str = "apiVersion: v2\nname: web\nversion: 1.0.0\n";
const TEMPLATE: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n        - name: web\n          image: {{ .Values.image }}\n          {{- with .Values.securityContext }}\n          securityContext:\n            {{- toYaml . | nindent 12 }}\n          {{- end }}\n";
const VALUES_BEFORE: &str = "image: nginx:1.27\n\nsecurityContext:\n  runAsNonRoot: true\n  allowPrivilegeEscalation: false\n";
const VALUES_AFTER: &str =
    "image: nginx:1.27\n\nsecurityContext:\n  allowPrivilegeEscalation: false\n";

async fn review(h: &Harness, number: u64, base: &str, head: &str) {
    h.github.open_pr(REPO, number, base, head);
    let status = h
        .deliver(
            "pull_request",
            &pull_request_event("opened", number, base, head),
        )
        .await;
    assert_eq!(status, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_run_as_non_root_from_values_is_a_finding_on_that_values_line() {
    if !tools() {
        return;
    }
    let h = Harness::start().await;
    let chart = |values: &'static str| {
        vec![
            ("charts/web/Chart.yaml", CHART),
            ("charts/web/values.yaml", values),
            ("charts/web/templates/deployment.yaml", TEMPLATE),
            ("README.md", "hello\n"),
        ]
    };
    h.github.commit(REPO, "base1", &chart(VALUES_BEFORE));
    h.github.commit(REPO, "head1", &chart(VALUES_AFTER));
    review(&h, 7, "base1", "head1").await;

    assert_eq!(h.github.tree_listings(), 1);
    let runs = h.github.take_check_runs();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    let summary = run.summary.clone().unwrap_or_default();
    assert!(
        summary.contains("| `charts/web` | values.yaml | rendered |"),
        "{summary}"
    );
    // The finding is on the values key that feeds the container's securityContext, line 3.
    let at: Vec<(String, u64)> = run
        .annotations
        .iter()
        .filter(|a| a["title"] == "KubeHarden [run-as-root-allowed]")
        .map(|a| {
            (
                a["path"].as_str().unwrap().to_string(),
                a["start_line"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(at, [("charts/web/values.yaml".to_string(), 3)], "{run:#?}");
    // The template is linted through the render only: no "skipped Helm template" of its own.
    assert!(
        run.annotations
            .iter()
            .all(|a| a["path"] != "charts/web/templates/deployment.yaml"
                || a["title"] != "KubeHarden [helm-template-skipped]"),
        "{run:#?}"
    );
    let reviews = h.github.take_reviews();
    assert_eq!(reviews.len(), 1);
    let comment = reviews[0]
        .comments
        .iter()
        .find(|c| c.body.contains("run-as-root-allowed"))
        .unwrap_or_else(|| panic!("{:#?}", reviews[0]));
    assert_eq!(comment.path, "charts/web/values.yaml");
    assert!(comment.body.contains("`charts/web`"), "{}", comment.body);
    // A one-click fix of the values file, confirmed by rendering again: committed, the values
    // key that feeds the container's securityContext gets runAsNonRoot back.
    let suggestion = suggestion_of(&comment.body);
    // It lies on the `securityContext` mapping's lines (3 and 4), where the keys go.
    let first = comment.start_line.unwrap_or(comment.line);
    assert!(3 <= first && comment.line <= 4, "{comment:#?}");
    let committed = commit_suggestion(VALUES_AFTER, first, comment.line, &suggestion);
    assert!(
        committed.starts_with("image: nginx:1.27\n\nsecurityContext:\n"),
        "{committed}"
    );
    assert!(
        committed.contains("\n  runAsNonRoot: true\n"),
        "{committed}"
    );
    assert!(
        comment.body.contains("confirmed by rendering again"),
        "{}",
        comment.body
    );
}

/// The text of a comment's suggestion block.
fn suggestion_of(body: &str) -> String {
    let start = body
        .find("```suggestion\n")
        .unwrap_or_else(|| panic!("no suggestion in {body}"))
        + "```suggestion\n".len();
    let end = start
        + body[start..]
            .find("\n```")
            .unwrap_or_else(|| panic!("an open suggestion in {body}"));
    body[start..end].to_string()
}

/// `text` with lines `first..=last` (1-based) replaced by `suggestion`, as GitHub commits it.
fn commit_suggestion(text: &str, first: u64, last: u64, suggestion: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let (a, b) = (first as usize - 1, last as usize);
    let mut out: Vec<&str> = lines[..a].to_vec();
    out.extend(suggestion.lines());
    out.extend(&lines[b..]);
    out.join("\n") + "\n"
}

const DEPLOY: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  selector:\n    matchLabels: {app: api}\n  template:\n    metadata:\n      labels: {app: api}\n    spec:\n      containers:\n        - name: api\n          image: ghcr.io/acme/api:2.4.1\n";
const PATCH_BEFORE: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  template:\n    spec:\n      containers:\n        - name: api\n          securityContext:\n            privileged: false\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_kustomize_patch_gets_its_finding_on_the_patch() {
    if !tools() {
        return;
    }
    let h = Harness::start().await;
    let tree = |patch: &'static str| {
        vec![
            ("base/kustomization.yaml", "resources: [deploy.yaml]\n"),
            ("base/deploy.yaml", DEPLOY),
            (
                "prod/kustomization.yaml",
                "resources: [../base]\npatches:\n  - path: security.yaml\n",
            ),
            ("prod/security.yaml", patch),
        ]
    };
    let after: &'static str = Box::leak(
        PATCH_BEFORE
            .replace("privileged: false", "privileged: true")
            .into_boxed_str(),
    );
    h.github.commit(REPO, "base2", &tree(PATCH_BEFORE));
    h.github.commit(REPO, "head2", &tree(after));
    review(&h, 8, "base2", "head2").await;

    let runs = h.github.take_check_runs();
    let run = &runs[0];
    let summary = run.summary.clone().unwrap_or_default();
    assert!(
        summary.contains("| `prod` | kustomization.yaml | rendered |"),
        "{summary}"
    );
    let reviews = h.github.take_reviews();
    let comment = reviews[0]
        .comments
        .iter()
        .find(|c| c.body.contains("privileged-container"))
        .unwrap_or_else(|| panic!("{:#?}", reviews[0]));
    assert_eq!(
        (comment.path.as_str(), comment.line),
        ("prod/security.yaml", 11)
    );
    // The fix is a suggestion on the patch line that sets the bad value.
    let committed = commit_suggestion(
        after,
        comment.start_line.unwrap_or(comment.line),
        comment.line,
        &suggestion_of(&comment.body),
    );
    assert!(committed.contains("privileged: false"), "{committed}");
    assert!(!committed.contains("privileged: true"), "{committed}");
    // The patch is read by the render; it is not linted on its own as if it were an object.
    let privileged: Vec<&serde_json::Value> = run
        .annotations
        .iter()
        .filter(|a| a["title"] == "KubeHarden [privileged-container]")
        .collect();
    assert_eq!(privileged.len(), 1, "{run:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_kustomize_resource_is_render_skipped_by_name_and_nothing_is_fetched() {
    if !tools() {
        return;
    }
    let h = Harness::start().await;
    let remote = "https://github.com/kubernetes-sigs/kustomize//examples/helloWorld?ref=v5.6.0";
    let kustomization: &'static str =
        Box::leak(format!("resources:\n  - deploy.yaml\n  - {remote}\n").into_boxed_str());
    h.github.commit(REPO, "base3", &[("README.md", "hello\n")]);
    h.github.commit(
        REPO,
        "head3",
        &[
            ("README.md", "hello\n"),
            ("app/kustomization.yaml", kustomization),
            ("app/deploy.yaml", DEPLOY),
        ],
    );
    let started = std::time::Instant::now();
    review(&h, 9, "base3", "head3").await;
    assert!(started.elapsed() < std::time::Duration::from_secs(30));

    let runs = h.github.take_check_runs();
    let run = &runs[0];
    let skipped: Vec<&serde_json::Value> = run
        .annotations
        .iter()
        .filter(|a| a["title"] == "KubeHarden [render-skipped]")
        .collect();
    assert_eq!(skipped.len(), 1, "{run:#?}");
    assert_eq!(skipped[0]["path"], "app/kustomization.yaml");
    assert_eq!(skipped[0]["start_line"], 3);
    assert!(skipped[0]["message"].as_str().unwrap().contains(remote));
    let summary = run.summary.clone().unwrap_or_default();
    assert!(
        summary.contains("| `app` | kustomization.yaml | render-skipped:"),
        "{summary}"
    );
    // The review says so too; the plain resource beside the remote is not linted on its own.
    let reviews = h.github.take_reviews();
    assert_eq!(reviews.len(), 1);
    assert!(
        reviews[0].body.contains("render-skipped"),
        "{}",
        reviews[0].body
    );
    assert!(
        run.annotations
            .iter()
            .all(|a| a["path"] != "app/deploy.yaml"),
        "{run:#?}"
    );
    // Only the app's own GitHub calls: no request for the remote anywhere.
    assert!(
        h.github.calls().iter().all(|c| !c.contains("kustomize")),
        "{:?}",
        h.github.calls()
    );
}
