//! Kustomize roots fixed where the user edits, with the real `kubectl kustomize`: the patch
//! that sets a value, a base two overlays share (one edit), `images:` entries, remote bases.
//! Skipped when the tools are missing, unless `KUBEHARDEN_REQUIRE_RENDER=1`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::render_support::{
    assert_only_hardening_changed, findings, findings_of, kubeharden, kustomize, lint_json,
    read_tree, tools, write,
};

const DEPLOY: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  selector:\n    matchLabels: {app: api}\n  template:\n    metadata:\n      labels: {app: api}\n    spec:\n      containers:\n        - name: api # the service\n          image: ghcr.io/acme/api\n          securityContext:\n            privileged: true\n";

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

/// The rendered findings `before` offered a confirmed fix for that `after` still reports:
/// the same rule, container and object, in any root that renders it.
fn still_reported(before: &[Value], after: &[Value]) -> Vec<String> {
    let renders = |f: &Value| -> Vec<String> {
        std::iter::once(f)
            .chain(f["also_rendered_in"].as_array().into_iter().flatten())
            .map(|r| format!("{} ({})", r["root"], r["variant"]))
            .collect()
    };
    let key = |f: &Value, render: &str| {
        format!("{} {} {} {render}", f["rule"], f["container"], f["kind"])
    };
    let left: std::collections::BTreeSet<String> = after
        .iter()
        .flat_map(|f| {
            renders(f)
                .into_iter()
                .map(|r| key(f, &r))
                .collect::<Vec<_>>()
        })
        .collect();
    before
        .iter()
        .filter(|f| f["fixable"] == true)
        .flat_map(|f| {
            renders(f)
                .into_iter()
                .map(|r| key(f, &r))
                .collect::<Vec<_>>()
        })
        .filter(|k| left.contains(k))
        .collect()
}

/// `fix --write --unsafe-fixes .` in `dir`: its stderr, after checking that every proposal
/// was written (none left out for an overlap, none refused by the second render).
fn fix_write(dir: &std::path::Path) -> String {
    let out = kubeharden(&["fix", "--write", "--unsafe-fixes", "."], dir);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !stderr.contains("left out") && !stderr.contains("not confirmed"),
        "{stderr}"
    );
    stderr
}

/// The files of `after` that differ from `before`, or are new.
fn changed_files(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Vec<String> {
    let gone = before.keys().filter(|p| !after.contains_key(*p));
    assert_eq!(gone.count(), 0, "a file went: {after:#?}");
    after
        .iter()
        .filter(|(p, text)| before.get(*p) != Some(text))
        .map(|(p, _)| p.clone())
        .collect()
}

/// The lines of `old` that `new` lost or changed, and the lines `new` added: everything
/// else is kept byte for byte, in order.
fn line_changes(old: &str, new: &str) -> (Vec<String>, Vec<String>) {
    let diff = similar::TextDiff::from_lines(old, new);
    let (mut removed, mut added) = (Vec::new(), Vec::new());
    for change in diff.iter_all_changes() {
        match change.tag() {
            similar::ChangeTag::Delete => removed.push(change.value().to_string()),
            similar::ChangeTag::Insert => added.push(change.value().to_string()),
            similar::ChangeTag::Equal => {}
        }
    }
    (removed, added)
}

const HARDENED_BASE: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  selector:\n    matchLabels: {app: api}\n  template:\n    metadata:\n      labels: {app: api}\n    spec:\n      containers:\n        - name: api # the service\n          image: ghcr.io/acme/api:2.4.1\n";

#[test]
fn fix_write_edits_the_patch_that_sets_the_bad_value_and_leaves_the_base_untouched() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let patch = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  template:\n    spec:\n      containers:\n        - name: api\n          securityContext:\n            privileged: true # asked for by ops\n";
    write(
        dir.path(),
        &[
            ("base/kustomization.yaml", "resources: [deploy.yaml]\n"),
            ("base/deploy.yaml", HARDENED_BASE),
            (
                "prod/kustomization.yaml",
                "resources:\n  - ../base\nnamePrefix: prod-\npatches:\n  - path: privileged.yaml\n",
            ),
            ("prod/privileged.yaml", patch),
        ],
    );
    let files = read_tree(dir.path());
    let before = findings(dir.path());
    let privileged = findings_of(&before, "privileged-container");
    assert_eq!(privileged.len(), 1, "{before:#?}");
    assert_eq!(
        (
            &privileged[0]["path"],
            &privileged[0]["line"],
            &privileged[0]["fixable"]
        ),
        (
            &Value::from("prod/privileged.yaml"),
            &Value::from(11),
            &Value::from(true)
        )
    );
    let first = kustomize(dir.path(), "prod");
    fix_write(dir.path());
    let written = read_tree(dir.path());
    // The patch holds the container's securityContext: every fix of that pod goes there.
    assert_eq!(changed_files(&files, &written), ["prod/privileged.yaml"]);
    let fixed = &written["prod/privileged.yaml"];
    assert!(
        fixed.starts_with(&patch[..patch.find("            privileged").unwrap()]),
        "{fixed}"
    );
    assert!(
        fixed.contains("privileged: false # asked for by ops\n"),
        "{fixed}"
    );
    insta::assert_snapshot!("kustomize_patch_fixed", fixed);
    let second = kustomize(dir.path(), "prod");
    let changed = assert_only_hardening_changed(&first, &second);
    assert!(
        changed
            .iter()
            .any(|f| f.ends_with("securityContext.privileged")),
        "{changed:#?}"
    );
    let after = findings(dir.path());
    assert!(
        findings_of(&after, "privileged-container").is_empty(),
        "{after:#?}"
    );
    assert_eq!(still_reported(&before, &after), Vec::<String>::new());
}

#[test]
fn fix_write_edits_a_base_two_overlays_share_once_for_both() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = "# The API as every environment runs it.\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  selector:\n    matchLabels: {app: api}\n  template:\n    metadata:\n      labels: {app: api}\n    spec:\n      containers:\n        - name: api # the service\n          image: ghcr.io/acme/api:2.4.1\n          securityContext:\n            privileged: true # to be looked at\n          ports:\n            - containerPort: 8080 # http\n";
    write(
        dir.path(),
        &[
            ("base/kustomization.yaml", "resources: [deploy.yaml]\n"),
            ("base/deploy.yaml", base),
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
    let files = read_tree(dir.path());
    let before = findings(dir.path());
    let privileged = findings_of(&before, "privileged-container");
    assert_eq!(privileged.len(), 1, "{before:#?}");
    assert_eq!(privileged[0]["fixable"], true);
    let first = [
        kustomize(dir.path(), "prod"),
        kustomize(dir.path(), "staging"),
    ];
    fix_write(dir.path());
    let written = read_tree(dir.path());
    assert_eq!(changed_files(&files, &written), ["base/deploy.yaml"]);
    let fixed = &written["base/deploy.yaml"];
    // Only the bad value's line changed (its comment kept); the rest is added around it.
    let (removed, added) = line_changes(base, fixed);
    assert_eq!(
        removed,
        ["            privileged: true # to be looked at\n"]
    );
    assert_eq!(
        added.iter().filter(|l| l.contains('#')).collect::<Vec<_>>(),
        ["            privileged: false # to be looked at\n"]
    );
    // One edit, not one per overlay: each field once.
    for field in [
        "privileged: false",
        "runAsNonRoot: true",
        "automountServiceAccountToken",
    ] {
        assert_eq!(fixed.matches(field).count(), 1, "{field}:\n{fixed}");
    }
    for comment in [
        "# The API as every",
        "# the service",
        "# to be looked at",
        "# http",
    ] {
        assert!(fixed.contains(comment), "{comment:?} lost:\n{fixed}");
    }
    insta::assert_snapshot!("kustomize_shared_base_fixed", fixed);
    for (root, first) in ["prod", "staging"].into_iter().zip(&first) {
        let second = kustomize(dir.path(), root);
        let changed = assert_only_hardening_changed(first, &second);
        assert!(
            changed
                .iter()
                .any(|f| f.ends_with("securityContext.privileged")),
            "{root}: {changed:#?}"
        );
    }
    let after = findings(dir.path());
    assert!(
        findings_of(&after, "privileged-container").is_empty(),
        "{after:#?}"
    );
    assert_eq!(still_reported(&before, &after), Vec::<String>::new());
}

#[test]
fn fix_write_answers_an_inline_patch_with_a_new_patch_file_listed_in_the_kustomizations_style() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The base is hardened; the overlay's inline JSON patch undoes it.
    let base = HARDENED_BASE.replace(
        "          image: ghcr.io/acme/api:2.4.1\n",
        "          image: ghcr.io/acme/api:2.4.1\n          resources:\n            limits: {cpu: 500m, memory: 256Mi}\n          securityContext:\n            allowPrivilegeEscalation: false\n            readOnlyRootFilesystem: true\n            capabilities:\n              drop: [ALL]\n      automountServiceAccountToken: false\n      securityContext:\n        runAsNonRoot: true\n        seccompProfile: {type: RuntimeDefault}\n",
    );
    let kustomization = "# Production.\nresources:\n  - ../base\nnamePrefix: prod-\npatches:\n  - target:\n      kind: Deployment\n      name: api\n    patch: |-\n      - op: add\n        path: /spec/template/spec/hostPID\n        value: true\n      - op: add\n        path: /spec/template/spec/containers/0/securityContext/privileged\n        value: true\n";
    write(
        dir.path(),
        &[
            ("base/kustomization.yaml", "resources: [deploy.yaml]\n"),
            ("base/deploy.yaml", &base),
            ("prod/kustomization.yaml", kustomization),
        ],
    );
    let files = read_tree(dir.path());
    let before = findings(dir.path());
    let fixable: Vec<&str> = before
        .iter()
        .filter(|f| f["fixable"] == true)
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    assert_eq!(fixable, ["host-pid", "privileged-container"], "{before:#?}");
    let first = kustomize(dir.path(), "prod");
    fix_write(dir.path());
    let written = read_tree(dir.path());
    assert_eq!(
        changed_files(&files, &written),
        [
            "prod/kubeharden-deployment-api.yaml",
            "prod/kustomization.yaml"
        ]
    );
    // The entry as the file writes its own: list items indented under `patches:`, the target
    // by the name the base gives (the overlay's prefix applies after its patches).
    assert_eq!(
        written["prod/kustomization.yaml"],
        format!(
            "{kustomization}  - path: kubeharden-deployment-api.yaml\n    target:\n      kind: Deployment\n      name: api\n"
        )
    );
    insta::assert_snapshot!(
        "kustomize_inline_patch_answered",
        written["prod/kubeharden-deployment-api.yaml"]
    );
    let second = kustomize(dir.path(), "prod");
    let changed = assert_only_hardening_changed(&first, &second);
    assert!(
        changed
            .iter()
            .any(|f| f.ends_with("spec.template.spec.hostPID")),
        "{changed:#?}"
    );
    let after = findings(dir.path());
    assert_eq!(still_reported(&before, &after), Vec::<String>::new());
    assert!(
        after.iter().all(|f| f["rule"] == "resource-limits-missing"),
        "{after:#?}"
    );
}

/// A patch written in flow style is edited for the value it sets, and what it cannot hold
/// goes to a new patch. That new patch was planned on the render as if the patch's own fix
/// were not made: with `privileged: true` still there the fixer refuses
/// `allowPrivilegeEscalation: false` (the API server rejects the pair), so the finding was
/// left for a second run. One run fixes every finding.
#[test]
fn a_flow_style_patch_and_the_new_patch_beside_it_fix_everything_in_one_run() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let patch = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api}\nspec:\n  template:\n    spec:\n      containers: [{name: api, securityContext: {privileged: true}}]\n";
    write(
        dir.path(),
        &[
            ("base/kustomization.yaml", "resources: [deploy.yaml]\n"),
            ("base/deploy.yaml", HARDENED_BASE),
            (
                "prod/kustomization.yaml",
                "resources: [../base]\npatches:\n  - path: flow.yaml\n",
            ),
            ("prod/flow.yaml", patch),
        ],
    );
    let files = read_tree(dir.path());
    let first = kustomize(dir.path(), "prod");
    let stderr = fix_write(dir.path());
    assert!(!stderr.contains("no fix in the source"), "{stderr}");
    let written = read_tree(dir.path());
    assert_eq!(
        changed_files(&files, &written),
        [
            "prod/flow.yaml",
            "prod/kubeharden-deployment-api.yaml",
            "prod/kustomization.yaml"
        ]
    );
    assert_eq!(
        written["prod/flow.yaml"],
        patch.replace("privileged: true", "privileged: false")
    );
    insta::assert_snapshot!(
        "kustomize_patch_beside_a_flow_patch",
        written["prod/kubeharden-deployment-api.yaml"]
    );
    let second = kustomize(dir.path(), "prod");
    assert_only_hardening_changed(&first, &second);
    let after = findings(dir.path());
    assert!(
        after.iter().all(|f| f["rule"] == "resource-limits-missing"),
        "{stderr}\n{after:#?}"
    );
}

#[test]
fn fix_write_leaves_a_root_with_a_remote_base_untouched_and_fetches_nothing() {
    if !tools() {
        return;
    }
    // The remote names a listener on loopback: a fetch would show as a connection to it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let remote = format!(
        "https://127.0.0.1:{}/acme/base.git//deploy?ref=v1",
        listener.local_addr().unwrap().port()
    );
    let dir = tempfile::tempdir().unwrap();
    let patch = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  template:\n    spec:\n      containers:\n        - name: api\n          securityContext:\n            privileged: true\n";
    write(
        dir.path(),
        &[
            (
                "prod/kustomization.yaml",
                &format!("resources:\n  - {remote}\npatches:\n  - path: privileged.yaml\n"),
            ),
            ("prod/privileged.yaml", patch),
        ],
    );
    let files = read_tree(dir.path());
    let before = findings(dir.path());
    let out = kubeharden(&["fix", "--write", "--unsafe-fixes", "."], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(read_tree(dir.path()), files, "{stderr}");
    listener.set_nonblocking(true).unwrap();
    assert_eq!(
        listener
            .accept()
            .map(|(_, peer)| peer)
            .map_err(|e| e.kind()),
        Err(std::io::ErrorKind::WouldBlock),
        "the remote was fetched"
    );
    // The finding that says so, on the remote's own line; the patch is not linted alone.
    assert_eq!(before.len(), 1, "{before:#?}");
    let skipped = &before[0];
    assert_eq!(
        (&skipped["rule"], &skipped["path"], &skipped["line"]),
        (
            &Value::from("render-skipped"),
            &Value::from("prod/kustomization.yaml"),
            &Value::from(2)
        )
    );
    assert!(
        skipped["message"].as_str().unwrap().contains(&remote),
        "{skipped}"
    );
    assert_eq!(findings(dir.path()), before);
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
    let first = [
        kustomize(dir.path(), "prod"),
        kustomize(dir.path(), "staging"),
    ];
    fix_write(dir.path());
    for (root, first) in ["prod", "staging"].into_iter().zip(&first) {
        assert_only_hardening_changed(first, &kustomize(dir.path(), root));
    }
    let after = findings(dir.path());
    assert_eq!(still_reported(&before, &after), Vec::<String>::new());
    assert!(
        findings_of(&after, "service-account-token-mounted").is_empty(),
        "{after:#?}"
    );
}
