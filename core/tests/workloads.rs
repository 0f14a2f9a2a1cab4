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

const RAY: &str = "apiVersion: ray.io/v1
kind: RayCluster
metadata:
  name: train
  namespace: ml
spec:
  headGroupSpec:
    rayStartParams: {}
    template:
      spec:
        containers:
        - name: head
          image: rayproject/ray:2.9.0
          securityContext:
            privileged: true
  workerGroupSpecs:
  - groupName: cpu
    rayStartParams: {}
    template:
      metadata:
        annotations:
          kubeharden.dev/ignore: privileged-container
          kubeharden.dev/ignore-reason: the worker drives the node's GPUs
      spec:
        containers:
        - name: worker
          image: rayproject/ray:2.9.0
          securityContext:
            privileged: true
  - groupName: spare
    rayStartParams: {}
    template:
      spec:
        containers:
        - name: worker
          image: rayproject/ray:2.9.0
";

fn baseline(registry: &Registry) -> Linter<'_> {
    let settings = kubeharden_core::lint::Settings {
        profile: kubeharden_core::rules::Profile::Baseline,
        ..Default::default()
    };
    Linter::new(registry, settings)
}

/// An exemption on one pod template of an object exempts that pod only; the object's own
/// annotations would cover them all.
#[test]
fn exemptions_are_read_from_each_pods_template() {
    let registry = Registry::builtin().unwrap();
    let report = baseline(&registry).lint_files(&[SourceFile::new("ray.yaml", RAY)]);
    let shown: Vec<String> = report
        .findings
        .iter()
        .map(|f| format!("{} {}", f.rule, f.subject().unwrap_or_default()))
        .collect();
    assert_eq!(
        shown,
        [
            "privileged-container RayCluster ml/train, pod spec.headGroupSpec.template.spec, container \"head\""
        ],
        "{shown:#?}"
    );
    assert_eq!(report.workloads, 3);
    assert_eq!(report.workloads_by_kind["RayCluster"], 3);
}

/// Two worker groups with containers of the same name get separate review comments, each
/// saying which pod it is about (before findings told pods apart, fixing one worker group's
/// container looked unfixed while the other's identical finding remained, and its comment was
/// lost).
#[test]
fn review_comments_name_the_pod() {
    let registry = Registry::builtin().unwrap();
    let linter = Linter::new(&registry, kubeharden_core::lint::Settings::default());
    let lines = RAY.lines().count();
    let file = kubeharden_core::change::PrFile::new(
        "ray.yaml",
        RAY,
        Some(format!("@@ -0,0 +1,{lines} @@\n")),
    );
    let review = kubeharden_core::review::plan(&linter, &[file]);
    let spare = review
        .comments
        .iter()
        .find(|c| {
            c.body
                .contains("(pod `spec.workerGroupSpecs[1].template.spec`)")
        })
        .unwrap_or_else(|| panic!("{:#?}", review.comments));
    assert!(
        spare.body.contains(
            "hardens `RayCluster ml/train` (pod `spec.workerGroupSpecs[1].template.spec`)"
        ),
        "{}",
        spare.body
    );
    let fingerprints: std::collections::BTreeSet<&str> = review
        .comments
        .iter()
        .map(|c| c.fingerprint.as_str())
        .collect();
    assert_eq!(fingerprints.len(), review.comments.len());
}
