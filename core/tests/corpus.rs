//! Opt-in: the real-world corpus in `../shared/corpus` (set `KUBEHARDEN_CORPUS` to its path).
//! Skipped with a message when the folder is absent; `.ci/run` passes the path when it exists.

mod common;

use std::path::PathBuf;

use common::yaml_files;

use kubeharden_core::lint::{Linter, Settings};
use kubeharden_core::rules::Registry;
use kubeharden_core::source::SourceFile;

fn corpus() -> Option<PathBuf> {
    let dir = common::corpus_dir()?;
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "KUBEHARDEN_CORPUS={} is not a directory; corpus tests skipped",
            dir.display()
        );
        None
    }
}

#[test]
fn all_workloads_are_found_and_host_counts_agree_with_checkov_and_trivy() {
    let Some(dir) = corpus() else {
        eprintln!("KUBEHARDEN_CORPUS not set; corpus tests skipped");
        return;
    };
    let text = std::fs::read_to_string(dir.join("all-workloads.yaml")).unwrap();
    let registry = Registry::builtin().unwrap();
    let linter = Linter::new(&registry, Settings::default());
    let report = linter.lint_files(&[SourceFile::new("all-workloads.yaml", text)]);
    assert_eq!(report.workloads, 605);
    assert_eq!(report.documents, 605);
    let count = |rule: &str| report.findings.iter().filter(|f| f.rule == rule).count();
    assert_eq!(count("privileged-container"), 17);
    assert_eq!(count("host-network"), 11);
    assert_eq!(count("host-pid"), 6);
    assert_eq!(count("host-ipc"), 2);
    assert_eq!(count("invalid-yaml"), 0);
}

/// `report.workloads_by_kind` over every corpus file.
const CORPUS_WORKLOADS_BY_KIND: &str =
    "DaemonSet=36 Deployment=847 Job=48 Pod=156 ReplicationController=70 StatefulSet=52";

#[test]
fn every_corpus_file_lints_without_panicking() {
    let Some(dir) = corpus() else {
        return;
    };
    let mut files = Vec::new();
    yaml_files(&dir, &mut files);
    files.sort();
    assert!(
        files.len() >= 472,
        "only {} files under {}",
        files.len(),
        dir.display()
    );
    let sources: Vec<SourceFile> = files
        .iter()
        .map(|p| SourceFile::new(p.display().to_string(), std::fs::read_to_string(p).unwrap()))
        .collect();
    let registry = Registry::builtin().unwrap();
    let linter = Linter::new(&registry, Settings::default());
    let report = linter.lint_files(&sources);
    assert_eq!(report.files, files.len());
    // Workloads per kind over every file (1209 in all), the same before pod locations became
    // data: the corpus holds no operator objects, only their CRDs (kuberay, spark-operator),
    // which run no pods. One Deployment hides in a file over the 2 MiB default limit.
    let by_kind: Vec<String> = report
        .workloads_by_kind
        .iter()
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    eprintln!("corpus workloads by kind: {}", by_kind.join(" "));
    assert_eq!(by_kind.join(" "), CORPUS_WORKLOADS_BY_KIND, "{by_kind:?}");
    // Each finding points inside its file.
    for f in &report.findings {
        let source = sources.iter().find(|s| s.path == f.path).unwrap();
        assert!(f.range.end() <= source.text.len(), "{f:?}");
        assert!(f.start <= f.end, "{f:?}");
    }
    let invalid: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.rule == "invalid-yaml")
        .collect();
    assert!(
        invalid.is_empty(),
        "the corpus is YAML that kubectl accepts: {invalid:#?}"
    );
}
