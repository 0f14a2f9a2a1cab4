//! Per-rule fixtures, in the style of ruff and Polaris.
//!
//! Every rule has a folder `tests/fixtures/rules/<rule-id>/` with `fail*.yaml` files, each of
//! which must produce at least one finding of that rule, and `pass*.yaml` files, which must
//! produce none. A first line `# kubeharden-test: --profile baseline --kubernetes-version 1.33`
//! changes the settings for that file. The findings of every fail file are snapshot-tested.

mod common;

use std::path::{Path, PathBuf};

use kubeharden_core::lint::Linter;
use kubeharden_core::rules::Registry;
use kubeharden_core::source::SourceFile;

const RENDER_RULES: [&str; 2] = ["render-failed", "render-skipped"];

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rules")
}

fn lint_fixture(registry: &Registry, path: &Path) -> kubeharden_core::lint::Report {
    let text = std::fs::read_to_string(path).unwrap();
    let name = path
        .strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap()
        .display()
        .to_string();
    let (settings, facts) = common::fixture_settings(&text);
    let linter = Linter::new(registry, settings).with_facts(facts);
    linter.lint_files(&[SourceFile::new(name, text)])
}

fn render(report: &kubeharden_core::lint::Report, rule: &str) -> String {
    let mut out = String::new();
    for f in report.findings.iter().filter(|f| f.rule == rule) {
        let object = f.object.as_ref().map(|o| o.to_string()).unwrap_or_default();
        let container = f
            .container
            .as_deref()
            .map(|c| format!(" container={c}"))
            .unwrap_or_default();
        out += &format!(
            "{}:{}-{}:{} {} [{}] {} | {object}{container} fixable={}\n",
            f.start.line,
            f.start.column,
            f.end.line,
            f.end.column,
            f.severity,
            f.rule,
            f.message,
            f.fixable
        );
    }
    out
}

#[test]
fn every_rule_has_fixtures_that_fail_and_pass() {
    let registry = Registry::builtin().unwrap();
    let mut problems = Vec::new();
    for rule in registry.iter() {
        // Reported by the shell when a chart or kustomization does not render; the real tools
        // test them (tests/cli/render.rs), as no manifest on its own can produce them.
        if RENDER_RULES.contains(&rule.id.as_str()) {
            continue;
        }
        let dir = fixtures_dir().join(&rule.id);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        let fails: Vec<_> = files
            .iter()
            .filter(|p| file_name(p).starts_with("fail"))
            .collect();
        let passes: Vec<_> = files
            .iter()
            .filter(|p| file_name(p).starts_with("pass"))
            .collect();
        if fails.is_empty() || passes.is_empty() {
            problems.push(format!(
                "{}: needs fail*.yaml and pass*.yaml in {}",
                rule.id,
                dir.display()
            ));
            continue;
        }
        for path in fails {
            let report = lint_fixture(&registry, path);
            let out = render(&report, &rule.id);
            if out.is_empty() {
                problems.push(format!(
                    "{}: {} produced no finding",
                    rule.id,
                    path.display()
                ));
            }
            let snapshot = format!("{}__{}", rule.id, file_name(path).trim_end_matches(".yaml"));
            insta::assert_snapshot!(snapshot, out);
        }
        for path in passes {
            let report = lint_fixture(&registry, path);
            let out = render(&report, &rule.id);
            if !out.is_empty() {
                problems.push(format!(
                    "{}: {} should pass but produced:\n{out}",
                    rule.id,
                    path.display()
                ));
            }
        }
    }
    // Fixture folders for rules that do not exist are mistakes too.
    for entry in std::fs::read_dir(fixtures_dir()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if registry.get(&name).is_none() {
            problems.push(format!("fixtures for unknown rule `{name}`"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn every_rule_file_is_complete() {
    let registry = Registry::builtin().unwrap();
    for rule in registry.iter() {
        assert!(!rule.title.is_empty(), "{} has no title", rule.id);
        assert!(
            !rule.docs.contains("TBD"),
            "{} has placeholder docs",
            rule.id
        );
        if rule.is_fixable() {
            assert!(
                rule.fix
                    .as_ref()
                    .is_some_and(|f| !f.safety.trim().is_empty()),
                "{}",
                rule.id
            );
        }
        // Rules the engine evaluates have checks; the engine's own diagnostics have none.
        let engine = [
            "invalid-yaml",
            "yaml-limit",
            "duplicate-key",
            "invalid-field",
            "unused-exemption",
            "invalid-exemption",
            "render-failed",
            "render-skipped",
        ];
        assert_eq!(
            rule.checks.is_empty(),
            engine.contains(&rule.id.as_str()),
            "{}",
            rule.id
        );
    }
}

#[test]
fn the_catalog_ids_are_all_there() {
    let registry = Registry::builtin().unwrap();
    let catalog = [
        "host-network",
        "host-pid",
        "host-ipc",
        "privileged-container",
        "capabilities-beyond-baseline",
        "host-path-volume",
        "host-port",
        "probe-host-override",
        "apparmor-unconfined",
        "selinux-custom-options",
        "unmasked-proc-mount",
        "seccomp-unconfined",
        "unsafe-sysctls",
        "windows-host-process",
        "restricted-volume-types",
        "privilege-escalation-allowed",
        "run-as-root-allowed",
        "run-as-uid-zero",
        "seccomp-profile-missing",
        "capabilities-not-dropped",
        "writable-root-filesystem",
        "service-account-token-mounted",
        "run-as-group-root",
        "container-runtime-socket",
        "sensitive-host-path",
        "writable-host-path",
        "dangerous-capabilities",
        "secret-in-env",
        "resource-limits-missing",
        "image-tag-mutable",
    ];
    for id in catalog {
        assert!(registry.get(id).is_some(), "missing rule {id}");
    }
}

#[test]
fn extra_rule_files_override_and_reject_duplicates() {
    let builtin = std::fs::read_to_string(common::repo_root().join("rules/host-pid.yaml")).unwrap();
    let changed = builtin.replace("severity: error", "severity: note");
    let mut registry = Registry::builtin().unwrap();
    registry
        .extend([("extra/host-pid.yaml".to_string(), changed.as_str())])
        .unwrap();
    assert_eq!(
        registry.get("host-pid").unwrap().severity,
        kubeharden_core::rules::Severity::Note
    );

    let err = Registry::builtin()
        .unwrap()
        .extend([
            ("extra/again.yaml".to_string(), changed.as_str()),
            ("extra/host-pid.yaml".to_string(), changed.as_str()),
        ])
        .unwrap_err();
    assert!(
        err.to_string().contains("duplicate rule id `host-pid`"),
        "{err}"
    );
}

#[test]
fn rule_file_errors_name_the_line() {
    let text = "id: x\ntitle: t\nprofile: strict\nseverity: error\ndocs: ''\n";
    let err = kubeharden_core::rules::parse_rule("rules/x.yaml", text)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("rules/x.yaml:3:10: "), "{err}");
    assert!(err.contains("strict"), "{err}");
    let text = "id: x\ntitle: t\nprofile: nsa\nseverity: error\ndocs: '## What it does'\n";
    let err = kubeharden_core::rules::parse_rule("rules/x.yaml", text)
        .unwrap_err()
        .to_string();
    assert!(err.contains("## Why is this bad?"), "{err}");
}

#[test]
fn the_rule_pages_in_docs_are_up_to_date() {
    let registry = Registry::builtin().unwrap();
    let dir = common::repo_root().join("docs/rules");
    let mut stale = Vec::new();
    for rule in registry.iter() {
        let path = dir.join(format!("{}.md", rule.id));
        if std::fs::read_to_string(&path).ok().as_deref() != Some(rule.doc_page().as_str()) {
            stale.push(rule.id.clone());
        }
    }
    let pages = std::fs::read_dir(&dir).unwrap().count();
    assert!(
        stale.is_empty() && pages == registry.iter().count(),
        "docs/rules is stale for {stale:?} ({pages} pages): run `cargo run -- rules --write-docs docs/rules`"
    );
}
