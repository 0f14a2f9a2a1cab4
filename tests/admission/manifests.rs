//! `kubeharden admission manifests` and deploy/admission/: what the API server will accept and
//! route, checked entry by entry.

use std::process::Command;

use kubeharden_core::yaml::{self, Limits};
use serde_json::Value;

use crate::support::{TestServer, bare_pod, review};

fn generated(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kubeharden"))
        .args(["admission", "manifests"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn documents(text: &str) -> Vec<Value> {
    let stream = yaml::parse(text, &Limits::default());
    assert!(stream.errors.is_empty(), "{:?}", stream.errors);
    stream
        .documents
        .iter()
        .filter_map(|d| d.root().map(|r| yaml::de::from_node(d, r).unwrap()))
        .collect()
}

/// Kubernetes' check of a service path: each segment a DNS-1123 subdomain.
fn valid_service_path(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    rest.trim_end_matches('/').split('/').all(|s| {
        !s.is_empty()
            && s.len() <= 253
            && s.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    })
}

#[test]
fn deploy_admission_holds_what_the_command_prints() {
    let file = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/admission/webhooks.yaml"),
    )
    .unwrap();
    assert_eq!(
        file,
        generated(&[]),
        "regenerate with `kubeharden admission manifests > deploy/admission/webhooks.yaml`"
    );
}

#[test]
fn every_pod_bearing_kind_is_sent_to_the_webhook() {
    assert!(kubeharden::admission::manifests::unrouted_kinds().is_empty());
}

#[tokio::test]
async fn every_entry_is_valid_and_routes_to_a_path_the_server_answers() {
    let text = generated(&["--version", "1.30", "--namespace", "guard"]);
    let docs = documents(&text);
    assert_eq!(docs.len(), 2);
    let server = TestServer::start(None).await;
    let mut client = server.client().await;
    let mut names = std::collections::BTreeSet::new();
    for doc in &docs {
        let kind = doc["kind"].as_str().unwrap();
        assert_eq!(
            doc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            "guard/kubeharden-admission"
        );
        let webhooks = doc["webhooks"].as_array().unwrap();
        let expected = if kind == "ValidatingWebhookConfiguration" {
            3 * 3 * 2
        } else {
            3 * 2
        };
        assert_eq!(webhooks.len(), expected, "{kind}");
        for w in webhooks {
            let name = w["name"].as_str().unwrap();
            assert!(names.insert(name.to_string()), "{name} twice");
            assert_eq!(
                w["sideEffects"], "None",
                "{name}: needed for dry-run requests"
            );
            let timeout = w["timeoutSeconds"].as_u64().unwrap();
            assert!((1..=30).contains(&timeout), "{name}");
            let path = w["clientConfig"]["service"]["path"].as_str().unwrap();
            assert!(
                valid_service_path(path),
                "{name}: {path} is not a valid service path"
            );
            let enforce = path.starts_with("/validate/enforce/");
            assert_eq!(
                w["failurePolicy"],
                if enforce { "Fail" } else { "Ignore" },
                "{name}"
            );
            let selector = serde_json::to_string(&w["namespaceSelector"]).unwrap();
            assert!(
                selector.contains(r#"{"key":"kubernetes.io/metadata.name","operator":"NotIn","values":["kube-system","guard"]}"#),
                "{name}: {selector}"
            );
            let resources: Vec<&str> = w["rules"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|r| {
                    r["resources"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_str().unwrap())
                })
                .collect();
            assert!(resources.contains(&"deployments") && resources.contains(&"cronjobs"));
            assert_eq!(
                resources.contains(&"pods/ephemeralcontainers"),
                kind == "ValidatingWebhookConfiguration",
                "{name}"
            );
            assert!(
                w["matchConditions"]
                    .as_array()
                    .is_some_and(|m| !m.is_empty())
            );
            let mut pod = bare_pod("web");
            pod["spec"]["hostPID"] = Value::Bool(true);
            let answer = client.review(path, &review("CREATE", &pod, None)).await;
            // Baseline has no safe fix for hostPID; restricted and nsa add seccomp and more.
            if path.starts_with("/mutate/") && !path.contains("baseline") {
                assert!(answer.get("patch").is_some(), "{name}: {answer}");
            }
            assert_eq!(answer["allowed"], !enforce, "{name} at {path}: {answer}");
        }
    }
}

/// (API group, resource) of every rule of a webhook entry.
fn routes(webhook: &Value) -> std::collections::BTreeSet<(String, String)> {
    let mut out = std::collections::BTreeSet::new();
    for rule in webhook["rules"].as_array().unwrap() {
        assert_eq!(rule["apiVersions"], serde_json::json!(["*"]));
        for g in rule["apiGroups"].as_array().unwrap() {
            for r in rule["resources"].as_array().unwrap() {
                out.insert((g.as_str().unwrap().into(), r.as_str().unwrap().into()));
            }
        }
    }
    out
}

fn webhooks(text: &str) -> Vec<Value> {
    documents(text)
        .iter()
        .flat_map(|d| d["webhooks"].as_array().unwrap().clone())
        .collect()
}

fn yaml_object(text: &str) -> Value {
    documents(text).into_iter().next().unwrap()
}

/// Cluster-scoped kinds among the shipped ones: no namespace label can route them.
const CLUSTER_SCOPED: [&str; 3] = [
    "ClusterWorkflowTemplate",
    "ClusterTrainingRuntime",
    "ClusterTask",
];

/// Every operator kind the linter ships has a fixture (core/tests/workloads.rs checks that);
/// each namespaced one must reach the webhook under its resource, its CRD's plural (the kind
/// in lower case plus `s` for all of these), and the server must find its pods.
#[tokio::test]
async fn operators_kinds_are_routed_by_their_resources_and_judged_at_their_pods() {
    let text = generated(&[]);
    let entries = webhooks(&text);
    let server = TestServer::start(None).await;
    let mut client = server.client().await;
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("core/tests/fixtures/workloads");
    let mut checked = 0;
    for group in std::fs::read_dir(&dir).unwrap() {
        let group = group.unwrap().path();
        let group_name = group.file_name().unwrap().to_str().unwrap().to_string();
        for file in std::fs::read_dir(&group).unwrap() {
            let file = file.unwrap().path();
            let kind = file.file_stem().unwrap().to_str().unwrap().to_string();
            let route = (group_name.clone(), format!("{}s", kind.to_lowercase()));
            if CLUSTER_SCOPED.contains(&kind.as_str()) {
                assert!(
                    entries.iter().all(|w| !routes(w).contains(&route)),
                    "{kind}"
                );
                assert!(
                    text.contains(&format!("{kind}.{group_name}")),
                    "{kind} not named as unsent"
                );
                continue;
            }
            for w in &entries {
                assert!(
                    routes(w).contains(&route),
                    "{} does not route {route:?}",
                    w["name"]
                );
            }
            let source = std::fs::read_to_string(&file).unwrap();
            let privileged: usize = source
                .lines()
                .find_map(|l| l.strip_prefix("# privileged containers: "))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let object = yaml_object(&source);
            assert_eq!(object["kind"], kind.as_str());
            let answer = client
                .review(
                    "/validate/enforce/baseline",
                    &review("CREATE", &object, None),
                )
                .await;
            let message = answer["status"]["message"].as_str().unwrap_or_default();
            assert_eq!(answer["allowed"], false, "{group_name}/{kind}: {answer}");
            assert_eq!(
                message.matches("\n- privileged-container:").count(),
                privileged,
                "{group_name}/{kind}: {message}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 25, "{checked} operator kinds checked");
}

const RUNNER_CONFIG: &str = "workloads:
  - groups: [ci.example.com]
    kinds: [Runner]
    resources: {Runner: runners}
    pods:
      - template: spec.worker.template
";

fn runner(replicas: u64) -> Value {
    serde_json::json!({
        "apiVersion": "ci.example.com/v1", "kind": "Runner",
        "metadata": {"name": "build", "namespace": "ci"},
        "spec": {"replicas": replicas, "worker": {"template": {"spec": {"containers": [{
            "name": "job", "image": "registry.example/builder:1.0",
            "securityContext": {"privileged": true}
        }]}}}}
    })
}

/// A kind of the server's `--config` is routed by `manifests --config`, and the server
/// finds its pod where the configuration says; an UPDATE that only scales it passes.
#[tokio::test]
async fn a_configured_kind_is_routed_and_judged_at_its_pod() {
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), RUNNER_CONFIG).unwrap();
    let path = config.path().to_str().unwrap();
    let text = generated(&["--config", path]);
    assert!(text.contains(&format!("--config {path}`")), "{text}");
    let route = ("ci.example.com".to_string(), "runners".to_string());
    for w in webhooks(&text) {
        assert!(routes(&w).contains(&route), "{}", w["name"]);
    }
    assert!(
        webhooks(&generated(&[]))
            .iter()
            .all(|w| !routes(w).contains(&route))
    );

    let server = TestServer::start(Some(RUNNER_CONFIG)).await;
    let mut client = server.client().await;
    let answer = client
        .review(
            "/validate/enforce/baseline",
            &review("CREATE", &runner(1), None),
        )
        .await;
    assert_eq!(answer["allowed"], false, "{answer}");
    let message = answer["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("privileged-container")
            && message.contains("spec.worker.template.spec.containers[0]"),
        "{message}"
    );
    let scaled = client
        .review(
            "/validate/enforce/baseline",
            &review("UPDATE", &runner(3), Some(&runner(1))),
        )
        .await;
    assert_eq!(scaled["allowed"], true, "{scaled}");
    // Without the configuration the kind is not known, so not judged.
    let plain = TestServer::start(None).await;
    let answer = plain
        .client()
        .await
        .review(
            "/validate/enforce/baseline",
            &review("CREATE", &runner(1), None),
        )
        .await;
    assert_eq!(answer["allowed"], true, "{answer}");
}
