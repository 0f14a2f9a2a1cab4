//! Kustomize roots fixed where the user edits, with the real `kubectl kustomize`: the patch
//! that sets a value, a base two overlays share (one edit), `images:` entries, remote bases.
//! Skipped when the tools are missing, unless `KUBEHARDEN_REQUIRE_RENDER=1`.

use serde_json::Value;

use super::kubeharden;
use super::render::{lint_json, tools, write};

const DEPLOY: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  selector:\n    matchLabels: {app: api}\n  template:\n    metadata:\n      labels: {app: api}\n    spec:\n      containers:\n        - name: api # the service\n          image: ghcr.io/acme/api\n          securityContext:\n            privileged: true\n";

fn findings_of<'a>(findings: &'a [Value], rule: &str) -> Vec<&'a Value> {
    findings.iter().filter(|f| f["rule"] == rule).collect()
}

#[test]
fn an_images_entry_that_pins_the_tag_leaves_no_mutable_tag_finding_and_one_that_does_not_owns_it() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            ("base/kustomization.yaml", "resources: [deploy.yaml]\n"),
            ("base/deploy.yaml", DEPLOY),
            (
                "prod/kustomization.yaml",
                "resources: [../base]\nimages:\n  - name: ghcr.io/acme/api\n    newTag: 2.4.1\n",
            ),
            (
                "dev/kustomization.yaml",
                "resources: [../base]\nnamePrefix: dev-\nimages:\n  - name: ghcr.io/acme/api\n    newTag: latest\n",
            ),
        ],
    );
    let (findings, _) = lint_json(dir.path(), &[]);
    let mutable = findings_of(&findings, "image-tag-mutable");
    // The base is no root of its own: its untagged image is what the overlays make of it.
    assert_eq!(mutable.len(), 1, "{mutable:#?}");
    assert_eq!(mutable[0]["root"], "dev");
    assert_eq!(mutable[0]["path"], "dev/kustomization.yaml");
    assert_eq!(mutable[0]["line"], 5);
}

#[test]
fn a_base_two_overlays_render_is_reported_once_with_both_roots() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            ("base/kustomization.yaml", "resources: [deploy.yaml]\n"),
            (
                "base/deploy.yaml",
                &DEPLOY.replace("ghcr.io/acme/api\n", "ghcr.io/acme/api:2.4.1\n"),
            ),
            (
                "prod/kustomization.yaml",
                "resources: [../base]\nnamePrefix: prod-\n",
            ),
            (
                "staging/kustomization.yaml",
                "resources:\n- ../base\nnamespace: staging\n",
            ),
        ],
    );
    let (findings, _) = lint_json(dir.path(), &[]);
    let privileged = findings_of(&findings, "privileged-container");
    assert_eq!(privileged.len(), 1, "{findings:#?}");
    let p = privileged[0];
    assert_eq!(
        (&p["path"], &p["line"]),
        (&Value::from("base/deploy.yaml"), &Value::from(16))
    );
    assert_eq!(p["root"], "prod");
    assert_eq!(
        p["also_rendered_in"],
        serde_json::json!([{"root": "staging", "variant": "kustomization.yaml"}])
    );
    let text = kubeharden(&["lint", "."], dir.path());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("[rendered from prod (kustomization.yaml), staging (kustomization.yaml)]"),
        "{text}"
    );
}

/// Two overlays of one base, one of which patches the pod spec: that overlay's pod-level
/// finding is placed at its patch, the other's at the base. Planned one overlay at a time, the
/// two proposed different edits of the base, and the second was left out ("two fixes edit the
/// same bytes"), its finding unfixed. Planned and confirmed as one group, every finding goes.
#[test]
fn overlays_that_share_a_base_are_fixed_together() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = DEPLOY
        .replace("ghcr.io/acme/api\n", "ghcr.io/acme/api:2.4.1\n")
        .replace(
            "          securityContext:\n            privileged: true\n",
            "      volumes:\n        - name: data\n          emptyDir: {}\n",
        );
    write(
        dir.path(),
        &[
            ("base/kustomization.yaml", "resources: [deploy.yaml]\n"),
            ("base/deploy.yaml", &base),
            (
                "prod/kustomization.yaml",
                "resources: [../base]\npatches:\n  - path: volume.yaml\nnamePrefix: prod-\n",
            ),
            (
                "prod/volume.yaml",
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  template:\n    spec:\n      volumes:\n        - name: data\n          emptyDir: {medium: Memory}\n",
            ),
            (
                "staging/kustomization.yaml",
                "resources: [../base]\nnamePrefix: staging-\n",
            ),
        ],
    );
    let (before, _) = lint_json(dir.path(), &[]);
    let token = findings_of(&before, "service-account-token-mounted");
    let mut roots: Vec<&str> = token.iter().map(|f| f["root"].as_str().unwrap()).collect();
    roots.sort();
    assert_eq!(roots, ["prod", "staging"], "{token:#?}");
    let out = kubeharden(&["fix", "--write", "--unsafe-fixes", "."], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("left out"), "{stderr}");
    assert!(!stderr.contains("not confirmed"), "{stderr}");
    let (after, _) = lint_json(dir.path(), &[]);
    let fixed: Vec<&Value> = after
        .iter()
        .filter(|f| {
            before
                .iter()
                .any(|b| b["fixable"] == true && b["rule"] == f["rule"])
        })
        .collect();
    assert!(fixed.is_empty(), "{stderr}\n{fixed:#?}");
    assert!(
        findings_of(&after, "service-account-token-mounted").is_empty(),
        "{after:#?}"
    );
}
