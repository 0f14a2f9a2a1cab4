//! `/mutate`: the safe fixes as an RFC 6902 JSON Patch. Applying it (with the json-patch
//! crate) gives the object `kubeharden fix` gives for the same manifest; a second mutation
//! patches nothing.

use base64::Engine as _;
use kubeharden_core::fix::fix_file;
use kubeharden_core::lint::Linter;
use kubeharden_core::rules::{Applicability, Registry};
use kubeharden_core::source::SourceFile;
use kubeharden_core::yaml::{self, Limits};
use serde_json::{Value, json};

use crate::fixtures::fixture_objects;
use crate::support::{Client, Pki, TestServer, bare_pod, judge, review};

/// The object after the patch of a mutation response (the object itself without one).
fn patched(object: &Value, response: &Value) -> Value {
    assert_eq!(
        response["allowed"], true,
        "mutation never denies: {response}"
    );
    let Some(patch) = response["patch"].as_str() else {
        assert!(response.get("patchType").is_none());
        return object.clone();
    };
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    let mut out = object.clone();
    json_patch::patch(&mut out, &patch).unwrap();
    out
}

/// `kubeharden fix` on a manifest, read back as JSON.
fn fixed_by_cli(
    registry: &Registry,
    settings: &kubeharden_core::lint::Settings,
    manifest: &str,
    min: Applicability,
) -> Value {
    let linter = Linter::new(registry, settings.clone());
    let result = fix_file(&linter, &SourceFile::new("object.yaml", manifest), min).unwrap();
    let stream = yaml::parse(&result.fixed, &Limits::default());
    let doc = stream
        .documents
        .iter()
        .find(|d| d.root().is_some())
        .unwrap();
    yaml::de::from_node(doc, doc.root().unwrap()).unwrap()
}

async fn mutate(client: &mut Client, path: &str, request: &Value) -> Value {
    let object = request["request"]["object"].clone();
    let response = client.review(path, request).await;
    patched(&object, &response)
}

#[tokio::test]
async fn the_patch_gives_what_fix_gives_on_every_rule_fixture_and_converges() {
    let server = TestServer::start(None).await;
    let mut client = server.client().await;
    let registry = Registry::builtin().unwrap();
    let (objects, _) = fixture_objects(&registry);
    let mut problems = Vec::new();
    let mut changed = 0;
    for o in &objects {
        let path = format!("/mutate/{}{}", o.profile, o.query());
        let got = mutate(&mut client, &path, &o.request("CREATE")).await;
        let expected = fixed_by_cli(&registry, &o.settings, &o.manifest, Applicability::Safe);
        if got != expected {
            problems.push(format!(
                "{}:\n  webhook {got}\n  fix     {expected}",
                o.name
            ));
            continue;
        }
        if got != o.object {
            changed += 1;
        }
        let mut again = o.request("CREATE");
        again["request"]["object"] = got.clone();
        let response = client.review(&path, &again).await;
        if response.get("patch").is_some() {
            problems.push(format!(
                "{}: a second mutation patched again: {response}",
                o.name
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(changed > 50, "only {changed} objects were changed by a fix");
}

#[tokio::test]
async fn unsafe_fixes_only_when_configured_and_never_on_update() {
    let privileged = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "agent", "namespace": "team-a"},
        "spec": {"hostPID": true, "containers": [{"name": "a", "image": "agent:1", "securityContext": {"privileged": true}}]}
    });
    let safe = TestServer::start(None).await;
    let mut client = safe.client().await;
    let got = mutate(
        &mut client,
        "/mutate/nsa",
        &review("CREATE", &privileged, None),
    )
    .await;
    assert_eq!(got["spec"]["hostPID"], true, "removing hostPID is unsafe");
    assert_eq!(
        got["spec"]["containers"][0]["securityContext"]["privileged"],
        true
    );
    assert_eq!(
        got["spec"]["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    // Never allowPrivilegeEscalation: false beside privileged: true (the API server rejects it).
    assert!(
        got["spec"]["containers"][0]["securityContext"]
            .get("allowPrivilegeEscalation")
            .is_none(),
        "{got}"
    );

    let bold = TestServer::start(Some("admission:\n  unsafe-fixes: true\n")).await;
    let mut client = bold.client().await;
    let got = mutate(
        &mut client,
        "/mutate/nsa",
        &review("CREATE", &privileged, None),
    )
    .await;
    let registry = Registry::builtin().unwrap();
    let manifest = serde_json::to_string(&privileged).unwrap();
    let expected = fixed_by_cli(
        &registry,
        &Default::default(),
        &manifest,
        Applicability::Unsafe,
    );
    assert_eq!(got, expected);
    assert!(got["spec"].get("hostPID").is_none(), "{got}");

    // An UPDATE is never mutated: running workloads change only by their owners' hands.
    let response = client
        .review(
            "/mutate/nsa",
            &review("UPDATE", &bare_pod("web"), Some(&bare_pod("web"))),
        )
        .await;
    assert!(response.get("patch").is_none(), "{response}");
    assert_eq!(response["allowed"], true);
}

/// A loopback server that accepts connections and never answers: a registry that stalls.
async fn stalling_registry() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr.to_string()
}

/// The webhook with registry access to these loopback registries, waiting `budget` per
/// request.
async fn with_registry_access(domains: &[&str], budget: std::time::Duration) -> TestServer {
    let hosts: Vec<String> = domains.iter().map(|d| d.to_string()).collect();
    let mut client =
        kubeharden::oci::OciClient::new(Default::default(), std::time::Duration::from_secs(5))
            .unwrap();
    client.set_insecure_http_hosts(hosts.clone());
    client.guard_network(hosts);
    let inspector = kubeharden::admission::images::ImageInspector::new(
        std::sync::Arc::new(client),
        budget,
        kubeharden_core::facts::DEFAULT_PLATFORM.into(),
    );
    TestServer::start_with_images(Pki::new(), judge(None), Some(inspector)).await
}

fn pod_with(name: &str, image: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "team-a"},
        "spec": {"containers": [{"name": "app", "image": image}]}
    })
}

fn runs_as_non_root(pod: &Value) -> bool {
    [
        "/spec/securityContext/runAsNonRoot",
        "/spec/containers/0/securityContext/runAsNonRoot",
    ]
    .iter()
    .any(|p| pod.pointer(p) == Some(&json!(true)))
}

/// With `--registry-access`, `/mutate` makes the image decision `fix --inspect-images` makes,
/// against Debian's real docker-registry: `runAsNonRoot: true` is a safe patch for an image
/// that runs as UID 1000, and no patch sets it for a root image (it would stop the pod).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_registry_access_a_numeric_user_image_gets_run_as_non_root_and_a_root_image_not() {
    let Some(registry) = crate::registry::start_registry().await else {
        return;
    };
    let (base, domain) = (&registry.base, &registry.domain);
    let empty = crate::registry::layer(&[]);
    crate::registry::tag(
        base,
        "numeric",
        "1",
        r#"{"User":"1000"}"#,
        std::slice::from_ref(&empty),
    )
    .await;
    crate::registry::tag(base, "root", "1", r#"{}"#, &[empty]).await;
    let server = with_registry_access(&[domain], std::time::Duration::from_secs(5)).await;
    let mut client = server.client().await;
    let plain = TestServer::start(None).await;
    let mut plain_client = plain.client().await;

    let numeric = pod_with("numeric", &format!("{domain}/numeric:1"));
    // Without registry access runAsNonRoot is an unsafe fix, which mutation leaves out.
    let blind = mutate(
        &mut plain_client,
        "/mutate/restricted",
        &review("CREATE", &numeric, None),
    )
    .await;
    assert!(!runs_as_non_root(&blind), "{blind}");
    let got = mutate(
        &mut client,
        "/mutate/restricted",
        &review("CREATE", &numeric, None),
    )
    .await;
    assert!(runs_as_non_root(&got), "{got}");
    // Only that differs from the mutation without the image's configuration.
    let mut without = got.clone();
    for p in [
        "/spec/securityContext",
        "/spec/containers/0/securityContext",
    ] {
        if let Some(Value::Object(m)) = without.pointer_mut(p) {
            m.remove("runAsNonRoot");
        }
    }
    assert_eq!(without, blind);
    // Mutating the mutated object patches nothing (answered from the cache).
    let again = mutate(
        &mut client,
        "/mutate/restricted",
        &review("CREATE", &got, None),
    )
    .await;
    assert_eq!(again, got);

    let root = pod_with("root", &format!("{domain}/root:1"));
    let got = mutate(
        &mut client,
        "/mutate/restricted",
        &review("CREATE", &root, None),
    )
    .await;
    assert!(!runs_as_non_root(&got), "{got}");
    // The 65532 user is an unsafe fix: not in a safe mutation either.
    assert!(!got.to_string().contains("65532"), "{got}");
    let blind = mutate(
        &mut plain_client,
        "/mutate/restricted",
        &review("CREATE", &root, None),
    )
    .await;
    assert_eq!(got, blind);
}

/// A registry that does not answer within the budget: the mutation answers in time, as it
/// does without registry access.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalling_registry_costs_the_budget_and_no_more() {
    let stall = stalling_registry().await;
    let server = with_registry_access(&[&stall], std::time::Duration::from_millis(300)).await;
    let mut client = server.client().await;
    let plain = TestServer::start(None).await;
    let mut plain_client = plain.client().await;
    let pod = pod_with("stalled", &format!("{stall}/app:1"));
    let started = std::time::Instant::now();
    let got = mutate(
        &mut client,
        "/mutate/restricted",
        &review("CREATE", &pod, None),
    )
    .await;
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(3), "{took:?}");
    let blind = mutate(
        &mut plain_client,
        "/mutate/restricted",
        &review("CREATE", &pod, None),
    )
    .await;
    assert_eq!(got, blind);
    // Validation never waits for registries.
    let started = std::time::Instant::now();
    client
        .review(
            "/validate/warn/restricted",
            &review("CREATE", &pod_with("v", &format!("{stall}/other:1")), None),
        )
        .await;
    assert!(started.elapsed() < std::time::Duration::from_millis(300));
}
