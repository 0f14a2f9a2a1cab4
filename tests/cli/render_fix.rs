//! `kubeharden fix` on Helm charts with the real `helm`: fixes written where the user edits
//! (the values file, else the template), confirmed by rendering again. Skipped without the
//! tools unless `KUBEHARDEN_REQUIRE_RENDER=1`.

use std::process::Command;

use serde_json::Value;

use super::render_support::{
    findings, helm_template, kubeharden, outside_security_contexts, tools, write,
};

const CHART: &str = "apiVersion: v2\nname: web\nversion: 1.0.0\n";

const VALUES: &str = "image: nginx:1.27\n# Pod-level settings.\npodSecurityContext: {}\n# Hardening for the web container.\nsecurityContext: {} # kept as written\nreplicaCount: 1\n";

const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}\nspec:\n  replicas: {{ .Values.replicaCount }}\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      {{- with .Values.podSecurityContext }}\n      securityContext:\n        {{- toYaml . | nindent 8 }}\n      {{- end }}\n      containers:\n        - name: web\n          image: {{ .Values.image }}\n          securityContext:\n            {{- toYaml .Values.securityContext | nindent 12 }}\n";

#[test]
fn fix_write_fills_the_values_security_context_and_the_fixed_findings_are_gone() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            ("web/Chart.yaml", CHART),
            ("web/values.yaml", VALUES),
            ("web/templates/deployment.yaml", DEPLOYMENT),
        ],
    );
    let before = findings(dir.path());
    let fixable: Vec<&Value> = before.iter().filter(|f| f["fixable"] == true).collect();
    assert!(!fixable.is_empty(), "{before:#?}");
    for f in &fixable {
        // A confirmed source fix exists, and the finding keeps its root and variant.
        assert_eq!(f["root"], "web", "{f}");
        assert_eq!(f["variant"], "values.yaml", "{f}");
        assert_eq!(f["path"], "web/values.yaml", "{f}");
    }
    let first = helm_template(dir.path());
    let out = kubeharden(&["fix", "--write", "--unsafe-fixes", "."], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let values = std::fs::read_to_string(dir.path().join("web/values.yaml")).unwrap();
    insta::assert_snapshot!("helm_values_fixed", values);
    insta::assert_snapshot!("helm_values_fix_stderr", stderr);
    // Comments and every other line stay.
    for line in VALUES.lines().filter(|l| !l.contains("ecurityContext: {}")) {
        assert!(values.contains(line), "{line:?} lost:\n{values}");
    }
    assert!(values.contains("} # kept as written\n"), "{values}");
    // Rendering again differs only in the securityContexts, and the fixed findings are gone.
    let second = helm_template(dir.path());
    assert_ne!(first, second);
    assert_eq!(
        outside_security_contexts(&first),
        outside_security_contexts(&second)
    );
    let after = findings(dir.path());
    for f in &fixable {
        assert!(
            !after
                .iter()
                .any(|g| g["rule"] == f["rule"] && g["container"] == f["container"]),
            "{} is still reported: {after:#?}",
            f["rule"]
        );
    }
    assert!(after.iter().all(|f| f["fixable"] == false), "{after:#?}");
}

#[test]
fn a_literal_template_without_a_values_key_is_edited_in_the_template() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let template = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {{ .Release.Name }}-test\nspec:\n  containers:\n    - name: check\n      image: busybox:1.36\n      args: [\"{{ .Values.target }}\"]\n  restartPolicy: Never\n";
    write(
        dir.path(),
        &[
            ("web/Chart.yaml", CHART),
            ("web/values.yaml", "target: example.org # probed\n"),
            ("web/templates/test.yaml", template),
        ],
    );
    let first = helm_template(dir.path());
    let out = kubeharden(&["fix", "--write", "--unsafe-fixes", "."], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let fixed = std::fs::read_to_string(dir.path().join("web/templates/test.yaml")).unwrap();
    insta::assert_snapshot!("helm_template_fixed", fixed);
    // The template's own lines all stay; the values file is untouched.
    for line in template.lines() {
        assert!(fixed.contains(line), "{line:?} lost:\n{fixed}");
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("web/values.yaml")).unwrap(),
        "target: example.org # probed\n"
    );
    let second = helm_template(dir.path());
    assert_eq!(
        outside_security_contexts(&first)
            .into_iter()
            .filter(|l| !l.contains("automountServiceAccountToken"))
            .collect::<Vec<_>>(),
        outside_security_contexts(&second)
            .into_iter()
            .filter(|l| !l.contains("automountServiceAccountToken"))
            .collect::<Vec<_>>(),
        "{stderr}"
    );
    // Without --unsafe-fixes a template edit is not written: it changes every values file.
    let dir2 = tempfile::tempdir().unwrap();
    write(
        dir2.path(),
        &[
            ("web/Chart.yaml", CHART),
            ("web/values.yaml", "target: example.org\n"),
            ("web/templates/test.yaml", template),
        ],
    );
    let out = kubeharden(&["fix", "--write", "."], dir2.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("can be fixed with --unsafe-fixes"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(dir2.path().join("web/templates/test.yaml")).unwrap(),
        template
    );
}

#[test]
fn a_chart_with_neither_says_what_it_would_need() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The containers come from the values whole, as a list: no values mapping lands in a
    // securityContext, and no template line prints it.
    let template = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}\nspec:\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n        {{- toYaml .Values.containers | nindent 8 }}\n";
    let values = "containers:\n  - name: web\n    image: nginx:1.27\n";
    write(
        dir.path(),
        &[
            ("web/Chart.yaml", CHART),
            ("web/values.yaml", values),
            ("web/templates/deployment.yaml", template),
        ],
    );
    let out = kubeharden(&["fix", "--unsafe-fixes", "."], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "note: web (values.yaml): Deployment//web: [privilege-escalation-allowed] no fix in the source: the chart renders no values key into the container \"web\"'s securityContext (spec.template.spec.containers[0].securityContext); add one to templates/deployment.yaml"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("Would fix 0 findings."), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Opt-in (`KUBEHARDEN_GITOPS`): `fix --write --unsafe-fixes` over a copy of the shared
/// charts. Every written fix was confirmed; linting again, none of the findings it named is
/// reported and no render fails that rendered before. Prints how many findings got a
/// confirmed source fix and how many a note instead.
#[test]
fn the_shared_gitops_charts_get_confirmed_source_fixes() {
    let Some(gitops) = std::env::var_os("KUBEHARDEN_GITOPS") else {
        return;
    };
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("gitops");
    let status = Command::new("cp")
        .arg("-r")
        .arg(&gitops)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    let before = findings(&copy);
    let rendered = |fs: &[Value]| -> Vec<Value> {
        fs.iter()
            .filter(|f| f["root"].is_string())
            .cloned()
            .collect()
    };
    let failed = |fs: &[Value]| fs.iter().filter(|f| f["rule"] == "render-failed").count();
    let fixable: Vec<Value> = rendered(&before)
        .into_iter()
        .filter(|f| f["fixable"] == true)
        .collect();
    let started = std::time::Instant::now();
    let out = kubeharden(&["fix", "--write", "--unsafe-fixes", "."], &copy);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let notes = stderr.matches("no fix in the source").count();
    let unconfirmed = stderr.matches("was not confirmed").count();
    let after = findings(&copy);
    eprintln!(
        "gitops: {} rendered findings, {} with a confirmed source fix; fix --write: {}; {notes} notes of no source fix, {unconfirmed} proposals not confirmed; {} rendered findings after; fix took {:.1} s",
        rendered(&before).len(),
        fixable.len(),
        stderr
            .lines()
            .find(|l| l.starts_with("Fixed"))
            .unwrap_or("?"),
        rendered(&after).len(),
        took.as_secs_f64()
    );
    // Renders that share files are confirmed together, with every fix written: none of them
    // may fail that rendered before.
    let broke: Vec<String> = after
        .iter()
        .filter(|f| f["rule"] == "render-failed")
        .filter(|f| !before.iter().any(|g| g["message"] == f["message"]))
        .map(|f| {
            f["message"]
                .as_str()
                .unwrap_or("")
                .chars()
                .take(300)
                .collect()
        })
        .collect();
    eprintln!(
        "gitops: render-failed before {}, after {}; new: {broke:#?}",
        failed(&before),
        failed(&after)
    );
    assert!(broke.is_empty(), "fixes broke renders: {broke:#?}");
    let same = |a: &Value, b: &Value| {
        [
            "rule",
            "container",
            "kind",
            "namespace",
            "name",
            "root",
            "variant",
        ]
        .iter()
        .all(|k| a[k] == b[k])
    };
    for f in &fixable {
        assert!(
            !after.iter().any(|g| same(f, g)),
            "a confirmed fix left {f:#}"
        );
    }
}

/// `review` renders the charts the change reaches, from the head's files in git (not the
/// working tree), as the app does: the findings on the values line, the confirmed source fix
/// as a suggestion there, the roots in the summary. `--render never` reviews files as written.
#[test]
fn review_renders_the_charts_a_change_reaches_and_suggests_confirmed_fixes() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| super::render_support::git(dir.path(), args);
    let values = "image: nginx:1.27\n# Pod-level settings.\npodSecurityContext:\n  runAsNonRoot: true\n# Hardening for the web container.\nsecurityContext: {} # kept as written\nreplicaCount: 1\n";
    write(
        dir.path(),
        &[
            ("charts/web/Chart.yaml", CHART),
            ("charts/web/values.yaml", values),
            ("charts/web/templates/deployment.yaml", DEPLOYMENT),
            ("charts/other/Chart.yaml", &CHART.replace("web", "other")),
            ("charts/other/values.yaml", VALUES),
            ("charts/other/templates/deployment.yaml", DEPLOYMENT),
        ],
    );
    git(&["init", "-q", "-b", "main"]);
    git(&["config", "user.email", "dev@example.com"]);
    git(&["config", "user.name", "dev"]);
    git(&["add", "."]);
    git(&["commit", "-qm", "base"]);
    git(&["checkout", "-qb", "feature"]);
    let head = values.replace(
        "podSecurityContext:\n  runAsNonRoot: true\n",
        "podSecurityContext: {}\n",
    );
    write(dir.path(), &[("charts/web/values.yaml", &head)]);
    git(&["commit", "-qam", "head"]);
    // The working tree is not what is reviewed.
    write(dir.path(), &[("charts/web/values.yaml", "not: [yaml\n")]);

    let out = kubeharden(&["review", "--base", "main", "--json"], dir.path());
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let summary = v["check_run"]["summary"].as_str().unwrap();
    assert!(
        summary.contains("| `charts/web` | values.yaml | rendered |"),
        "{summary}"
    );
    // Only the chart the change reaches is rendered.
    assert!(!summary.contains("charts/other"), "{summary}");
    let annotations = v["check_run"]["annotations"].as_array().unwrap();
    assert!(
        annotations
            .iter()
            .all(|a| a["path"].as_str().unwrap().starts_with("charts/web/")),
        "{annotations:#?}"
    );
    let comments = v["review"]["comments"].as_array().unwrap();
    let fix = comments
        .iter()
        .find(|c| c["body"].as_str().unwrap().contains("```suggestion"))
        .unwrap_or_else(|| panic!("{comments:#?}"));
    assert_eq!(fix["path"], "charts/web/values.yaml");
    let body = fix["body"].as_str().unwrap();
    assert!(body.contains("run-as-root-allowed"), "{body}");
    assert!(body.contains("runAsNonRoot: true"), "{body}");
    assert!(body.contains("confirmed by rendering again"), "{body}");

    // A tool named by a relative path is found although the render runs elsewhere.
    let helm = std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join("helm"))
        .find(|p| p.is_file())
        .unwrap();
    std::fs::create_dir(dir.path().join("bin")).unwrap();
    std::os::unix::fs::symlink(helm, dir.path().join("bin/helm")).unwrap();
    let out = kubeharden(
        &["review", "--base", "main", "--json", "--helm", "bin/helm"],
        dir.path(),
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let summary = v["check_run"]["summary"].as_str().unwrap();
    assert!(
        summary.contains("| `charts/web` | values.yaml | rendered |"),
        "{summary}"
    );

    let out = kubeharden(
        &["review", "--base", "main", "--json", "--render", "never"],
        dir.path(),
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let summary = v["check_run"]["summary"].as_str().unwrap();
    assert!(!summary.contains("Rendered for this change"), "{summary}");
}
