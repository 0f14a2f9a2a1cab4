//! Snapshots of what `fix` writes: the edge cases of tests/fixtures/fix (safe fixes, then
//! unsafe ones too) and, for every fixable rule, its failing fixtures fixed by that rule alone.

mod common;

use std::path::{Path, PathBuf};

use kubeharden_core::fix::{fix_file, fix_parsed, suggest};
use kubeharden_core::lint::{Linter, Settings};
use kubeharden_core::parsed::Parsed;
use kubeharden_core::rules::{Applicability, Registry};
use kubeharden_core::source::SourceFile;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn diff(old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(2)
        .to_string()
        // Line endings are part of the fix: show them.
        .replace('\r', "␍")
}

fn report(linter: &Linter<'_>, path: &str, text: &str) -> String {
    let mut out = String::new();
    for min in [Applicability::Safe, Applicability::Unsafe] {
        let result = fix_file(linter, &SourceFile::new(path, text), min).unwrap();
        out += &format!("=== {min:?} fixes ===\n");
        let mut fixed: Vec<String> = result
            .fixed_findings
            .iter()
            .map(|f| format!("{}@{}:{}", f.rule, f.start.line, f.start.column))
            .collect();
        fixed.dedup();
        out += &format!("fixed: {}\n", fixed.join(" "));
        for note in &result.notes {
            out += &format!("note: {note}\n");
        }
        out += &diff(text, &result.fixed);
        // The suggestions a review would carry reproduce the same text.
        let s = suggest::suggestions(text, &result.fixed);
        assert_eq!(suggest::apply(text, &s), result.fixed, "{path}");
    }
    out
}

#[test]
fn edge_cases() {
    let registry = Registry::builtin().unwrap();
    let linter = Linter::new(&registry, Settings::default());
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("tests/fixtures/fix"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 12);
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        insta::assert_snapshot!(format!("edge__{name}"), report(&linter, &name, &text));
    }
}

#[test]
fn every_fixable_rule_fixes_its_failing_fixtures() {
    let registry = Registry::builtin().unwrap();
    for rule in registry.iter().filter(|r| r.is_fixable()) {
        let dir = root().join("tests/fixtures/rules").join(&rule.id);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("fail"))
            .collect();
        files.sort();
        let mut changed = false;
        for path in files {
            let text = std::fs::read_to_string(&path).unwrap();
            // This rule alone, with the fixture's own settings.
            let (mut settings, facts) = common::fixture_settings(&text);
            settings.disable = registry
                .iter()
                .map(|r| r.id.clone())
                .filter(|id| *id != rule.id)
                .collect();
            let linter = Linter::new(&registry, settings).with_facts(facts);
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let parsed = Parsed::new(
                SourceFile::new(&name, text.as_str()),
                &linter.settings.limits,
            );
            let result = fix_parsed(&linter, &parsed, Applicability::Unsafe).unwrap();
            changed |= result.fixed != text;
            // Each suggestion with the findings it resolves, as a review comment shows them.
            let resolving = suggest::with_findings(
                &parsed,
                &result.fixed,
                &result.fixed_findings,
                &result.origins,
            );
            let mut shown = String::new();
            for r in &resolving {
                shown += &format!(
                    "suggestion for lines {}-{}:\n",
                    r.suggestion.start_line, r.suggestion.end_line
                );
                for &i in &r.findings {
                    let f = &result.fixed_findings[i];
                    shown += &format!(
                        "  resolves {}:{} [{}] {}\n",
                        f.start.line, f.start.column, f.rule, f.message
                    );
                }
            }
            let resolved: usize = resolving.iter().map(|r| r.findings.len()).sum();
            assert_eq!(
                resolved,
                result.fixed_findings.len(),
                "{}: {name}: a fixed finding has no suggestion",
                rule.id
            );
            insta::assert_snapshot!(
                format!("{}__{name}", rule.id),
                format!("{shown}{}", diff(&text, &result.fixed))
            );
        }
        assert!(
            changed,
            "{}: fixable, but none of its failing fixtures changed",
            rule.id
        );
    }
}

#[test]
fn rules_wanting_different_values_at_one_node_get_neither_and_a_note() {
    // A rule of one's own that wants the opposite of privilege-escalation-allowed.
    let builtin = std::fs::read_to_string(
        common::repo_root().join("rules/privilege-escalation-allowed.yaml"),
    )
    .unwrap();
    let opposite = builtin
        .replace("id: privilege-escalation-allowed", "id: escalation-wanted")
        .replace(
            "condition: {must-equal: false}",
            "condition: {must-equal: true}",
        )
        .replace("fix: {set: false}", "fix: {set: true}");
    let mut registry = Registry::builtin().unwrap();
    registry
        .extend([(
            "custom/escalation-wanted.yaml".to_string(),
            opposite.as_str(),
        )])
        .unwrap();
    let linter = Linter::new(&registry, Settings::default());
    let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n    - name: a\n      image: nginx:1.27\n      securityContext: &sc\n        runAsUser: 1000\n    - name: b\n      image: nginx:1.27\n      securityContext: *sc\n";
    let result = fix_file(
        &linter,
        &SourceFile::new("p.yaml", text),
        Applicability::Safe,
    )
    .unwrap();
    assert!(
        !result.fixed.contains("allowPrivilegeEscalation"),
        "{}",
        result.fixed
    );
    let notes: Vec<&String> = result
        .notes
        .iter()
        .filter(|n| n.contains("different values of allowPrivilegeEscalation (false, true)"))
        .collect();
    assert_eq!(notes.len(), 2, "{:?}", result.notes);
    assert!(result.refused.len() >= 2);
}
