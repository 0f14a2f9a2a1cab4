//! An object handed over as JSON (an admission request's) is linted and fixed as its manifest
//! is: the same findings, and the fixed object equals the fixed manifest read as JSON.

mod common;

use kubeharden_core::fix::fix_file;
use kubeharden_core::lint::{Linter, Settings};
use kubeharden_core::object::JsonObject;
use kubeharden_core::rules::{Applicability, Registry};
use kubeharden_core::source::SourceFile;
use kubeharden_core::yaml::{self, Limits};
use serde_json::Value;

fn findings(report: &kubeharden_core::lint::Report) -> Vec<(String, Option<String>, String)> {
    let mut out: Vec<_> = report
        .findings
        .iter()
        .map(|f| (f.rule.clone(), f.container.clone(), f.message.clone()))
        .collect();
    out.sort();
    out
}

#[test]
fn examples_as_json_lint_and_fix_as_their_manifests() {
    let registry = Registry::builtin().unwrap();
    let linter = Linter::new(&registry, Settings::default());
    let mut compared = 0;
    let dir = common::repo_root().join("examples");
    let mut files = Vec::new();
    common::yaml_files(&dir, &mut files);
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let stream = yaml::parse(&text, &Limits::default());
        let starts: Vec<usize> = stream.documents.iter().map(|d| d.range.start()).collect();
        for (i, doc) in stream.documents.iter().enumerate() {
            let Some(root) = doc.root() else { continue };
            let Ok(value) = yaml::de::from_node::<Value>(doc, root) else {
                continue;
            };
            let end = starts.get(i + 1).copied().unwrap_or(text.len());
            let manifest = SourceFile::new("object", &text[doc.range.start()..end]);
            let expected = linter.lint_files(std::slice::from_ref(&manifest));
            if expected.workloads == 0 {
                continue;
            }
            let object = JsonObject::new(&value, &linter.settings.limits);
            let got = object.lint(&linter);
            assert_eq!(findings(&got), findings(&expected), "{}", path.display());
            for f in &got.findings {
                if f.hit.is_some() {
                    let field = object.field(f).unwrap();
                    assert!(field.contains("spec"), "{}: {field}", f.rule);
                }
            }
            let fixed = fix_file(&linter, &manifest, Applicability::Safe).unwrap();
            let fixed_stream = yaml::parse(&fixed.fixed, &Limits::default());
            let fixed_doc = fixed_stream
                .documents
                .iter()
                .find(|d| d.root().is_some())
                .unwrap();
            let expected: Value =
                yaml::de::from_node(fixed_doc, fixed_doc.root().unwrap()).unwrap();
            assert_eq!(
                object.fix(&linter, Applicability::Safe).unwrap(),
                expected,
                "{}",
                path.display()
            );
            compared += 1;
        }
    }
    assert!(compared >= 3, "only {compared} workloads compared");
}

#[test]
fn pod_specs_are_found_for_every_pod_bearing_kind() {
    let cron: Value = serde_json::json!({
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"},
        "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "a"}]}}}}}
    });
    let kinds = kubeharden_core::workloads::WorkloadKinds::builtin().unwrap();
    let object = JsonObject::new(&cron, &Limits::default());
    assert_eq!(
        object.pod_specs(&kinds),
        vec![serde_json::json!({"containers": [{"name": "a"}]})]
    );
    let config_map =
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
    assert!(
        JsonObject::new(&config_map, &Limits::default())
            .pod_specs(&kinds)
            .is_empty()
    );
}
