//! `kubeharden lint` rendering charts and kustomizations with the real `helm` and Kustomize,
//! hostile input included. Skipped when the tools are missing, unless
//! `KUBEHARDEN_REQUIRE_RENDER=1` (as in `.ci/run`, which installs them).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::render_support::{kubeharden, lint_json, rules_at, tools, write};

const CHART: &str = "apiVersion: v2\nname: web\nversion: 1.0.0\n";
const TEMPLATE: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}\nspec:\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n        - name: web\n          image: {{ .Values.image }}\n          securityContext:\n            privileged: {{ .Values.privileged }}\n";

#[test]
fn a_chart_is_rendered_and_its_findings_name_the_template_root_and_variant() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            ("web/Chart.yaml", CHART),
            ("web/values.yaml", "image: nginx:1.27\nprivileged: false\n"),
            ("web/ci/root-values.yaml", "privileged: true\n"),
            ("web/templates/deployment.yaml", TEMPLATE),
        ],
    );
    let (findings, report) = lint_json(dir.path(), &[]);
    let privileged: Vec<&Value> = findings
        .iter()
        .filter(|f| f["rule"] == "privileged-container")
        .collect();
    // Only the chart-testing variant sets privileged: true.
    assert_eq!(privileged.len(), 1, "{findings:#?}");
    let p = privileged[0];
    assert_eq!(p["path"], "web/templates/deployment.yaml");
    // The template line that prints the field.
    assert_eq!(
        (p["line"].as_u64(), p["column"].as_u64()),
        (Some(16), Some(13))
    );
    assert_eq!(p["root"], "web");
    assert_eq!(p["variant"], "ci/root-values.yaml");
    assert_eq!(
        p["field"],
        "spec.template.spec.containers[0].securityContext.privileged"
    );
    assert_eq!(p["name"], "web");
    // The template and the values files are not linted on their own.
    for f in &findings {
        assert!(f["path"] == "web/templates/deployment.yaml", "{f}");
        assert!(f["root"] == "web", "{f}");
    }
    assert_eq!(report["summary"]["workloads"], 1);

    // --render never: the template is skipped as before.
    let out = kubeharden(&["lint", ".", "--render", "never"], dir.path());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("skipped 1 Helm template"), "{text}");
}

#[test]
fn a_kustomization_lints_each_resource_once_through_its_render_at_the_base_lines() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  selector:\n    matchLabels: {app: api}\n  template:\n    metadata:\n      labels: {app: api}\n    spec:\n      hostPID: true\n      containers:\n        - name: api\n          image: ghcr.io/acme/api\n";
    write(
        dir.path(),
        &[
            (
                "app/kustomization.yaml",
                "resources: [deploy.yaml]\nnamePrefix: prod-\nimages:\n  - name: ghcr.io/acme/api\n    newTag: 2.4.1\n",
            ),
            ("app/deploy.yaml", deploy),
            (
                "loose.yaml",
                "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  hostIPC: true\n  containers: [{name: c, image: nginx:1.27}]\n",
            ),
        ],
    );
    let (findings, _) = lint_json(dir.path(), &[]);
    let at = rules_at(&findings, "app/deploy.yaml");
    // hostPID at its own line of the base file, once; the image transformer's tag counts.
    assert_eq!(
        at.iter().filter(|r| r.ends_with(":host-pid")).count(),
        1,
        "{at:?}"
    );
    assert!(at.contains(&"12:host-pid".to_string()), "{at:?}");
    assert!(
        !at.iter().any(|r| r.ends_with(":image-tag-mutable")),
        "{at:?}"
    );
    let host_pid = findings.iter().find(|f| f["rule"] == "host-pid").unwrap();
    assert_eq!(host_pid["name"], "prod-api");
    assert_eq!(host_pid["root"], "app");
    // A file no kustomization reads is linted as written.
    let loose = findings
        .iter()
        .find(|f| f["path"] == "loose.yaml" && f["rule"] == "host-ipc")
        .unwrap();
    assert!(loose.get("root").is_none());
}

#[test]
fn a_remote_resource_is_a_render_skipped_finding_on_its_line_and_nothing_is_fetched() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[(
            "overlay/kustomization.yaml",
            "resources:\n  - https://github.com/kubernetes-sigs/kustomize//examples/helloWorld?ref=v5.6.0\n",
        )],
    );
    let started = Instant::now();
    let (findings, _) = lint_json(dir.path(), &[]);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(findings[0]["rule"], "render-skipped");
    assert_eq!(findings[0]["path"], "overlay/kustomization.yaml");
    assert_eq!(findings[0]["line"], 2);
    assert!(
        findings[0]["message"].as_str().unwrap().contains(
            "https://github.com/kubernetes-sigs/kustomize//examples/helloWorld?ref=v5.6.0"
        )
    );
}

#[test]
fn a_render_that_prints_too_much_or_runs_too_long_is_stopped_and_reported() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            ("huge/Chart.yaml", CHART),
            (
                "huge/templates/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: big}\ndata:\n{{- range until 40000 }}\n  k{{ . }}: \"0123456789012345678901234567890123456789\"\n{{- end }}\n",
            ),
            ("slow/Chart.yaml", CHART),
            (
                "slow/templates/cm.yaml",
                "{{- range until 100000 }}{{- range until 100000 }}{{- end }}{{- end }}\n",
            ),
        ],
    );
    let started = Instant::now();
    let (findings, _) = lint_json(
        dir.path(),
        &["--render-max-output", "1MiB", "--render-timeout", "20"],
    );
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "{:?}",
        started.elapsed()
    );
    let failed = |findings: &[Value], path: &str| -> String {
        let f: Vec<&Value> = findings
            .iter()
            .filter(|f| f["rule"] == "render-failed" && f["path"] == path)
            .collect();
        assert_eq!(f.len(), 1, "{findings:#?}");
        f[0]["message"].as_str().unwrap().to_string()
    };
    let huge = failed(&findings, "huge/Chart.yaml");
    assert!(huge.contains("printed more than 1 MiB"), "{huge}");
    let started = Instant::now();
    let (findings, _) = lint_json(dir.path(), &["--render-timeout", "2"]);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let slow = failed(&findings, "slow/Chart.yaml");
    assert!(slow.contains("did not finish within 2 s"), "{slow}");
}

#[test]
fn a_values_file_that_links_outside_the_repository_is_refused_unread() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            ("web/Chart.yaml", CHART),
            (
                "web/templates/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: leak}\ndata:\n  values: {{ toYaml .Values | quote }}\n",
            ),
        ],
    );
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("web/values.yaml")).unwrap();
    let out = kubeharden(&["lint", "--format", "json", "."], dir.path());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("root:x:0"), "{text}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = &v["findings"][0];
    assert_eq!(f["rule"], "render-failed", "{text}");
    assert_eq!(f["path"], "web/Chart.yaml");
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .contains("web/values.yaml is a symbolic link to /etc/passwd, outside the repository; it was not read"),
        "{f}"
    );
}

#[test]
fn lookup_renders_nothing_and_the_chart_is_still_linted() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let template = TEMPLATE.replace(
        "          image: {{ .Values.image }}\n",
        "          image: {{ .Values.image }}\n          {{- with (lookup \"v1\" \"Secret\" \"kube-system\" \"admin\") }}\n          env: [{name: LEAK, value: {{ .data | quote }}}]\n          {{- end }}\n",
    );
    write(
        dir.path(),
        &[
            ("web/Chart.yaml", CHART),
            ("web/values.yaml", "image: nginx:1.27\nprivileged: true\n"),
            ("web/templates/deployment.yaml", &template),
        ],
    );
    let started = Instant::now();
    let (findings, _) = lint_json(dir.path(), &[]);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        findings.iter().any(|f| f["rule"] == "privileged-container"),
        "{findings:#?}"
    );
    assert!(
        !findings.iter().any(|f| f["rule"] == "render-failed"),
        "{findings:#?}"
    );
}

/// Opt-in: `KUBEHARDEN_GITOPS` names `../shared/gitops`. Every chart and kustomization there
/// renders; every finding names a file of the tree and a line in it; and each root's findings
/// are those `kubeharden lint -` reports on that root rendered by hand and piped in (nothing
/// lost or added by linting through the render).
#[test]
fn the_shared_gitops_roots_render_and_match_linting_their_piped_output() {
    let Some(gitops) = std::env::var_os("KUBEHARDEN_GITOPS") else {
        eprintln!("KUBEHARDEN_GITOPS not set; skipped");
        return;
    };
    assert!(
        tools(),
        "KUBEHARDEN_GITOPS is set but helm or kubectl is not on PATH"
    );
    let gitops = Path::new(&gitops);
    let index = std::fs::read_to_string(gitops.join("INDEX.tsv")).unwrap();
    let mut trees: Vec<String> = index
        .lines()
        .skip(1)
        .map(|l| l.split('\t').next().unwrap().replace('/', "+"))
        .collect();
    trees.dedup();
    let mut compared = 0;
    for tree in trees {
        let dir = gitops.join(&tree);
        let (findings, _) = lint_json(&dir, &[]);
        for f in &findings {
            assert!(
                !f["rule"].as_str().unwrap().starts_with("render-"),
                "{tree}: {f}"
            );
            let path = f["path"].as_str().unwrap();
            let text = std::fs::read_to_string(dir.join(path))
                .unwrap_or_else(|e| panic!("{tree}: {path}: {e}"));
            let line = f["line"].as_u64().unwrap() as usize;
            assert!(
                line >= 1 && line <= text.lines().count().max(1),
                "{tree}: {f}"
            );
        }
        let key = |f: &Value| {
            format!(
                "{} {} {} {}",
                f["rule"], f["kind"], f["container"], f["message"]
            )
        };
        let mut by_root: std::collections::BTreeMap<(String, String), Vec<String>> =
            Default::default();
        // A finding several renders share at one place is reported once, naming them all.
        for f in findings.iter().filter(|f| f.get("root").is_some()) {
            let also = f["also_rendered_in"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for r in std::iter::once(f).chain(&also) {
                by_root
                    .entry((
                        r["root"].as_str().unwrap().to_string(),
                        r["variant"].as_str().unwrap().to_string(),
                    ))
                    .or_default()
                    .push(key(f));
            }
        }
        for ((root, variant), mut ours) in by_root {
            let root_dir = dir.join(&root);
            let rendered = if root_dir.join("Chart.yaml").is_file() {
                let chart = std::fs::read_to_string(root_dir.join("Chart.yaml")).unwrap();
                let name = chart
                    .lines()
                    .find_map(|l| l.strip_prefix("name:"))
                    .unwrap()
                    .trim()
                    .trim_matches('"')
                    .to_string();
                let mut cmd = std::process::Command::new("helm");
                cmd.args([
                    "template",
                    "--namespace",
                    "default",
                    "--kube-version",
                    "v1.37.0",
                ]);
                if variant != "values.yaml" {
                    cmd.arg("--values").arg(root_dir.join(&variant));
                }
                cmd.arg(&name).arg(&root_dir);
                cmd.output().unwrap()
            } else {
                std::process::Command::new("kubectl")
                    .arg("kustomize")
                    .arg(&root_dir)
                    .output()
                    .unwrap()
            };
            assert!(rendered.status.success(), "{tree}/{root}: {rendered:?}");
            let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kubeharden"))
                .args(["lint", "--format", "json", "-"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(&rendered.stdout)
                .unwrap();
            let piped = child.wait_with_output().unwrap();
            let piped: Value = serde_json::from_slice(&piped.stdout).unwrap();
            let mut theirs: Vec<String> = piped["findings"]
                .as_array()
                .unwrap()
                .iter()
                .map(key)
                .collect();
            ours.sort();
            theirs.sort();
            assert_eq!(ours, theirs, "{tree}/{root} ({variant})");
            compared += 1;
        }
    }
    // 12 charts (one variant each but postgres-exporter's ci values) and the kustomizations
    // with findings.
    assert!(compared >= 12, "{compared}");
}

#[test]
fn a_finding_fed_by_a_values_key_points_at_that_key_in_values_yaml() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The `helm create` convention: empty security contexts in values.yaml, printed with toYaml.
    let values = "image: nginx:1.27\n\npodSecurityContext: {}\n  # fsGroup: 2000\n\nsecurityContext: {}\n  # runAsNonRoot: true\n\nsidecar:\n  securityContext:\n    privileged: true\n";
    let template = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      {{- with .Values.podSecurityContext }}\n      securityContext:\n        {{- toYaml . | nindent 8 }}\n      {{- end }}\n      containers:\n        - name: web\n          image: {{ .Values.image }}\n          {{- with .Values.securityContext }}\n          securityContext:\n            {{- toYaml . | nindent 12 }}\n          {{- end }}\n        - name: sidecar\n          image: {{ .Values.image }}\n          securityContext:\n            {{- toYaml .Values.sidecar.securityContext | nindent 12 }}\n";
    write(
        dir.path(),
        &[
            ("web/Chart.yaml", CHART),
            ("web/values.yaml", values),
            ("web/templates/deployment.yaml", template),
        ],
    );
    let (findings, _) = lint_json(dir.path(), &[]);
    let at = |rule: &str, container: &str| -> (String, u64) {
        let f = findings
            .iter()
            .find(|f| f["rule"] == rule && f["container"] == container)
            .unwrap_or_else(|| panic!("{rule} {container}: {findings:#?}"));
        (
            f["path"].as_str().unwrap().to_string(),
            f["line"].as_u64().unwrap(),
        )
    };
    let values_path = "web/values.yaml".to_string();
    // No securityContext renders for `web`: the values key that would print one.
    assert_eq!(at("run-as-root-allowed", "web"), (values_path.clone(), 6));
    // The sidecar's privileged: true, at its own key.
    assert_eq!(
        at("privileged-container", "sidecar"),
        (values_path.clone(), 11)
    );
    // A key the sidecar's mapping lacks: that mapping's key.
    assert_eq!(at("run-as-root-allowed", "sidecar"), (values_path, 10));
}

#[test]
fn a_field_an_overlay_patch_sets_points_at_the_patch_line() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  selector:\n    matchLabels: {app: api}\n  template:\n    metadata:\n      labels: {app: api}\n    spec:\n      containers:\n        - name: log\n          image: busybox:1.36\n        - name: api\n          image: ghcr.io/acme/api:2.4.1\n";
    let patch = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  template:\n    spec:\n      containers:\n        - name: api\n          securityContext:\n            privileged: true\n";
    write(
        dir.path(),
        &[
            ("base/kustomization.yaml", "resources: [deploy.yaml]\n"),
            ("base/deploy.yaml", deploy),
            (
                "prod/kustomization.yaml",
                "resources: [../base]\nnamePrefix: prod-\npatches:\n  - path: privileged.yaml\n",
            ),
            ("prod/privileged.yaml", patch),
        ],
    );
    let (findings, _) = lint_json(dir.path(), &[]);
    let privileged: Vec<(&str, u64, &str)> = findings
        .iter()
        .filter(|f| f["rule"] == "privileged-container")
        .map(|f| {
            (
                f["path"].as_str().unwrap(),
                f["line"].as_u64().unwrap(),
                f["root"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        privileged,
        [("prod/privileged.yaml", 11, "prod")],
        "{findings:#?}"
    );
    let at = |container: &str| {
        let f = findings
            .iter()
            .find(|f| {
                f["rule"] == "run-as-root-allowed"
                    && f["container"] == container
                    && f["root"] == "prod"
            })
            .unwrap();
        (
            f["path"].as_str().unwrap().to_string(),
            f["line"].as_u64().unwrap(),
        )
    };
    // The securityContext the patch writes is where runAsNonRoot belongs too.
    assert_eq!(at("api"), ("prod/privileged.yaml".to_string(), 10));
    // A container no patch touches stays in the base, at its own entry.
    assert_eq!(at("log"), ("base/deploy.yaml".to_string(), 13));
}

#[test]
fn the_configuration_skips_roots_adds_values_files_and_names_its_own_mistakes() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            (
                ".github/kubeharden.yaml",
                "render:\n  skip: [legacy]\n  values:\n    web: [prod-values.yaml, missing.yaml]\n  add: [nothing-here]\n",
            ),
            ("web/Chart.yaml", CHART),
            ("web/values.yaml", "image: nginx:1.27\nprivileged: false\n"),
            ("web/prod-values.yaml", "privileged: true\n"),
            ("web/templates/deployment.yaml", TEMPLATE),
            ("legacy/Chart.yaml", CHART),
            (
                "legacy/values.yaml",
                "image: nginx:1.27\nprivileged: true\n",
            ),
            ("legacy/templates/deployment.yaml", TEMPLATE),
        ],
    );
    let (findings, _) = lint_json(dir.path(), &[]);
    let privileged: Vec<(&str, &str)> = findings
        .iter()
        .filter(|f| f["rule"] == "privileged-container")
        .map(|f| {
            (
                f["path"].as_str().unwrap(),
                f["variant"].as_str().unwrap_or(""),
            )
        })
        .collect();
    // The configured values file is one more variant; the skipped chart is not rendered (its
    // template is skipped as written, as any Helm template outside a render).
    assert_eq!(
        privileged,
        [("web/templates/deployment.yaml", "prod-values.yaml")],
        "{findings:#?}"
    );
    let config: Vec<String> = rules_at(&findings, ".github/kubeharden.yaml");
    assert_eq!(
        config,
        ["4:render-failed", "5:render-failed"],
        "{findings:#?}"
    );
    let messages: Vec<&str> = findings
        .iter()
        .filter(|f| f["path"] == ".github/kubeharden.yaml")
        .map(|f| f["message"].as_str().unwrap())
        .collect();
    assert!(messages[0].contains("web/missing.yaml"), "{messages:?}");
    assert!(messages[1].contains("nothing-here"), "{messages:?}");
}

#[test]
fn a_configuration_path_outside_the_repository_is_an_error_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[(
            ".github/kubeharden.yaml",
            "render:\n  skip:\n    - ok\n    - ../elsewhere\n",
        )],
    );
    let out = kubeharden(&["lint", "."], dir.path());
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(".github/kubeharden.yaml:4:") && err.contains("`render.skip`"),
        "{err}"
    );
}

const HELM_KUSTOMIZATION: &str =
    "helmCharts:\n  - name: web\n    releaseName: shop\n    valuesFile: web-values.yaml\n";

#[test]
fn enable_helm_inflates_a_vendored_chart_and_blocks_one_it_would_download() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            (".github/kubeharden.yaml", "render:\n  enable-helm: true\n"),
            ("app/kustomization.yaml", HELM_KUSTOMIZATION),
            (
                "app/web-values.yaml",
                "image: nginx:1.27\nprivileged: true\n",
            ),
            ("app/charts/web/Chart.yaml", CHART),
            (
                "app/charts/web/values.yaml",
                "image: nginx:1.27\nprivileged: false\n",
            ),
            ("app/charts/web/templates/deployment.yaml", TEMPLATE),
            (
                "remote/kustomization.yaml",
                "helmCharts:\n  - name: podinfo\n    repo: https://stefanprodan.github.io/podinfo\n    version: 6.7.0\n",
            ),
        ],
    );
    let started = Instant::now();
    let (findings, _) = lint_json(dir.path(), &[]);
    assert!(started.elapsed() < Duration::from_secs(20));
    let privileged: Vec<(&str, &str)> = findings
        .iter()
        .filter(|f| f["rule"] == "privileged-container")
        .map(|f| (f["path"].as_str().unwrap(), f["root"].as_str().unwrap()))
        .collect();
    assert_eq!(privileged.len(), 1, "{findings:#?}");
    assert_eq!(privileged[0].1, "app");
    let skipped = rules_at(&findings, "remote/kustomization.yaml");
    assert_eq!(skipped, ["2:render-skipped"], "{findings:#?}");
    // Without the opt-in, helmCharts are not inflated at all.
    std::fs::remove_file(dir.path().join(".github/kubeharden.yaml")).unwrap();
    let (findings, _) = lint_json(dir.path(), &[]);
    assert!(
        findings.iter().all(|f| f["rule"] != "privileged-container"),
        "{findings:#?}"
    );
    assert_eq!(
        rules_at(&findings, "app/kustomization.yaml"),
        ["1:render-skipped"]
    );
}
