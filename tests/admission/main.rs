//! The admission webhook over real HTTPS with a test CA: AdmissionReview v1 requests built
//! after the Kubernetes API reference, answered by the same engine as `kubeharden lint`.

mod binary;
mod fixtures;
mod hostile;
mod manifests;
mod mutation;
#[path = "../registry/mod.rs"]
mod registry;
mod support;

use serde_json::{Value, json};
use support::{TestServer, bare_pod, hardened_pod, review};

fn messages(response: &Value) -> String {
    response["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn enforce_denies_with_every_finding_named() {
    let server = TestServer::start(None).await;
    let mut client = server.client().await;
    let r = client
        .review(
            "/validate/enforce/restricted",
            &review("CREATE", &bare_pod("web"), None),
        )
        .await;
    assert_eq!(r["allowed"], false);
    assert_eq!(r["status"]["code"], 403);
    let message = messages(&r);
    for rule in [
        "privilege-escalation-allowed",
        "capabilities-not-dropped",
        "run-as-root-allowed",
        "seccomp-profile-missing",
    ] {
        let line = message
            .lines()
            .find(|l| l.starts_with(&format!("- {rule}:")))
            .unwrap_or_else(|| panic!("{rule} missing from\n{message}"));
        assert!(line.contains("container \"web\""), "{line}");
        assert!(line.contains("field spec.containers[0]"), "{line}");
        assert!(line.contains("; fix: "), "{line}");
        assert!(line.contains(&format!("docs/rules/{rule}.md")), "{line}");
    }
    // nsa-only rules are not part of restricted.
    assert!(!message.contains("writable-root-filesystem"), "{message}");
}

#[tokio::test]
async fn a_hardened_pod_is_allowed_without_warnings() {
    let server = TestServer::start(None).await;
    let mut client = server.client().await;
    for path in [
        "/validate/enforce/nsa",
        "/validate/warn/nsa",
        "/validate/audit/nsa",
    ] {
        let r = client
            .review(path, &review("CREATE", &hardened_pod("web"), None))
            .await;
        assert_eq!(r["allowed"], true, "{path}: {r}");
        assert!(r.get("warnings").is_none(), "{path}: {r}");
        assert!(r.get("auditAnnotations").is_none(), "{path}: {r}");
    }
}

#[tokio::test]
async fn warn_allows_with_warnings_and_audit_with_annotations() {
    let server = TestServer::start(None).await;
    let mut client = server.client().await;
    let r = client
        .review(
            "/validate/warn/baseline",
            &review("CREATE", &privileged_pod(), None),
        )
        .await;
    assert_eq!(r["allowed"], true);
    let warnings: Vec<&str> = r["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("kubeharden: privileged-container:")),
        "{warnings:?}"
    );
    assert!(warnings.iter().all(|w| w.chars().count() <= 256));
    let r = client
        .review(
            "/validate/audit/baseline",
            &review("CREATE", &privileged_pod(), None),
        )
        .await;
    assert_eq!(r["allowed"], true);
    assert!(r.get("warnings").is_none());
    let annotations = r["auditAnnotations"].as_object().unwrap();
    assert!(
        annotations.contains_key("privileged-container"),
        "{annotations:?}"
    );
    assert!(annotations.contains_key("host-network"), "{annotations:?}");
}

fn privileged_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "agent", "namespace": "team-a"},
        "spec": {"hostNetwork": true, "containers": [
            {"name": "agent", "image": "agent:1", "securityContext": {"privileged": true}}
        ]}
    })
}

fn deployment(replicas: u64, pod: &Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "team-a", "generation": 1},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod["spec"].clone()}
        }
    })
}

#[tokio::test]
async fn workloads_are_judged_at_creation_and_updates_that_only_scale_pass() {
    let server = TestServer::start(None).await;
    let mut client = server.client().await;
    let d = deployment(2, &bare_pod("x"));
    let r = client
        .review("/validate/enforce/restricted", &review("CREATE", &d, None))
        .await;
    assert_eq!(
        r["allowed"], false,
        "a Deployment is refused when it is created"
    );
    assert!(messages(&r).contains("field spec.template.spec.containers[0]"));
    // Admitted under older rules, scaled now: allowed.
    let scaled = deployment(5, &bare_pod("x"));
    let r = client
        .review(
            "/validate/enforce/restricted",
            &review("UPDATE", &scaled, Some(&d)),
        )
        .await;
    assert_eq!(r["allowed"], true, "{r}");
    // An UPDATE that changes the pod spec is judged.
    let mut changed = scaled.clone();
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.28");
    let r = client
        .review(
            "/validate/enforce/restricted",
            &review("UPDATE", &changed, Some(&d)),
        )
        .await;
    assert_eq!(r["allowed"], false, "{r}");
    // DELETE carries no object to judge.
    let mut delete = review("DELETE", &d, None);
    delete["request"]["object"] = Value::Null;
    delete["request"]["oldObject"] = d.clone();
    let r = client.review("/validate/enforce/restricted", &delete).await;
    assert_eq!(r["allowed"], true);
}

#[tokio::test]
async fn a_cronjob_is_judged_at_its_pod_template() {
    let server = TestServer::start(None).await;
    let mut client = server.client().await;
    let cron = json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "nightly", "namespace": "team-a"},
        "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "OnFailure",
            "hostPID": true,
            "containers": [{"name": "job", "image": "busybox:1"}]
        }}}}}
    });
    let r = client
        .review("/validate/enforce/baseline", &review("CREATE", &cron, None))
        .await;
    assert_eq!(r["allowed"], false);
    assert!(messages(&r).contains("host-pid: "), "{}", messages(&r));
    assert!(messages(&r).contains("field spec.jobTemplate.spec.template.spec"));
}

#[tokio::test]
async fn a_privileged_ephemeral_container_is_refused() {
    let server = TestServer::start(None).await;
    let mut client = server.client().await;
    let old = hardened_pod("web");
    let mut debugged = old.clone();
    debugged["spec"]["ephemeralContainers"] = json!([{
        "name": "debugger", "image": "busybox:1", "targetContainerName": "web",
        "securityContext": {"privileged": true}
    }]);
    let mut r = review("UPDATE", &debugged, Some(&old));
    r["request"]["subResource"] = json!("ephemeralcontainers");
    r["request"]["resource"]["resource"] = json!("pods");
    let answer = client.review("/validate/enforce/baseline", &r).await;
    assert_eq!(answer["allowed"], false, "{answer}");
    assert!(
        messages(&answer).contains("container \"debugger\""),
        "{answer}"
    );
    // The status subresource is not the pod's specification.
    r["request"]["subResource"] = json!("status");
    let answer = client.review("/validate/enforce/baseline", &r).await;
    assert_eq!(answer["allowed"], true);
}

#[tokio::test]
async fn dry_run_gets_the_same_answer() {
    let server = TestServer::start(None).await;
    let mut client = server.client().await;
    let mut r = review("CREATE", &bare_pod("web"), None);
    let real = client.review("/validate/enforce/nsa", &r).await;
    r["request"]["dryRun"] = json!(true);
    let dry = client.review("/validate/enforce/nsa", &r).await;
    assert_eq!(real, dry);
}

#[tokio::test]
async fn the_version_in_the_path_chooses_the_controls() {
    let server = TestServer::start(None).await;
    let mut client = server.client().await;
    // allowPrivilegeEscalation exists from 1.8, capabilities-not-dropped from 1.22 and the
    // seccomp control from 1.19: on 1.7 none of them applies.
    let pod = bare_pod("web");
    let newest = client
        .review("/validate/audit/nsa", &review("CREATE", &pod, None))
        .await;
    let old = client
        .review(
            "/validate/audit/nsa?version=1.7",
            &review("CREATE", &pod, None),
        )
        .await;
    for rule in [
        "privilege-escalation-allowed",
        "capabilities-not-dropped",
        "seccomp-profile-missing",
    ] {
        assert!(newest["auditAnnotations"].get(rule).is_some(), "{newest}");
        assert!(old["auditAnnotations"].get(rule).is_none(), "{old}");
    }
    // The form the generated webhook configurations use: a path segment, not a query.
    let pinned = client
        .review("/validate/audit/nsa/1.7", &review("CREATE", &pod, None))
        .await;
    assert_eq!(pinned["auditAnnotations"], old["auditAnnotations"]);
    let (status, body) = client
        .request("POST", "/validate/audit/nsa?version=banana", b"{}".to_vec())
        .await;
    assert_eq!(status, 400, "{body:?}");
}

#[tokio::test]
async fn static_exemptions_allow_and_say_why() {
    let config = r#"
admission:
  exemptions:
    namespaces: [{name: monitoring, reason: node agents need host access}]
    usernames: [{name: "system:serviceaccount:kube-system:replicaset-controller", reason: controllers create pods already judged as workloads}]
    groups: [{name: "break-glass", reason: incident response}]
    runtime-classes: [{name: gvisor, reason: sandboxed}]
"#;
    let server = TestServer::start(Some(config)).await;
    let mut client = server.client().await;
    let path = "/validate/enforce/baseline";
    let base = review("CREATE", &privileged_pod(), None);
    let denied = client.review(path, &base).await;
    assert_eq!(denied["allowed"], false);

    let mut r = base.clone();
    r["request"]["namespace"] = json!("monitoring");
    let a = client.review(path, &r).await;
    assert_eq!(a["allowed"], true);
    assert_eq!(
        a["auditAnnotations"]["exempt"],
        "namespace monitoring: node agents need host access"
    );

    let mut r = base.clone();
    r["request"]["userInfo"]["username"] =
        json!("system:serviceaccount:kube-system:replicaset-controller");
    assert_eq!(client.review(path, &r).await["allowed"], true);

    let mut r = base.clone();
    r["request"]["userInfo"]["groups"] = json!(["system:authenticated", "break-glass"]);
    assert_eq!(client.review(path, &r).await["allowed"], true);

    let mut r = base.clone();
    r["request"]["object"]["spec"]["runtimeClassName"] = json!("gvisor");
    let a = client.review(path, &r).await;
    assert_eq!(a["allowed"], true);
    assert_eq!(
        a["auditAnnotations"]["exempt"],
        "runtime class gvisor: sandboxed"
    );
}

#[test]
fn an_exemption_without_a_reason_is_refused_at_start() {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        file.path(),
        "admission:\n  exemptions:\n    namespaces:\n      - {name: ci, reason: \"\"}\n",
    )
    .unwrap();
    let err = kubeharden::admission::review::Judge::load(
        Some(file.path()),
        kubeharden_core::rules::Registry::builtin().unwrap(),
    )
    .err()
    .expect("a reason is required");
    let text = format!("{err:#}");
    assert!(
        text.contains(":4:9: `admission.exemptions.namespaces[0]`: `reason` is empty"),
        "{text}"
    );
}

#[tokio::test]
async fn exemption_annotations_work_as_in_the_linter() {
    let server = TestServer::start(None).await;
    let mut client = server.client().await;
    let mut pod = privileged_pod();
    pod["metadata"]["annotations"] = json!({
        "kubeharden.dev/ignore": "privileged-container,host-network",
        "kubeharden.dev/ignore-reason": "a node agent"
    });
    let r = client
        .review("/validate/enforce/baseline", &review("CREATE", &pod, None))
        .await;
    assert_eq!(r["allowed"], true, "{r}");
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let server = TestServer::start(None).await;
    let mut client = server.client().await;
    assert_eq!(client.get("/healthz").await.0, 200);
    assert_eq!(client.get("/readyz").await.0, 200);
    client
        .review(
            "/validate/enforce/restricted",
            &review("CREATE", &bare_pod("web"), None),
        )
        .await;
    let (status, text) = client.get("/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "kubeharden_admission_decisions_total{path=\"enforce\",profile=\"restricted\",namespace=\"team-a\",outcome=\"denied\"} 1\n",
        "kubeharden_admission_findings_total{path=\"enforce\",profile=\"restricted\",namespace=\"team-a\",rule=\"run-as-root-allowed\"} 1\n",
        "kubeharden_admission_duration_seconds_bucket{le=\"10\"} 1\n",
        "kubeharden_admission_duration_seconds_count 1\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

#[tokio::test]
async fn shutdown_is_graceful_and_final() {
    let mut server = TestServer::start(None).await;
    let mut idle = server.client().await;
    assert_eq!(idle.get("/healthz").await.0, 200);
    let started = std::time::Instant::now();
    // An idle keep-alive connection must not hold the shutdown for the whole grace period.
    tokio::time::timeout(std::time::Duration::from_secs(4), server.shutdown())
        .await
        .expect("the server stops within the grace period")
        .unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
    assert!(
        support::Client::try_connect(server.addr, &server.pki.ca_pem)
            .await
            .is_err(),
        "a stopped server accepts no connection"
    );
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let server = TestServer::start(None).await;
    let mut before = server.client().await;
    assert_eq!(before.get("/healthz").await.0, 200);
    // cert-manager renews: the Secret's files now hold a certificate of another CA.
    let dir = tempfile::tempdir().unwrap();
    let new_ca = support::issue(dir.path(), "tls");
    std::fs::copy(dir.path().join("tls.key"), server.pki.key()).unwrap();
    std::fs::copy(dir.path().join("tls.crt"), server.pki.cert()).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if let Ok(mut c) = support::Client::try_connect(server.addr, &new_ca).await {
            assert_eq!(c.get("/healthz").await.0, 200);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        support::Client::try_connect(server.addr, &server.pki.ca_pem)
            .await
            .is_err(),
        "the old certificate is still served"
    );
    // Connections made before the renewal keep working.
    assert_eq!(before.get("/healthz").await.0, 200);
}

#[tokio::test]
async fn a_broken_certificate_pair_keeps_the_old_one() {
    let server = TestServer::start(None).await;
    std::fs::write(server.pki.cert(), "-----BEGIN CERTIFICATE-----\nbroken\n").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let mut client = server.client().await;
    assert_eq!(client.get("/healthz").await.0, 200);
}
