//! The edges the lint engine must get right, through the library API.

use kubeharden_core::k8s::KubeVersion;
use kubeharden_core::lint::{Linter, Report, Settings};
use kubeharden_core::rules::{Profile, Registry};
use kubeharden_core::source::SourceFile;

fn lint_with(text: &str, settings: Settings) -> Report {
    let registry = Registry::builtin().unwrap();
    let linter = Linter::new(&registry, settings);
    linter.lint_files(&[SourceFile::new("test.yaml", text)])
}

fn lint(text: &str) -> Report {
    lint_with(text, Settings::default())
}

/// `rule@line:column` for every finding of the given rules.
fn hits(report: &Report, rules: &[&str]) -> Vec<String> {
    report
        .findings
        .iter()
        .filter(|f| rules.contains(&f.rule.as_str()))
        .map(|f| format!("{}@{}:{}", f.rule, f.start.line, f.start.column))
        .collect()
}

const PRIVILEGED_POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: p
spec:
  containers:
    - name: c
      image: nginx:1.27
      securityContext:
        privileged: true
";

#[test]
fn bom_crlf_and_no_final_newline_keep_positions() {
    let text = format!(
        "\u{feff}{}",
        PRIVILEGED_POD.replace('\n', "\r\n").trim_end()
    );
    let report = lint(&text);
    assert_eq!(
        hits(&report, &["privileged-container"]),
        ["privileged-container@10:9"]
    );
    let f = &report
        .findings
        .iter()
        .find(|f| f.rule == "privileged-container")
        .unwrap();
    // The range covers `privileged: true` and nothing of the line ending.
    assert_eq!((f.end.line, f.end.column), (10, 25));
}

#[test]
fn anchors_and_merges_are_resolved_for_evaluation() {
    let text = "apiVersion: v1
kind: Pod
metadata:
  name: p
spec:
  containers:
    - name: a
      image: nginx:1.27
      securityContext: &hardened
        privileged: true
    - name: b
      image: nginx:1.27
      securityContext:
        <<: *hardened
        runAsUser: 1000
";
    let report = lint(text);
    // Container b inherits privileged: true through the merge; the finding points at the
    // definition, where a fix would go.
    assert_eq!(
        hits(&report, &["privileged-container"]),
        ["privileged-container@10:9", "privileged-container@10:9"]
    );
    let containers: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.rule == "privileged-container")
        .map(|f| f.container.clone().unwrap())
        .collect();
    assert_eq!(containers, ["a", "b"]);
}

#[test]
fn duplicate_keys_use_the_last_value_and_are_reported() {
    let text = "apiVersion: v1
kind: Pod
metadata:
  name: p
spec:
  hostPID: true
  containers:
    - name: c
      image: nginx:1.27
  hostPID: false
";
    let report = lint(text);
    assert_eq!(
        hits(&report, &["host-pid", "duplicate-key"]),
        ["duplicate-key@10:3"]
    );
}

#[test]
fn a_depth_bomb_and_billion_laughs_are_findings() {
    let bomb = "- ".repeat(200_000) + "x\n";
    let report = lint(&bomb);
    assert_eq!(hits(&report, &["yaml-limit"]), ["yaml-limit@1:401"]);

    let mut laughs = String::from(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nx0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    for i in 1..10 {
        laughs += &format!(
            "x{i}: &a{i} [{}]\n",
            vec![format!("*a{}", i - 1); 9].join(", ")
        );
    }
    laughs += "spec:\n  containers:\n    - name: c\n      image: nginx:1.27\n      args: *a9\n";
    let report = lint(&laughs);
    assert_eq!(
        hits(&report, &["yaml-limit"]).len(),
        1,
        "{:?}",
        report.findings
    );
    assert!(hits(&report, &["privilege-escalation-allowed"]).is_empty());
}

#[test]
fn tabs_are_invalid_yaml_and_the_next_documents_are_still_linted() {
    let text =
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n\tname: broken\n---\n{PRIVILEGED_POD}");
    let report = lint(&text);
    assert_eq!(
        hits(&report, &["invalid-yaml", "privileged-container"]),
        ["invalid-yaml@4:1", "privileged-container@15:9"]
    );
}

#[test]
fn windows_pods_are_exempt_from_linux_only_restricted_controls() {
    let text = "apiVersion: v1
kind: Pod
metadata:
  name: w
spec:
  os:
    name: windows
  securityContext:
    runAsNonRoot: true
  containers:
    - name: c
      image: mcr.microsoft.com/windows/nanoserver:ltsc2022
";
    let report = lint(text);
    let rules = [
        "privilege-escalation-allowed",
        "seccomp-profile-missing",
        "capabilities-not-dropped",
        "writable-root-filesystem",
    ];
    assert!(
        hits(&report, &rules).is_empty(),
        "{:?}",
        hits(&report, &rules)
    );
    // The exemption started in 1.25.
    let old = Settings {
        kube_version: KubeVersion::new(1, 24),
        ..Settings::default()
    };
    let report = lint_with(text, old);
    assert_eq!(
        hits(
            &report,
            &[
                "privilege-escalation-allowed",
                "seccomp-profile-missing",
                "capabilities-not-dropped"
            ]
        )
        .len(),
        3
    );
}

#[test]
fn host_port_zero_is_allowed_and_lower_case_all_is_not() {
    let text = "apiVersion: v1
kind: Pod
metadata:
  name: p
spec:
  containers:
    - name: c
      image: nginx:1.27
      ports:
        - containerPort: 80
          hostPort: 0
      securityContext:
        capabilities:
          drop: [all]
";
    let report = lint(text);
    assert!(hits(&report, &["host-port"]).is_empty());
    assert_eq!(
        hits(&report, &["capabilities-not-dropped"]),
        ["capabilities-not-dropped@14:11"]
    );
}

#[test]
fn pod_level_settings_are_inherited_and_container_values_override() {
    let text = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: d
spec:
  template:
    spec:
      securityContext:
        runAsNonRoot: true
        seccompProfile: {type: RuntimeDefault}
      initContainers:
        - name: init
          image: busybox:1.36
      containers:
        - name: app
          image: nginx:1.27
        - name: root
          image: nginx:1.27
          securityContext:
            runAsNonRoot: false
            seccompProfile: {type: Unconfined}
      ephemeralContainers:
        - name: debug
          image: busybox:1.36
";
    let report = lint(text);
    let by_container = |rule: &str| -> Vec<String> {
        report
            .findings
            .iter()
            .filter(|f| f.rule == rule)
            .map(|f| f.container.clone().unwrap_or_else(|| "<pod>".into()))
            .collect()
    };
    assert_eq!(by_container("run-as-root-allowed"), ["root"]);
    assert_eq!(by_container("seccomp-profile-missing"), ["root"]);
    // Container-only fields are checked on every kind of container.
    assert_eq!(
        by_container("privilege-escalation-allowed"),
        ["init", "app", "root", "debug"]
    );
}

#[test]
fn every_exemption_form_is_honoured() {
    let pod = |annotations: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n{annotations}\nspec:\n  hostPID: true\n  containers:\n    - name: c\n      image: nginx:1.27\n"
        )
    };
    let forms = [
        "    kubeharden.dev/ignore: \"host-pid\"\n    kubeharden.dev/ignore-reason: \"debug pod\"",
        "    polaris.fairwinds.com/hostPIDSet-exempt: \"true\"",
        "    polaris.fairwinds.com/exempt: \"true\"",
        "    ignore-check.kube-linter.io/host-pid: \"debug pod\"",
        "    kube-linter.io/ignore-all: \"debug pod\"",
    ];
    for form in forms {
        let report = lint(&pod(form));
        assert!(hits(&report, &["host-pid"]).is_empty(), "{form}");
        assert!(
            hits(&report, &["unused-exemption", "invalid-exemption"]).is_empty(),
            "{form}"
        );
    }
    // On the pod template of a Deployment too.
    let deployment = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: d
spec:
  template:
    metadata:
      annotations:
        kubeharden.dev/ignore: host-pid
        kubeharden.dev/ignore-reason: node agent
    spec:
      hostPID: true
      containers:
        - name: c
          image: nginx:1.27
";
    let report = lint(deployment);
    assert!(hits(&report, &["host-pid", "unused-exemption"]).is_empty());
    // Nothing to suppress any more: the exemption is stale.
    let report = lint(&deployment.replace("hostPID: true", "hostPID: false"));
    assert_eq!(
        hits(&report, &["unused-exemption"]),
        ["unused-exemption@9:9"]
    );
    // No reason given.
    let report =
        lint(&deployment.replace("        kubeharden.dev/ignore-reason: node agent\n", ""));
    assert_eq!(
        hits(&report, &["invalid-exemption"]),
        ["invalid-exemption@9:9"]
    );
}

#[test]
fn yaml_1_1_booleans_are_read_as_kubernetes_reads_them() {
    let report = lint(&PRIVILEGED_POD.replace("privileged: true", "privileged: yes"));
    assert_eq!(
        hits(&report, &["privileged-container", "invalid-field"]),
        ["privileged-container@10:9"]
    );
    let report = lint(&PRIVILEGED_POD.replace("privileged: true", "privileged: \"true\""));
    assert_eq!(
        hits(&report, &["privileged-container", "invalid-field"]),
        ["invalid-field@10:21"]
    );
}

#[test]
fn the_profile_selects_rules_and_versions_gate_them() {
    let text = "apiVersion: v1
kind: Pod
metadata:
  name: p
spec:
  containers:
    - name: c
      image: nginx
      livenessProbe:
        httpGet: {host: example.com, port: 80}
";
    let baseline = Settings {
        profile: Profile::Baseline,
        ..Settings::default()
    };
    let report = lint_with(text, baseline.clone());
    assert_eq!(
        hits(&report, &["probe-host-override"]),
        ["probe-host-override@10:19"]
    );
    assert!(
        hits(
            &report,
            &["image-tag-mutable", "privilege-escalation-allowed"]
        )
        .is_empty()
    );
    let older = Settings {
        kube_version: KubeVersion::new(1, 33),
        ..baseline
    };
    assert!(hits(&lint_with(text, older), &["probe-host-override"]).is_empty());
}

#[test]
fn lists_cronjobs_and_unknown_kinds_with_pod_templates_are_workloads() {
    let text = "apiVersion: v1
kind: List
items:
  - apiVersion: batch/v1
    kind: CronJob
    metadata: {name: cj}
    spec:
      schedule: '@daily'
      jobTemplate:
        spec:
          template:
            spec:
              hostNetwork: true
              containers: [{name: c, image: 'busybox:1.36'}]
---
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: r}
spec:
  template:
    spec:
      hostIPC: true
      containers: [{name: c, image: 'busybox:1.36'}]
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: w}
spec:
  template:
    spec:
      hostPID: true
---
just: some config
";
    let report = lint(text);
    assert_eq!(
        hits(&report, &["host-network", "host-ipc", "host-pid"]),
        ["host-network@13:15", "host-ipc@22:7"]
    );
    assert_eq!(report.workloads, 2);
    assert_eq!(report.notes.len(), 1);
}

#[test]
fn helm_templates_are_skipped_with_a_note() {
    let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}\n";
    let report = lint(text);
    assert!(report.findings.is_empty());
    assert_eq!(report.notes.len(), 1);
}

#[test]
fn service_accounts_in_the_same_change_can_turn_the_token_off() {
    let pod = "apiVersion: v1
kind: Pod
metadata: {name: p, namespace: ns}
spec:
  serviceAccountName: quiet
  containers: [{name: c, image: 'nginx:1.27'}]
";
    let sa = "apiVersion: v1
kind: ServiceAccount
metadata: {name: quiet, namespace: ns}
automountServiceAccountToken: false
";
    let registry = Registry::builtin().unwrap();
    let linter = Linter::new(&registry, Settings::default());
    let alone = linter.lint_files(&[SourceFile::new("pod.yaml", pod)]);
    assert_eq!(hits(&alone, &["service-account-token-mounted"]).len(), 1);
    let together = linter.lint_files(&[
        SourceFile::new("pod.yaml", pod),
        SourceFile::new("sa.yaml", sa),
    ]);
    assert!(hits(&together, &["service-account-token-mounted"]).is_empty());
    let other_namespace = sa.replace("namespace: ns", "namespace: other");
    let apart = linter.lint_files(&[
        SourceFile::new("pod.yaml", pod),
        SourceFile::new("sa.yaml", other_namespace),
    ]);
    assert_eq!(hits(&apart, &["service-account-token-mounted"]).len(), 1);
}

#[test]
fn exemptions_are_judged_after_the_whole_change_is_seen() {
    let pod = "apiVersion: v1
kind: Pod
metadata:
  name: p
  namespace: ns
  annotations:
    kubeharden.dev/ignore: service-account-token-mounted, host-network
    kubeharden.dev/ignore-reason: talks to the API
spec:
  serviceAccountName: quiet
  containers: [{name: c, image: 'nginx:1.27'}]
";
    let sa = "apiVersion: v1
kind: ServiceAccount
metadata: {name: quiet, namespace: ns}
automountServiceAccountToken: false
";
    let registry = Registry::builtin().unwrap();
    let linter = Linter::new(&registry, Settings::default());
    // Alone, the token exemption is used; host-network is named but idle.
    let alone = linter.lint_files(&[SourceFile::new("pod.yaml", pod)]);
    let messages: Vec<_> = alone
        .findings
        .iter()
        .filter(|f| f.rule == "unused-exemption")
        .map(|f| f.message.clone())
        .collect();
    assert_eq!(
        messages,
        ["`kubeharden.dev/ignore` names `host-network`, which suppresses nothing here"]
    );
    // With the ServiceAccount in the change the token finding never existed: all of it is idle.
    let together = linter.lint_files(&[
        SourceFile::new("pod.yaml", pod),
        SourceFile::new("sa.yaml", sa),
    ]);
    let messages: Vec<_> = together
        .findings
        .iter()
        .filter(|f| f.rule == "unused-exemption")
        .map(|f| f.message.clone())
        .collect();
    assert_eq!(
        messages,
        [
            "`kubeharden.dev/ignore: service-account-token-mounted, host-network` suppresses nothing here; remove it"
        ]
    );

    let empty = pod.replace("service-account-token-mounted, host-network", "\"\"");
    let report = linter.lint_files(&[SourceFile::new("pod.yaml", empty)]);
    assert_eq!(
        hits(&report, &["invalid-exemption"]),
        ["invalid-exemption@7:5"]
    );
}

#[test]
fn explicit_core_tags_decide_the_type_as_kubectl_reads_them() {
    let report = lint(&PRIVILEGED_POD.replace("privileged: true", "privileged: !!bool \"true\""));
    assert_eq!(
        hits(&report, &["privileged-container", "invalid-field"]),
        ["privileged-container@10:9"]
    );
    // The value after its tag, where a fix would go.
    let report = lint(&PRIVILEGED_POD.replace("privileged: true", "privileged: !!str true"));
    assert_eq!(
        hits(&report, &["privileged-container", "invalid-field"]),
        ["invalid-field@10:27"]
    );
}

#[test]
fn braces_in_a_valid_manifest_do_not_switch_linting_off() {
    let text = PRIVILEGED_POD.replace(
        "  name: p\n",
        "  name: p\n  annotations: {note: \"{{ not helm }}\"}\n",
    );
    assert_eq!(hits(&lint(&text), &["privileged-container"]).len(), 1);
}

#[test]
fn a_review_never_suggests_what_the_whole_change_does_not_report() {
    let pod = "apiVersion: v1
kind: Pod
metadata: {name: p, namespace: ns}
spec:
  serviceAccountName: quiet
  containers:
    - name: c
      image: nginx:1.27
";
    let sa = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: quiet, namespace: ns}\nautomountServiceAccountToken: false\n";
    let registry = Registry::builtin().unwrap();
    let linter = Linter::new(&registry, Settings::default());
    let files = [
        kubeharden_core::change::PrFile::new("pod.yaml", pod, Some("@@ -0,0 +1,8 @@\n".into())),
        kubeharden_core::change::PrFile::new("sa.yaml", sa, Some("@@ -0,0 +1,4 @@\n".into())),
    ];
    let plan = kubeharden_core::review::plan(&linter, &files);
    assert!(!plan.comments.is_empty());
    for c in &plan.comments {
        assert!(
            !c.body.contains("automountServiceAccountToken"),
            "{}",
            c.body
        );
        assert!(
            !c.body.contains("service-account-token-mounted"),
            "{}",
            c.body
        );
    }
}

#[test]
fn a_bare_key_in_a_flow_mapping_gets_its_value_without_touching_the_next_one() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n    - name: c\n      image: nginx:1.27\n      securityContext: {allowPrivilegeEscalation, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}\n";
    let registry = Registry::builtin().unwrap();
    let linter = Linter::new(&registry, Settings::default());
    let fixed = kubeharden_core::fix::fix_file(
        &linter,
        &SourceFile::new("p.yaml", text),
        kubeharden_core::rules::Applicability::Safe,
    )
    .unwrap()
    .fixed;
    assert!(
        fixed.contains("{allowPrivilegeEscalation: false, readOnlyRootFilesystem: true,"),
        "{fixed}"
    );
}

#[test]
fn a_fix_kubernetes_would_refuse_is_explained_in_the_findings_annotation() {
    let ds = "apiVersion: apps/v1
kind: DaemonSet
metadata: {name: csi-node, namespace: kube-system}
spec:
  selector: {matchLabels: {app: csi}}
  template:
    metadata: {labels: {app: csi}}
    spec:
      containers:
        - name: plugin
          image: registry.example.com/csi:1.0.0
          securityContext:
            privileged: true
          volumeMounts:
            - name: pods
              mountPath: /var/lib/kubelet/pods
              mountPropagation: Bidirectional
      volumes:
        - name: pods
          hostPath: {path: /var/lib/kubelet/pods}
";
    let registry = Registry::builtin().unwrap();
    let linter = Linter::new(&registry, Settings::default());
    let files = [kubeharden_core::change::PrFile::new(
        "ds.yaml",
        ds,
        Some("@@ -0,0 +1,20 @@\n".into()),
    )];
    let plan = kubeharden_core::review::plan(&linter, &files);
    let privileged = plan
        .annotations
        .iter()
        .find(|a| a.title.contains("[privileged-container]"))
        .unwrap();
    assert!(
        privileged.message.contains(
            "\nNot fixed in container plugin: the container mounts a volume with mountPropagation: Bidirectional"
        ),
        "{}",
        privileged.message
    );
    // And no suggestion writes privileged: false.
    assert!(
        plan.comments
            .iter()
            .all(|c| !c.body.contains("privileged: false")),
        "{:?}",
        plan.comments
    );
}
