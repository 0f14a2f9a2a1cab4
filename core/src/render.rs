//! Turning a lint report into text, JSON, SARIF and GitHub workflow annotations.

use std::fmt::Write;

use serde_json::{Value, json};

use crate::lint::{Finding, Report, Skip};
use crate::rules::{Rule, Severity};

pub fn text(report: &Report, color: bool, verbose: bool) -> String {
    let paint = |code: &str, s: &str| {
        if color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    };
    let mut out = String::new();
    for f in &report.findings {
        let sev = match f.severity {
            Severity::Error => paint("1;31", "error"),
            Severity::Warning => paint("1;33", "warning"),
            Severity::Note => paint("1;36", "note"),
        };
        let _ = write!(
            out,
            "{}:{}:{}: {sev} {} {}",
            paint("1", &f.path),
            f.start.line,
            f.start.column,
            paint("2", &format!("[{}]", f.rule)),
            f.message
        );
        if let Some(subject) = f.subject() {
            let _ = write!(out, " ({subject})");
        }
        if let Some(r) = &f.render {
            let _ = write!(out, " [rendered from {} ({})", r.root, r.variant);
            for (root, variant) in &r.also {
                let _ = write!(out, ", {root} ({variant})");
            }
            out.push(']');
        }
        out.push('\n');
    }
    if verbose {
        for n in &report.notes {
            let why = match n.reason {
                Skip::HelmTemplate => "skipped: a Helm template, not YAML until rendered",
                Skip::NotKubernetes => "skipped: not a Kubernetes object (no apiVersion and kind)",
            };
            let _ = writeln!(
                out,
                "{}:{}: {} {why}",
                n.path,
                n.line,
                paint("1;36", "note")
            );
        }
    }
    let count = |s: Severity| report.findings.iter().filter(|f| f.severity == s).count();
    let _ = write!(
        out,
        "{} finding{} ({} error{}, {} warning{}, {} note{}) in {} file{}, {} document{}, {} workload{}",
        report.findings.len(),
        plural(report.findings.len()),
        count(Severity::Error),
        plural(count(Severity::Error)),
        count(Severity::Warning),
        plural(count(Severity::Warning)),
        count(Severity::Note),
        plural(count(Severity::Note)),
        report.files,
        plural(report.files),
        report.documents,
        plural(report.documents),
        report.workloads,
        plural(report.workloads),
    );
    let helm = report
        .notes
        .iter()
        .filter(|n| n.reason == Skip::HelmTemplate)
        .count();
    let other = report.notes.len() - helm;
    if (helm > 0 || other > 0) && !verbose {
        let _ = write!(
            out,
            "; skipped {helm} Helm template{} and {other} non-Kubernetes document{} (--verbose lists them)",
            plural(helm),
            plural(other)
        );
    }
    out.push('\n');
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

pub fn json(report: &Report) -> String {
    let findings: Vec<Value> = report.findings.iter().map(finding_json).collect();
    let mut value = json!({
        "findings": findings,
        "summary": {
            "files": report.files,
            "documents": report.documents,
            "workloads": report.workloads,
            "findings": report.findings.len(),
        }
    });
    // Only with images inspected, so output without them stays as it was.
    if !report.containers.is_empty() {
        value["containers"] = containers_json(&report.containers);
    }
    serde_json::to_string_pretty(&value).expect("JSON of plain values") + "\n"
}

/// Each container with an `image` object: what its image's configuration says and what that
/// lets the fixes do.
pub fn containers_json(containers: &[crate::decision::ContainerImage]) -> Value {
    Value::Array(
        containers
            .iter()
            .map(|c| {
                let d = &c.decision;
                let image = match &d.config {
                    Some(config) => json!({
                        "reference": d.image,
                        "checked": true,
                        "platform": config.platform,
                        "digest": config.digest,
                        "source": config.source,
                        "user": config.user,
                        "ids": config.names,
                        "volumes": config.volumes,
                        "exposed_ports": config.exposed_ports.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                        "working_dir": config.working_dir,
                    }),
                    None => json!({
                        "reference": d.image,
                        "checked": false,
                        "platform": d.platform,
                    }),
                };
                let mut image = image;
                image["decision"] = serde_json::to_value(&d.user).expect("plain values");
                image["writable_paths"] = json!(d.writable);
                image["low_ports"] =
                    json!(d.low_ports.iter().map(|p| p.to_string()).collect::<Vec<_>>());
                image["summary"] = json!(d.summary());
                json!({
                    "path": c.path,
                    "line": c.line,
                    "document": c.document,
                    "kind": c.object.kind,
                    "name": c.object.name,
                    "namespace": c.object.namespace,
                    "container": c.container,
                    "image": image,
                })
            })
            .collect(),
    )
}

fn finding_json(f: &Finding) -> Value {
    let mut value = json!({
        "rule": f.rule,
        "severity": f.severity,
        "path": f.path,
        "line": f.start.line,
        "column": f.start.column,
        "end_line": f.end.line,
        "end_column": f.end.column,
        "message": f.message,
        "kind": f.object.as_ref().map(|o| &o.kind),
        "name": f.object.as_ref().and_then(|o| o.name.as_ref()),
        "namespace": f.object.as_ref().and_then(|o| o.namespace.as_ref()),
        "pod": f.pod,
        "container": f.container,
        "fixable": f.fixable,
    });
    if let Some(r) = &f.render {
        value["root"] = json!(r.root);
        value["variant"] = json!(r.variant);
        value["rendered_line"] = json!(r.rendered_line);
        value["field"] = json!(r.field);
        if !r.also.is_empty() {
            value["also_rendered_in"] = r
                .also
                .iter()
                .map(|(root, variant)| json!({"root": root, "variant": variant}))
                .collect();
        }
    }
    value
}

/// SARIF 2.1.0, as GitHub code scanning and other SARIF consumers read it.
pub fn sarif(report: &Report, rules: &[&Rule]) -> String {
    let rule_index = |id: &str| rules.iter().position(|r| r.id == id);
    let rules_json: Vec<Value> = rules
        .iter()
        .map(|r| {
            let mut tags = vec![
                "security".to_string(),
                "kubernetes".to_string(),
                r.profile.as_str().to_string(),
            ];
            if let Some(c) = &r.pss_control {
                tags.push(format!("pss:{c}"));
            }
            json!({
                "id": r.id,
                "name": r.title,
                "shortDescription": {"text": r.title},
                "fullDescription": {"text": first_paragraph(&r.docs)},
                "helpUri": r.docs_url(),
                "help": {"text": r.docs, "markdown": r.docs},
                "defaultConfiguration": {"level": r.severity.as_str()},
                "properties": {"tags": tags, "profile": r.profile.as_str()},
            })
        })
        .collect();
    let results: Vec<Value> = report
        .findings
        .iter()
        .map(|f| {
            let mut result = json!({
                "ruleId": f.rule,
                "level": f.severity.as_str(),
                "message": {"text": sarif_message(f)},
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": {"uri": uri_path(&f.path)},
                        "region": {
                            "startLine": f.start.line,
                            "startColumn": f.start.column,
                            "endLine": f.end.line,
                            "endColumn": f.end.column,
                        }
                    }
                }],
            });
            if let Some(i) = rule_index(&f.rule) {
                result["ruleIndex"] = json!(i);
            }
            result
        })
        .collect();
    let value = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "KubeHarden",
                "informationUri": "https://github.com/kubeharden/kubeharden",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules_json,
            }},
            "columnKind": "unicodeCodePoints",
            "results": results,
        }]
    });
    serde_json::to_string_pretty(&value).expect("JSON of plain values") + "\n"
}

fn sarif_message(f: &Finding) -> String {
    match f.subject() {
        Some(subject) => format!("{} ({subject})", f.message),
        None => f.message.clone(),
    }
}

/// SARIF wants URIs: forward slashes and percent-encoding of what a URI cannot hold.
fn uri_path(path: &str) -> String {
    let mut out = String::new();
    for c in path.replace('\\', "/").chars() {
        match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '-' | '_' | '.' | '~' | '/' | '+' | '@' => {
                out.push(c)
            }
            _ => {
                let mut buf = [0; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "%{b:02X}");
                }
            }
        }
    }
    out
}

fn first_paragraph(docs: &str) -> String {
    docs.split("## What it does")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .map(crate::source::one_line)
        .unwrap_or_default()
}

/// GitHub Actions workflow commands, one annotation per finding.
pub fn github(report: &Report) -> String {
    let mut out = String::new();
    for f in &report.findings {
        let level = match f.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "notice",
        };
        let _ = writeln!(
            out,
            "::{level} file={},line={},col={},endLine={},endColumn={},title={}::{}",
            escape_property(&f.path),
            f.start.line,
            f.start.column,
            f.end.line,
            f.end.column,
            escape_property(&format!("KubeHarden {}", f.rule)),
            escape_data(&sarif_message(f)),
        );
    }
    out
}

fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflow_command_escaping() {
        assert_eq!(escape_data("50%\nnext"), "50%25%0Anext");
        assert_eq!(escape_property("a:b,c"), "a%3Ab%2Cc");
    }

    #[test]
    fn sarif_uris() {
        assert_eq!(uri_path("deploy/my app.yaml"), "deploy/my%20app.yaml");
        assert_eq!(uri_path("a\\b.yaml"), "a/b.yaml");
    }
}
