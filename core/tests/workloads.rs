//! Every kind shipped in `rules/workloads/` beyond the core API groups has a fixture,
//! `tests/fixtures/workloads/<group>/<Kind>.yaml`, whose every container is privileged: linting
//! it must find each of them (so each pod location is reached), and its findings are
//! snapshot-tested with the pod and container they name.

mod common;

use std::path::{Path, PathBuf};

use kubeharden_core::lint::Linter;
use kubeharden_core::rules::Registry;
use kubeharden_core::source::SourceFile;

/// Groups whose kinds the per-rule fixtures already cover.
const CORE_GROUPS: [&str; 4] = ["", "apps", "extensions", "batch"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/workloads")
}

#[test]
fn every_shipped_operator_kind_has_a_fixture_whose_pods_are_all_linted() {
    let registry = Registry::builtin().unwrap();
    let mut problems = Vec::new();
    let mut seen = 0;
    for entry in registry.workloads().entries() {
        for group in entry
            .groups
            .iter()
            .filter(|g| !CORE_GROUPS.contains(&g.as_str()))
        {
            for kind in &entry.kinds {
                let path = fixtures().join(group).join(format!("{kind}.yaml"));
                let Ok(text) = std::fs::read_to_string(&path) else {
                    problems.push(format!("{kind}.{group}: no fixture at {}", path.display()));
                    continue;
                };
                seen += 1;
                let expected: usize = text
                    .lines()
                    .find_map(|l| l.strip_prefix("# privileged containers: "))
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or_else(|| {
                        panic!("{}: no `# privileged containers: N`", path.display())
                    });
                let (settings, facts) = common::fixture_settings(&text);
                let linter = Linter::new(&registry, settings).with_facts(facts);
                let name = format!("{group}/{kind}.yaml");
                let report = linter.lint_files(&[SourceFile::new(name.clone(), text)]);
                let privileged: Vec<_> = report
                    .findings
                    .iter()
                    .filter(|f| f.rule == "privileged-container")
                    .collect();
                if privileged.len() != expected {
                    problems.push(format!(
                        "{name}: {} privileged containers found, {expected} expected",
                        privileged.len()
                    ));
                }
                if report
                    .workloads_by_kind
                    .get(kind.as_str())
                    .copied()
                    .unwrap_or(0)
                    == 0
                {
                    problems.push(format!("{name}: no workload of kind {kind}"));
                }
                let mut shown = format!("workloads: {}\n", report.workloads);
                for f in &report.findings {
                    shown += &format!(
                        "{}:{} [{}] {} ({})\n",
                        f.start.line,
                        f.start.column,
                        f.rule,
                        f.message,
                        f.subject().unwrap_or_default()
                    );
                }
                insta::assert_snapshot!(format!("workload__{group}__{kind}"), shown);
            }
        }
    }
    assert!(seen >= 30, "only {seen} operator kinds");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
