//! The promises of `kubeharden fix`, shared by the fixture, corpus and property tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use kubeharden_core::constraints;
use kubeharden_core::fix::{FixResult, fix_file, suggest};
use kubeharden_core::lint::Linter;
use kubeharden_core::rules::Applicability;
use kubeharden_core::source::SourceFile;
use kubeharden_core::yaml::{self, Limits};
use serde_json::Value;

/// The repository's root: the top-level `rules/`, `examples/` and `docs/` live there.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the core crate sits inside the repository")
        .to_path_buf()
}

/// `KUBEHARDEN_CORPUS`, a relative path read from the repository's root (as the README gives
/// it), whichever crate's tests run.
pub fn corpus_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("KUBEHARDEN_CORPUS")?);
    Some(if dir.is_relative() {
        repo_root().join(dir)
    } else {
        dir
    })
}

/// Peak resident memory of this process (VmHWM), in MB.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

fn comment_lines(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with('#'))
        .collect()
}

/// Every document as JSON (None where a document does not convert, e.g. a non-string key).
fn documents(text: &str) -> Vec<Option<Value>> {
    let stream = yaml::parse(text, &Limits::default());
    stream
        .documents
        .iter()
        .map(|d| {
            d.root()
                .and_then(|r| yaml::de::from_node::<Value>(d, r).ok())
        })
        .collect()
}

/// Paths (dotted, `[]` for items) where two JSON values differ.
fn differences(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                match y.get(k) {
                    Some(w) => differences(v, w, &format!("{path}.{k}"), out),
                    None => out.push(format!("{path}.{k}")),
                }
            }
            for k in y.keys().filter(|k| !x.contains_key(*k)) {
                out.push(format!("{path}.{k}"));
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (v, w) in x.iter().zip(y) {
                differences(v, w, &format!("{path}[]"), out);
            }
        }
        _ if a == b => {}
        _ => out.push(path.to_string()),
    }
}

/// What a fix may change: hardening fields at the places they belong, nothing else.
fn allowed(path: &str) -> bool {
    const CONTAINER_FIELDS: &[&str] = &[
        "securityContext",
        "securityContext.allowPrivilegeEscalation",
        "securityContext.privileged",
        "securityContext.readOnlyRootFilesystem",
        "securityContext.runAsNonRoot",
        "securityContext.capabilities",
        "securityContext.capabilities.drop",
        "securityContext.capabilities.drop[]",
        "securityContext.capabilities.add",
        "securityContext.seccompProfile",
        "securityContext.seccompProfile.type",
        "securityContext.appArmorProfile",
        "securityContext.appArmorProfile.type",
        "securityContext.procMount",
        "ports[].hostPort",
        "volumeMounts[].readOnly",
        "livenessProbe.httpGet.host",
        "livenessProbe.tcpSocket.host",
        "readinessProbe.httpGet.host",
        "readinessProbe.tcpSocket.host",
        "startupProbe.httpGet.host",
        "startupProbe.tcpSocket.host",
        "lifecycle.postStart.httpGet.host",
        "lifecycle.postStart.tcpSocket.host",
        "lifecycle.preStop.httpGet.host",
        "lifecycle.preStop.tcpSocket.host",
    ];
    const POD_FIELDS: &[&str] = &[
        "securityContext",
        "securityContext.runAsNonRoot",
        "securityContext.seccompProfile",
        "securityContext.seccompProfile.type",
        "securityContext.appArmorProfile",
        "securityContext.appArmorProfile.type",
        "automountServiceAccountToken",
        "hostNetwork",
        "hostPID",
        "hostIPC",
    ];
    // Before the containers: `.container.` would match the annotation's key.
    if path.contains(".annotations.container.apparmor.security.beta.kubernetes.io/") {
        return true;
    }
    // Pod spec containers first, then containers operators keep elsewhere (rules/workloads):
    // Argo templates' `container`, `script` and `sidecars`, Tekton `steps` and `sidecars`, a
    // Spark driver or executor as its own main container.
    for kind in [
        "containers[].",
        "initContainers[].",
        "ephemeralContainers[].",
        "sidecars[].",
        "steps[].",
        ".container.",
        ".script.",
        ".driver.",
        ".executor.",
    ] {
        if let Some(i) = path.find(kind) {
            let rest = &path[i + kind.len()..];
            return CONTAINER_FIELDS.contains(&rest);
        }
    }
    // Extension keys (`x-…: &anchor`) hold definitions that `<<` merges into pod specs and
    // containers; fixes change them at the definition.
    if let Some(rest) = path.strip_prefix(".x-") {
        // The anchored node may be a whole securityContext or part of one.
        let field = rest.split_once('.').map_or("", |(_, f)| f);
        return !field.is_empty()
            && POD_FIELDS
                .iter()
                .chain(CONTAINER_FIELDS)
                .any(|f| *f == field || f.ends_with(&format!(".{field}")));
    }
    // Pod specs, and where operators keep pod fields (an Argo template, a workflow's spec).
    [".spec.", "items[].spec.", ".templates[].", ".workflowSpec."]
        .iter()
        .any(|spec| {
            path.rfind(spec)
                .is_some_and(|i| POD_FIELDS.contains(&&path[i + spec.len()..]))
        })
}

/// Combinations Kubernetes refuses (`kubeharden_core::constraints`) that `after` has and
/// `before` had not, by document, object and container.
pub fn new_refusals(before: &str, after: &str) -> Vec<String> {
    let kinds =
        kubeharden_core::workloads::WorkloadKinds::builtin().expect("shipped workload kinds");
    let found = |text: &str| -> Vec<String> {
        yaml::parse(text, &Limits::default())
            .documents
            .iter()
            .enumerate()
            .flat_map(|(d, doc)| {
                constraints::found_in(doc, &kinds)
                    .into_iter()
                    .map(move |f| {
                        format!(
                            "document {d}: {} container {:?}: {}",
                            f.object, f.container, f.constraint
                        )
                    })
            })
            .collect()
    };
    let old = found(before);
    found(after)
        .into_iter()
        .filter(|f| !old.contains(f))
        .collect()
}

/// Neither the safe nor the unsafe fixes may leave a combination Kubernetes refuses, and the
/// planner, not the post-check, must have kept them out.
fn check_constraints(result: &FixResult, path: &str, text: &str) -> Result<(), String> {
    let refused = new_refusals(text, &result.fixed);
    if !refused.is_empty() {
        return Err(format!(
            "{path}: the fixed text has what Kubernetes refuses: {refused:?}\n{}",
            result.fixed
        ));
    }
    if let Some(n) = result.notes.iter().find(|n| n.contains("withheld")) {
        return Err(format!("{path}: the post-check had to step in: {n}"));
    }
    Ok(())
}

pub fn check(linter: &Linter<'_>, path: &str, text: &str) -> Result<FixResult, String> {
    let file = SourceFile::new(path, text);
    let safe = fix_file(linter, &file, Applicability::Safe).map_err(|e| e.to_string())?;
    check_constraints(&safe, path, text)?;
    let result = fix_file(linter, &file, Applicability::Unsafe).map_err(|e| e.to_string())?;
    check_constraints(&result, path, text)?;
    let fixed = &result.fixed;
    if fixed == text {
        return Ok(result);
    }
    // Parses as well as before.
    let before = yaml::parse(text, &Limits::default());
    let after = yaml::parse(fixed, &Limits::default());
    if after.errors.len() > before.errors.len() {
        return Err(format!(
            "{path}: the fix broke the YAML: {:?}\n{fixed}",
            after.errors
        ));
    }
    // Same documents, same order, changed only where fixes may change them.
    let (old_docs, new_docs) = (documents(text), documents(fixed));
    if old_docs.len() != new_docs.len() {
        return Err(format!(
            "{path}: {} documents became {}",
            old_docs.len(),
            new_docs.len()
        ));
    }
    for (i, (a, b)) in old_docs.iter().zip(&new_docs).enumerate() {
        let (Some(a), Some(b)) = (a, b) else { continue };
        let mut diffs = Vec::new();
        differences(a, b, "", &mut diffs);
        if let Some(bad) = diffs.iter().find(|d| !allowed(d)) {
            return Err(format!(
                "{path}: document {i}: the fix changed `{bad}`\n{fixed}"
            ));
        }
    }
    // Every comment line survives, in order.
    let old_comments = comment_lines(text);
    let new_comments = comment_lines(fixed);
    let mut it = new_comments.iter();
    for c in &old_comments {
        if !it.any(|n| n == c) {
            return Err(format!("{path}: comment line lost: {c}"));
        }
    }
    // What the fixes claimed is gone.
    for f in &result.claimed {
        if result
            .remaining
            .findings
            .iter()
            .any(|r| kubeharden_core::fix::same_finding(r, f))
        {
            return Err(format!(
                "{path}: still reports {} ({}) after fixing it\n{fixed}",
                f.rule, f.message
            ));
        }
    }
    // Fixing twice changes nothing.
    let again = fix_file(
        linter,
        &SourceFile::new(path, fixed.clone()),
        Applicability::Unsafe,
    )
    .map_err(|e| e.to_string())?;
    if &again.fixed != fixed {
        return Err(format!(
            "{path}: a second fix changed the text again\n{}",
            again.fixed
        ));
    }
    // The suggestions reproduce the fixed text, and never overlap.
    let suggestions = suggest::suggestions(text, fixed);
    if suggest::apply(text, &suggestions) != *fixed {
        return Err(format!(
            "{path}: the suggestions do not reproduce the fixed text"
        ));
    }
    if suggestions
        .windows(2)
        .any(|w| w[0].end_line >= w[1].start_line)
    {
        return Err(format!("{path}: overlapping suggestions"));
    }
    Ok(result)
}

/// The settings and facts a fixture asks for in its first line:
/// `# kubeharden-test: --profile baseline --kubernetes-version 1.33 --enable RULE
/// --allowed-registry PREFIX --digest IMAGE=DIGEST --trivy-report IMAGE=FILE --scan-failed IMAGE`
/// (report files are read from `tests/fixtures/scanners/`).
pub fn fixture_settings(
    text: &str,
) -> (
    kubeharden_core::lint::Settings,
    kubeharden_core::facts::Facts,
) {
    use kubeharden_core::vuln::ScanOutcome;
    let mut settings = kubeharden_core::lint::Settings::default();
    let Some(args) = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("# kubeharden-test:"))
    else {
        return (settings, Default::default());
    };
    let mut digests = std::collections::BTreeMap::new();
    let mut scans = std::collections::BTreeMap::new();
    let words: Vec<&str> = args.split_whitespace().collect();
    for pair in words.chunks(2) {
        let (flag, value) = match pair {
            [flag, value] => (*flag, *value),
            other => panic!("fixture flag {other:?} needs a value"),
        };
        let kv = || {
            value
                .split_once('=')
                .unwrap_or_else(|| panic!("{flag} takes IMAGE=VALUE"))
        };
        match flag {
            "--profile" => settings.profile = value.parse().unwrap(),
            "--kubernetes-version" => settings.kube_version = value.parse().unwrap(),
            "--enable" => {
                settings.enable.insert(value.to_string());
            }
            "--allowed-registry" => settings.images.allowed_registries.push(value.to_string()),
            "--digest" => {
                let (image, digest) = kv();
                digests.insert(image.to_string(), digest.to_string());
            }
            "--trivy-report" => {
                let (image, file) = kv();
                let json =
                    std::fs::read(repo_root().join("core/tests/fixtures/scanners").join(file))
                        .unwrap();
                let report = kubeharden_core::vuln::parse_trivy(&json).unwrap();
                scans.insert(
                    image.to_string(),
                    ScanOutcome::Report(std::sync::Arc::new(report)),
                );
            }
            "--scan-failed" => {
                scans.insert(
                    value.to_string(),
                    ScanOutcome::Failed("trivy exited with status 1: connection refused".into()),
                );
            }
            other => panic!("unknown fixture flag {other}"),
        }
    }
    let facts = kubeharden_core::facts::Facts {
        images: std::sync::Arc::new(kubeharden_core::facts::ImageFacts {
            digests,
            scans,
            ..Default::default()
        }),
    };
    (settings, facts)
}

/// A Trivy report (schema 2) with `findings` vulnerabilities of 150-character titles spread
/// evenly over LOW, MEDIUM, HIGH, CRITICAL and UNKNOWN: about 350 bytes each.
pub fn trivy_report(findings: usize) -> String {
    let vulns: Vec<String> = (0..findings)
        .map(|i| {
            format!(
                r#"{{"VulnerabilityID":"CVE-2024-{i}","PkgName":"pkg{}","InstalledVersion":"1.{i}","FixedVersion":"1.{}","Severity":"{}","PrimaryURL":"https://avd.aquasec.com/nvd/cve-2024-{i}","Title":"{}"}}"#,
                i % 300,
                i + 1,
                ["LOW", "MEDIUM", "HIGH", "CRITICAL", "UNKNOWN"][i % 5],
                "x".repeat(150)
            )
        })
        .collect();
    format!(
        r#"{{"SchemaVersion":2,"ArtifactName":"big","Results":[{{"Target":"big","Class":"os-pkgs","Type":"debian","Vulnerabilities":[{}]}}]}}"#,
        vulns.join(",")
    )
}
