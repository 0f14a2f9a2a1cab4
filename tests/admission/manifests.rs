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
