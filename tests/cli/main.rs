//! The `kubeharden` command line, run as a user runs it.

mod kustomize_fix;
mod readme;
mod render;
mod render_fix;
#[path = "../render/mod.rs"]
mod render_support;
mod workloads;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use render_support::kubeharden;

fn examples() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

const BAD_POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  hostPID: true\n  containers:\n    - name: c\n      image: nginx:1.27\n";

#[test]
fn lint_examples_finds_and_fails() {
    let out = kubeharden(&["lint", "examples"], examples());
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    assert!(
        text.contains("examples/node-agent-daemonset.yaml:19:7: error [host-pid] hostPID: true lets the pod see and signal every process on the node (DaemonSet monitoring/node-agent)"),
        "{text}"
    );
    assert!(
        text.lines()
            .last()
            .unwrap()
            .contains("in 5 files, 8 documents, 7 workloads"),
        "{text}"
    );
    // The hardened example is clean.
    let out = kubeharden(&["lint", "examples/hardened-deployment.yaml"], examples());
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn json_has_the_documented_shape() {
    let out = kubeharden(
        &["lint", "--format", "json", "examples/web-deployment.yaml"],
        examples(),
    );
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let keys = [
        "rule",
        "severity",
        "path",
        "line",
        "column",
        "end_line",
        "end_column",
        "message",
        "kind",
        "name",
        "namespace",
        "pod",
        "container",
        "fixable",
    ];
    let first = &v["findings"][0];
    for k in keys {
        assert!(first.get(k).is_some(), "missing {k} in {first}");
    }
    assert_eq!(first.as_object().unwrap().len(), keys.len());
    assert_eq!(v["summary"]["files"], 1);
    assert_eq!(v["summary"]["documents"], 2);
    assert_eq!(v["summary"]["workloads"], 1);
    assert_eq!(
        v["summary"]["findings"].as_u64().unwrap() as usize,
        v["findings"].as_array().unwrap().len()
    );
    let secret = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "secret-in-env")
        .unwrap();
    assert_eq!(
        (secret["line"].as_u64(), secret["column"].as_u64()),
        (Some(28), Some(15))
    );
    assert_eq!(secret["container"], "web");
    assert_eq!(secret["namespace"], "shop");
}

#[test]
fn sarif_is_2_1_0_with_rule_metadata() {
    let out = kubeharden(&["lint", "--format", "sarif", "examples"], examples());
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["version"], "2.1.0");
    let run = &v["runs"][0];
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    assert!(rules.len() >= 30);
    for result in run["results"].as_array().unwrap() {
        let index = result["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[index]["id"], result["ruleId"]);
        assert!(
            rules[index]["help"]["markdown"]
                .as_str()
                .unwrap()
                .contains("## Why is this bad?")
        );
        let region = &result["locations"][0]["physicalLocation"]["region"];
        assert!(region["startLine"].as_u64().unwrap() >= 1);
        assert!(matches!(
            result["level"].as_str(),
            Some("error" | "warning" | "note")
        ));
    }
}

#[test]
fn github_format_prints_workflow_commands() {
    let out = kubeharden(
        &[
            "lint",
            "--format",
            "github",
            "examples/node-agent-daemonset.yaml",
        ],
        examples(),
    );
    let text = stdout(&out);
    assert!(
        text.lines().any(|l| l.starts_with("::error file=examples/node-agent-daemonset.yaml,line=19,col=7,endLine=19,endColumn=20,title=KubeHarden host-pid::")),
        "{text}"
    );
}

#[test]
fn stdin_profile_threshold_and_exit_codes() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubeharden"))
        .args(["lint", "-", "--profile", "baseline"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(BAD_POD.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.starts_with("<stdin>:6:3: error [host-pid]"), "{text}");
    assert_eq!(
        text.lines().count(),
        2,
        "baseline has only host-pid here: {text}"
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ok.yaml"),
        BAD_POD.replace("hostPID: true", "hostPID: false"),
    )
    .unwrap();
    let out = kubeharden(&["lint", "--profile", "baseline", "."], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    // Warnings only, and the threshold is error: success.
    let out = kubeharden(&["lint", "--fail-on", "error", "ok.yaml"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let out = kubeharden(&["lint", "missing.yaml"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read missing.yaml"));
    let out = kubeharden(&["lint", "--profile", "strict", "."], dir.path());
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_repository_config_is_found_and_its_errors_name_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(".github")).unwrap();
    std::fs::create_dir_all(dir.path().join("deploy")).unwrap();
    std::fs::create_dir_all(dir.path().join("test")).unwrap();
    std::fs::write(dir.path().join("deploy/pod.yaml"), BAD_POD).unwrap();
    std::fs::write(dir.path().join("test/pod.yaml"), BAD_POD).unwrap();
    std::fs::write(
        dir.path().join(".github/kubeharden.yaml"),
        "profile: baseline\nkubernetes-version: 1.30\nrules:\n  disable: [host-network]\n  severity:\n    host-pid: note\npaths:\n  exclude: [\"test/**\"]\nfail-on: warning\n",
    )
    .unwrap();
    let out = kubeharden(&["lint", "."], dir.path());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.starts_with("deploy/pod.yaml:6:3: note [host-pid]"),
        "{text}"
    );
    assert!(!text.contains("test/pod.yaml"), "{text}");

    std::fs::write(
        dir.path().join(".github/kubeharden.yaml"),
        "profile: baseline\nrules:\n  disable: [host-netwerk]\n  severity:\n    host-pid: fatal\n",
    )
    .unwrap();
    let out = kubeharden(&["lint", "."], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(".github/kubeharden.yaml:5:15: `rules.severity.host-pid`"),
        "{err}"
    );

    std::fs::write(
        dir.path().join(".github/kubeharden.yaml"),
        "rules:\n  disable: [host-netwerk, host-pid]\n  enable: [nope]\n",
    )
    .unwrap();
    let out = kubeharden(&["lint", "."], dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("kubeharden.yaml:2:13: `rules.disable`: unknown rule `host-netwerk`"),
        "{err}"
    );
    assert!(
        err.contains("kubeharden.yaml:3:12: `rules.enable`: unknown rule `nope`"),
        "{err}"
    );

    std::fs::write(dir.path().join(".github/kubeharden.yaml"), "profil: nsa\n").unwrap();
    let out = kubeharden(&["lint", "."], dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("kubeharden.yaml:1:1: `profil`: unknown field `profil`"),
        "{err}"
    );
}

#[test]
fn rules_and_explain() {
    let out = kubeharden(&["rules"], examples());
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(
        text.lines()
            .any(|l| l.starts_with("host-pid ") && l.contains("baseline") && l.contains("unsafe"))
    );
    let out = kubeharden(&["explain", "run-as-root-allowed"], examples());
    let text = stdout(&out);
    for section in kubeharden_core::rules::DOC_SECTIONS {
        assert!(text.contains(section), "{section}");
    }
    let out = kubeharden(&["explain", "no-such-rule"], examples());
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn files_that_are_not_utf8_are_reported_at_their_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("latin1.yaml"),
        b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: caf\xe9\n",
    )
    .unwrap();
    let out = kubeharden(&["lint", "latin1.yaml"], dir.path());
    let text = stdout(&out);
    assert!(text.starts_with("latin1.yaml:4:"), "{text}");
    assert!(text.contains("[invalid-yaml]"), "{text}");
}

#[test]
fn fix_prints_a_diff_writes_files_and_reports_what_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p  # keep me\nspec:\n  hostPID: true\n  containers:\n    - name: c\n      image: nginx:1.27\n";
    std::fs::write(dir.path().join("pod.yaml"), pod).unwrap();
    let out = kubeharden(&["fix", "--diff", "pod.yaml"], dir.path());
    // Findings without a fix (hostPID needs --unsafe-fixes, limits have none) remain.
    assert_eq!(out.status.code(), Some(1));
    let diff = stdout(&out);
    assert!(
        diff.starts_with("--- a/pod.yaml\n+++ b/pod.yaml\n"),
        "{diff}"
    );
    assert!(
        diff.contains("+        allowPrivilegeEscalation: false\n"),
        "{diff}"
    );
    assert!(
        !diff.contains("-  hostPID: true"),
        "safe fixes only: {diff}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("more can be fixed with --unsafe-fixes"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("pod.yaml")).unwrap(),
        pod,
        "--diff writes nothing"
    );

    let out = kubeharden(
        &[
            "fix",
            "--write",
            "--unsafe-fixes",
            "--ignore",
            "resource-limits-missing,image-tag-mutable",
            "pod.yaml",
        ],
        dir.path(),
    );
    let written = std::fs::read_to_string(dir.path().join("pod.yaml")).unwrap();
    assert!(written.contains("  name: p  # keep me\n"));
    assert!(!written.contains("hostPID"));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("warning: [host-pid] Removing hostPID breaks node agents")
    );
    // Everything left was fixable: exit 0, and a second run changes nothing.
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = kubeharden(
        &[
            "fix",
            "--unsafe-fixes",
            "--ignore",
            "resource-limits-missing,image-tag-mutable",
            "pod.yaml",
        ],
        dir.path(),
    );
    assert_eq!(stdout(&again), "");

    let out = kubeharden(&["fix", "--select", "no-such-rule", "pod.yaml"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let out = kubeharden(&["lint", "--format", "json", "pod.yaml"], dir.path());
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    for f in v["findings"].as_array().unwrap() {
        assert_eq!(f["fixable"], false, "{f}");
    }
}

#[test]
fn review_prints_what_the_app_would_post_from_a_local_checkout() {
    let dir = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| render_support::git(dir.path(), args);
    git(&["init", "-q", "-b", "main"]);
    git(&["config", "user.email", "dev@example.com"]);
    git(&["config", "user.name", "dev"]);
    // The base branch's configuration applies: it turns a rule off.
    std::fs::create_dir_all(dir.path().join(".github")).unwrap();
    std::fs::write(
        dir.path().join(".github/kubeharden.yaml"),
        "rules:\n  disable: [resource-limits-missing]\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("old.yaml"), BAD_POD).unwrap();
    git(&["add", "."]);
    git(&["commit", "-qm", "base"]);
    git(&["checkout", "-qb", "feature"]);
    std::fs::write(
        dir.path().join(".github/kubeharden.yaml"),
        "rules:\n  disable: [host-pid, resource-limits-missing]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("new.yaml"),
        BAD_POD.replace("name: p", "name: q"),
    )
    .unwrap();
    git(&["add", "."]);
    git(&["commit", "-qm", "head"]);
    let out = kubeharden(&["review", "--base", "main", "--json"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let comments = v["review"]["comments"].as_array().unwrap();
    // Only the added file is reviewed, with the base's configuration (host-pid still on).
    assert!(
        comments.iter().all(|c| c["path"] == "new.yaml"),
        "{comments:?}"
    );
    let annotations = v["check_run"]["annotations"].as_array().unwrap();
    assert!(
        annotations
            .iter()
            .any(|a| a["title"] == "KubeHarden [host-pid]" && a["start_line"] == 6)
    );
    assert!(
        !annotations
            .iter()
            .any(|a| a["title"] == "KubeHarden [resource-limits-missing]")
    );
    assert!(
        comments
            .iter()
            .any(|c| c["body"].as_str().unwrap().contains("```suggestion\n"))
    );
    assert!(comments.iter().all(|c| {
        c["body"]
            .as_str()
            .unwrap()
            .contains("<!-- kubeharden:fingerprint=")
    }));
}

/// A build without the app (the quick one the README starts with) says how to get it.
#[cfg(not(feature = "app"))]
#[test]
fn serve_in_a_build_without_the_app_says_how_to_build_it() {
    for sub in ["serve", "jobs"] {
        let out = kubeharden(&[sub, "--app-id", "1"], examples());
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--features app"), "{stderr}");
    }
    let out = kubeharden(&["fix", "--pin-digests", "."], examples());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--features images"));
}

#[cfg(feature = "app")]
#[test]
fn serve_refuses_to_start_without_credentials_and_never_echoes_them() {
    let dir = tempfile::tempdir().unwrap();
    let run = |envs: &[(&str, &str)], args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubeharden"));
        cmd.arg("serve").args(args).current_dir(dir.path());
        for var in [
            "APP_ID",
            "PRIVATE_KEY",
            "PRIVATE_KEY_PATH",
            "WEBHOOK_SECRET",
            "GITHUB_API_URL",
            "LISTEN",
            "PUBLIC_URL",
            "DATA_DIR",
        ] {
            cmd.env_remove(var);
        }
        cmd.envs(envs.iter().copied());
        cmd.output().unwrap()
    };
    // Nothing at all: neither credentials nor a public URL for the setup flow.
    let out = run(&[], &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "no credentials: set APP_ID, PRIVATE_KEY_PATH and WEBHOOK_SECRET, or set PUBLIC_URL"
        ),
        "{stderr}"
    );
    // Some credentials but not all: what is missing.
    let out = run(&[("WEBHOOK_SECRET", "s3cr3t-value")], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no app id: pass --app-id or set APP_ID")
    );
    // A credentials file that is not one names itself.
    std::fs::write(dir.path().join("kubeharden-credentials.json"), "{ not json").unwrap();
    let out = run(&[], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("kubeharden-credentials.json is not a KubeHarden credentials file")
    );
    std::fs::remove_file(dir.path().join("kubeharden-credentials.json")).unwrap();
    let out = run(&[("APP_ID", "1"), ("WEBHOOK_SECRET", "s3cr3t-value")], &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no private key"));
    let out = run(
        &[
            ("APP_ID", "1"),
            (
                "PRIVATE_KEY",
                "-----BEGIN RSA PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END RSA PRIVATE KEY-----\n",
            ),
            ("WEBHOOK_SECRET", "s3cr3t-value"),
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not an RSA private key in PEM form"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("c2VjcmV0") && !stderr.contains("s3cr3t-value"),
        "{stderr}"
    );
    let key = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/github/test-app-key.pem");
    let out = run(
        &[("APP_ID", "1"), ("PRIVATE_KEY_PATH", key.to_str().unwrap())],
        &[],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no webhook secret"));
    // --help does not show secret values taken from the environment.
    let out = run(&[("WEBHOOK_SECRET", "s3cr3t-value")], &["--help"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("s3cr3t-value"));
}

#[test]
fn a_rules_directory_overrides_and_rejects_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let builtin = std::fs::read_to_string(examples().join("rules/host-pid.yaml")).unwrap();
    let changed = builtin.replace("severity: error", "severity: note");
    std::fs::write(dir.path().join("host-pid.yaml"), &changed).unwrap();
    std::fs::write(dir.path().join("pod.yaml.txt"), "not a rule").unwrap();
    let rules = dir.path().to_str().unwrap();
    let out = kubeharden(&["rules", "--rules", rules], examples());
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.starts_with("host-pid ") && l.contains(" note ")),
        "{}",
        stdout(&out)
    );
    std::fs::write(dir.path().join("again.yaml"), &changed).unwrap();
    let out = kubeharden(&["rules", "--rules", rules], examples());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("duplicate rule id `host-pid`"));
}

/// A Pod, then a ConfigMap whose comment holds a Latin-1 byte: `fix --write` must never cut the
/// file at that byte. The file is left exactly as it was, with a clear error naming the byte,
/// and `lint` still reports the whole file (the ConfigMap's document included).
#[test]
fn fix_never_truncates_a_file_that_is_not_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n    - name: c\n      image: nginx:1.27\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: menu\n# caf".to_vec();
    let offset = bytes.len();
    bytes.extend_from_slice(b"\xe9\ndata:\n  dish: soup\n");
    std::fs::write(dir.path().join("mixed.yaml"), &bytes).unwrap();
    let out = kubeharden(&["fix", "--write", "mixed.yaml"], dir.path());
    assert_eq!(
        std::fs::read(dir.path().join("mixed.yaml")).unwrap(),
        bytes,
        "the file changed"
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("mixed.yaml") && stderr.contains(&format!("byte {offset}")),
        "{stderr}"
    );
    // Standard input: the bytes come back untouched.
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubeharden"))
        .args(["fix", "--write", "-"])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.stdout, bytes);
    // lint reads all of it: the byte is reported at its line, and the Pod's findings too.
    let out = kubeharden(&["lint", "--format", "json", "mixed.yaml"], dir.path());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let findings = report["findings"].as_array().unwrap();
    let encoding = findings
        .iter()
        .find(|f| f["rule"] == "invalid-yaml")
        .expect("the byte is reported");
    assert_eq!(encoding["line"], 14);
    assert!(
        encoding["message"]
            .as_str()
            .unwrap()
            .contains(&format!("byte {offset}"))
    );
    assert!(findings.iter().any(|f| f["rule"] == "run-as-root-allowed"));
    assert_eq!(report["summary"]["documents"], 2, "{report}");
}

/// `fix --write -` is a filter: the text comes out whether or not anything was fixed, so
/// `kubeharden fix --write - < a.yaml | kubectl apply -f -` never applies an empty file.
#[test]
fn fix_write_stdin_prints_the_text_even_when_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: menu  # nothing to fix\n";
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubeharden"))
        .args(["fix", "--write", "-"])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), text);
    assert_eq!(out.status.code(), Some(0));
}

/// The 2 MiB default hides the workloads of large real bundles (CRDs run to megabytes): the
/// limit is the user's to raise, from the command line or the repository's configuration, up
/// to a ceiling.
#[test]
fn the_file_size_limit_is_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\ndata:\n");
    for i in 0.. {
        if text.len() > 3 * 1024 * 1024 {
            break;
        }
        text += &format!("  k{i}: \"{}\"\n", "0123456789".repeat(7));
    }
    text += "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  hostPID: true\n  containers:\n    - name: c\n      image: nginx:1.27\n";
    std::fs::write(dir.path().join("bundle.yaml"), &text).unwrap();
    let out = kubeharden(&["lint", "bundle.yaml"], dir.path());
    let report = stdout(&out);
    assert!(
        report.contains("[yaml-limit]") && !report.contains("[host-pid]"),
        "{report}"
    );
    let out = kubeharden(
        &["lint", "--max-file-size", "4MiB", "bundle.yaml"],
        dir.path(),
    );
    let report = stdout(&out);
    assert!(
        report.contains("[host-pid]") && !report.contains("[yaml-limit]"),
        "{report}"
    );
    std::fs::write(
        dir.path().join(".kubeharden.yaml"),
        "limits:\n  max-file-size: 4MiB\n",
    )
    .unwrap();
    let out = kubeharden(&["lint", "bundle.yaml"], dir.path());
    assert!(stdout(&out).contains("[host-pid]"));
    std::fs::write(
        dir.path().join(".kubeharden.yaml"),
        "limits:\n  max-file-size: 1GiB\n",
    )
    .unwrap();
    let out = kubeharden(&["lint", "bundle.yaml"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(".kubeharden.yaml:2:") && stderr.contains("GiB"),
        "{stderr}"
    );
    let out = kubeharden(
        &["lint", "--max-file-size", "100MiB", "bundle.yaml"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
}
