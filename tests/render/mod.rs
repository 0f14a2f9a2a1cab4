//! What the render tests share: finding the real `helm` and Kustomize, writing a repository
//! into a temporary directory, running `kubeharden` on it and reading its JSON findings, and
//! rendering again to compare. Included by path from the command-line tests (`tests/cli`) and
//! the app tests (`tests/app`), as `tests/registry` is.
//!
//! [`tools`] skips the caller (`false`) when the tools are missing, unless
//! `KUBEHARDEN_REQUIRE_RENDER` is set (as in `.ci/run`, which installs them).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use kubeharden_core::yaml::{self, Limits};
use serde_json::Value;

/// `git args` in `dir`, which must succeed: a repository for `review` to read.
pub fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn tools() -> bool {
    let found = |name: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
    };
    let ok = found("helm") && (found("kubectl") || found("kustomize"));
    if !ok {
        assert!(
            std::env::var_os("KUBEHARDEN_REQUIRE_RENDER").is_none(),
            "KUBEHARDEN_REQUIRE_RENDER is set but helm or kubectl is not on PATH"
        );
        eprintln!("helm or kubectl/kustomize not on PATH; render tests skipped");
    }
    ok
}

/// Write `files` (path relative to `dir`, text) under `dir`, creating directories.
pub fn write(dir: &Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

/// Every file under `dir` (`.helm`, the scratch home of [`helm_template`], left out), by its
/// path relative to `dir`.
pub fn read_tree(dir: &Path) -> BTreeMap<String, String> {
    fn walk(base: &Path, at: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(at).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .to_string();
            if rel == ".helm" {
                continue;
            }
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                out.insert(rel, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

pub fn kubeharden(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kubeharden"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

/// `kubeharden lint --format json . <extra>` in `dir`: the findings, and the whole report.
pub fn lint_json(dir: &Path, extra: &[&str]) -> (Vec<Value>, Value) {
    let mut args = vec!["lint", "--format", "json", "."];
    args.extend_from_slice(extra);
    let out = kubeharden(&args, dir);
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (v["findings"].as_array().unwrap().clone(), v)
}

/// The findings of `kubeharden lint --format json .` in `dir`.
pub fn findings(dir: &Path) -> Vec<Value> {
    lint_json(dir, &[]).0
}

pub fn findings_of<'a>(findings: &'a [Value], rule: &str) -> Vec<&'a Value> {
    findings.iter().filter(|f| f["rule"] == rule).collect()
}

/// `line:rule` of each finding at `path`.
pub fn rules_at(findings: &[Value], path: &str) -> Vec<String> {
    findings
        .iter()
        .filter(|f| f["path"] == path)
        .map(|f| format!("{}:{}", f["line"], f["rule"].as_str().unwrap()))
        .collect()
}

/// `helm template r web` in `dir`, Helm's homes inside it.
pub fn helm_template(dir: &Path) -> String {
    let out = Command::new("helm")
        .args(["template", "r", "web"])
        .current_dir(dir)
        .env("HELM_CACHE_HOME", dir.join(".helm"))
        .env("HELM_CONFIG_HOME", dir.join(".helm"))
        .env("HELM_DATA_HOME", dir.join(".helm"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `kubectl kustomize <root>` in `dir`.
pub fn kustomize(dir: &Path, root: &str) -> String {
    let out = Command::new("kubectl")
        .args(["kustomize", root])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize {root}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A render without its `securityContext` blocks: what must stay the same.
pub fn outside_security_contexts(render: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside: Option<usize> = None;
    for line in render.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(at) = inside {
            if indent > at || line.trim().is_empty() {
                continue;
            }
            inside = None;
        }
        if line.trim_start().starts_with("securityContext:") {
            inside = Some(indent);
            continue;
        }
        out.push(line.to_string());
    }
    out
}

/// The fields a hardening fix may change, by the key they sit under: the pod's and the
/// containers' security contexts, and the pod fields the rules turn off. Everything else in a
/// render (images, names, volumes, replicas, labels) must come out of a fix as it went in.
const HARDENING: &[&str] = &[
    "securityContext",
    "automountServiceAccountToken",
    "hostPID",
    "hostIPC",
    "hostNetwork",
];

/// Each leaf where two multi-document renders differ, as `Kind namespace/name: field.path`;
/// objects are matched by kind, namespace and name, list items by position.
pub fn changed_fields(first: &str, second: &str) -> Vec<String> {
    let objects = |text: &str| -> BTreeMap<String, Value> {
        let stream = yaml::parse(text, &Limits::default());
        assert!(stream.errors.is_empty(), "{:?}\n{text}", stream.errors);
        stream
            .documents
            .iter()
            .filter_map(|d| {
                let v = kubeharden_core::object::to_json(d, d.root()?).unwrap();
                let meta = &v["metadata"];
                let key = format!(
                    "{} {}/{}",
                    v["kind"].as_str().unwrap_or(""),
                    meta["namespace"].as_str().unwrap_or(""),
                    meta["name"].as_str().unwrap_or("")
                );
                Some((key, v))
            })
            .collect()
    };
    fn diff(a: Option<&Value>, b: Option<&Value>, path: String, out: &mut Vec<String>) {
        match (a, b) {
            (Some(Value::Object(x)), Some(Value::Object(y))) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    diff(x.get(k), y.get(k), p, out);
                }
            }
            (Some(Value::Array(x)), Some(Value::Array(y))) => {
                for i in 0..x.len().max(y.len()) {
                    diff(x.get(i), y.get(i), format!("{path}[{i}]"), out);
                }
            }
            (a, b) if a != b => out.push(path),
            _ => {}
        }
    }
    let (a, b) = (objects(first), objects(second));
    let mut out = Vec::new();
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for k in keys {
        let mut fields = Vec::new();
        diff(a.get(k), b.get(k), String::new(), &mut fields);
        out.extend(fields.into_iter().map(|f| format!("{k}: {f}")));
    }
    out
}

/// Whether a field path from [`changed_fields`] lies under a hardening field.
pub fn is_hardening(field: &str) -> bool {
    let path = field.split_once(": ").map_or(field, |(_, p)| p);
    path.split(['.', '['])
        .any(|segment| HARDENING.contains(&segment))
}

/// Assert that rendering again changed something, and only hardening fields; the changed
/// fields, for the caller's own checks.
pub fn assert_only_hardening_changed(first: &str, second: &str) -> Vec<String> {
    let changed = changed_fields(first, second);
    assert!(!changed.is_empty(), "the render did not change:\n{second}");
    let other: Vec<&String> = changed.iter().filter(|f| !is_hardening(f)).collect();
    assert!(
        other.is_empty(),
        "fields outside hardening changed: {other:#?}\nfirst:\n{first}\nsecond:\n{second}"
    );
    changed
}
