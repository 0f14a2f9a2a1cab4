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
use crate::support::{Client, TestServer, bare_pod, review};

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
