//! Charts: their variants (default values, chart-testing's `ci/*-values.yaml`, the values of
//! Argo CD Applications and Flux HelmReleases that deploy them) and their dependencies.

use std::collections::BTreeSet;

use super::{
    Blocked, Problem, Repo, Root, RootKind, Variant, Yaml, file_name, join, mappings, parent,
    prefix, strings,
};
use crate::source::TextRange;
use crate::yaml::{Document, NodeId};

/// A deployment of a chart found elsewhere in the repository.
pub(super) struct Deployment {
    chart: String,
    variant: Variant,
}

/// The Argo CD Applications and Flux HelmReleases of the repository that point at one of
/// `charts` by path.
pub(super) fn deployments(repo: &Repo, charts: &[String]) -> Vec<Deployment> {
    let mut out = Vec::new();
    for path in repo.files() {
        if !crate::config::is_yaml(path)
            || charts
                .iter()
                .any(|c| super::is_under(path, &format!("{}templates", prefix(c))))
        {
            continue;
        }
        let Some(text) = (repo.read)(path) else {
            continue;
        };
        // Cheap before parsing: most files are neither.
        if !text.contains("argoproj.io") && !text.contains("helm.toolkit.fluxcd.io") {
            continue;
        }
        let yaml = Yaml::parse(crate::source::SourceFile::new(path, text));
        for doc in &yaml.stream.documents {
            let Some(map) = doc.root().filter(|r| doc.is_mapping(*r)) else {
                continue;
            };
            let api = doc.get(map, "apiVersion").and_then(|n| doc.str_value(n));
            let kind = doc.get(map, "kind").and_then(|n| doc.str_value(n));
            let name = doc
                .get_path(map, &["metadata", "name"])
                .and_then(|n| doc.str_value(n))
                .unwrap_or("release")
                .to_string();
            match (api, kind) {
                (Some(a), Some("Application")) if a.starts_with("argoproj.io/") => {
                    argo(doc, map, path, &name, charts, &mut out);
                }
                (Some(a), Some("HelmRelease")) if a.starts_with("helm.toolkit.fluxcd.io/") => {
                    flux(doc, map, path, &name, charts, &mut out);
                }
                _ => {}
            }
        }
    }
    out
}

fn str_at<'d>(doc: &'d Document, map: NodeId, path: &[&str]) -> Option<&'d str> {
    doc.get_path(map, path).and_then(|n| doc.str_value(n))
}

/// A chart path as Argo CD and Flux write it (`./charts/app`, `charts/app/`), normalised.
fn chart_path(value: &str, charts: &[String]) -> Option<String> {
    let path = join("", value.trim_end_matches('/'))?;
    charts.contains(&path).then_some(path)
}

/// Inline values as YAML text: JSON is YAML, and a node's own text would lose its indentation.
fn values_text(doc: &Document, node: NodeId) -> Option<String> {
    let value: serde_json::Value = crate::yaml::de::from_node(doc, node).ok()?;
    (!value.is_null()).then(|| value.to_string())
}

fn argo(
    doc: &Document,
    map: NodeId,
    path: &str,
    name: &str,
    charts: &[String],
    out: &mut Vec<Deployment>,
) {
    let Some(spec) = doc.get(map, "spec") else {
        return;
    };
    let mut sources: Vec<NodeId> = doc.get(spec, "source").into_iter().collect();
    sources.extend(mappings(doc, spec, "sources"));
    let namespace = str_at(doc, spec, &["destination", "namespace"]).map(str::to_string);
    for (i, source) in sources.iter().enumerate() {
        let Some(chart) = str_at(doc, *source, &["path"]).and_then(|p| chart_path(p, charts))
        else {
            continue;
        };
        let helm = doc.get(*source, "helm");
        let mut values_files = Vec::new();
        let mut inline = Vec::new();
        if let Some(helm) = helm {
            // `$values/...` names another source of a multi-source Application: not this tree.
            for (file, _) in strings(doc, helm, "valueFiles") {
                if let Some(p) = join(&chart, &file).filter(|_| !file.starts_with('$')) {
                    values_files.push(p);
                }
            }
            if let Some(text) = doc.get(helm, "values").and_then(|n| doc.str_value(n)) {
                inline.push(text.to_string());
            }
            if let Some(text) = doc
                .get(helm, "valuesObject")
                .and_then(|n| values_text(doc, n))
            {
                inline.push(text);
            }
        }
        let release = helm
            .and_then(|h| str_at(doc, h, &["releaseName"]))
            .unwrap_or(name)
            .to_string();
        let suffix = if sources.len() > 1 {
            format!("#{i}")
        } else {
            String::new()
        };
        out.push(Deployment {
            chart,
            variant: Variant {
                name: format!("{path}{suffix}"),
                values_files,
                // Argo CD gives valuesObject precedence over values; the later file wins.
                inline_values: (!inline.is_empty()).then(|| inline.join("\n---\n")),
                release,
                namespace: namespace.clone(),
            },
        });
    }
}

fn flux(
    doc: &Document,
    map: NodeId,
    path: &str,
    name: &str,
    charts: &[String],
    out: &mut Vec<Deployment>,
) {
    let Some(spec) = doc.get(map, "spec") else {
        return;
    };
    let Some(chart) =
        str_at(doc, spec, &["chart", "spec", "chart"]).and_then(|p| chart_path(p, charts))
    else {
        return;
    };
    let values_files = strings(doc, spec, "valuesFiles")
        .into_iter()
        .filter_map(|(f, _)| join("", &f))
        .collect();
    out.push(Deployment {
        chart,
        variant: Variant {
            name: path.to_string(),
            values_files,
            inline_values: doc.get(spec, "values").and_then(|n| values_text(doc, n)),
            release: str_at(doc, spec, &["releaseName"])
                .unwrap_or(name)
                .to_string(),
            namespace: str_at(doc, spec, &["targetNamespace"])
                .or_else(|| str_at(doc, map, &["metadata", "namespace"]))
                .map(str::to_string),
        },
    });
}

pub(super) fn root(repo: &Repo, dir: &str, deployments: &[Deployment]) -> Root {
    let file = format!("{}Chart.yaml", prefix(dir));
    let mut root = Root {
        kind: RootKind::Helm,
        dir: dir.to_string(),
        file: file.clone(),
        variants: Vec::new(),
        loads: repo.files_under(dir).map(str::to_string).collect(),
        patches: Vec::new(),
        blocked: Vec::new(),
        problems: Vec::new(),
    };
    let mut name = file_name(dir).to_string();
    match repo.read(&file).map(Yaml::parse) {
        None => root.problems.push(Problem {
            path: file.clone(),
            range: TextRange::empty(0),
            message: format!("cannot read {file}"),
        }),
        Some(yaml) => {
            if let Some(p) = yaml.problem() {
                root.problems.push(p);
            }
            if let Some((doc, map)) = yaml.first() {
                if let Some(n) = str_at(doc, map, &["name"]) {
                    name = n.to_string();
                }
                dependencies(repo, dir, &file, doc, map, &mut root.blocked);
            }
        }
    }
    // Helm 2's requirements.yaml still works with apiVersion v1 charts.
    let requirements = format!("{}requirements.yaml", prefix(dir));
    if let Some(yaml) = repo.read(&requirements).map(Yaml::parse)
        && let Some((doc, map)) = yaml.first()
    {
        dependencies(repo, dir, &requirements, doc, map, &mut root.blocked);
    }
    // Chart-testing renders a chart once per `ci/*-values.yaml` and, when there are any, not
    // with its defaults alone: some charts do not render without one.
    let ci = format!("{}ci", prefix(dir));
    let ci_values: BTreeSet<&str> = repo
        .files_under(&ci)
        .filter(|f| parent(f) == ci && file_name(f).ends_with("-values.yaml"))
        .collect();
    if ci_values.is_empty() {
        root.variants.push(Variant {
            name: "values.yaml".into(),
            values_files: Vec::new(),
            inline_values: None,
            release: name.clone(),
            namespace: None,
        });
    }
    for f in ci_values {
        root.variants.push(Variant {
            name: f.strip_prefix(&prefix(dir)).unwrap_or(f).to_string(),
            values_files: vec![f.to_string()],
            inline_values: None,
            release: name.clone(),
            namespace: None,
        });
    }
    for d in deployments.iter().filter(|d| d.chart == dir) {
        for f in &d.variant.values_files {
            root.loads.insert(f.clone());
        }
        root.variants.push(d.variant.clone());
    }
    root
}

/// Dependencies that are not vendored in `charts/` would be downloaded: blocked.
fn dependencies(
    repo: &Repo,
    dir: &str,
    file: &str,
    doc: &Document,
    map: NodeId,
    blocked: &mut Vec<Blocked>,
) {
    let charts = format!("{}charts", prefix(dir));
    for dep in mappings(doc, map, "dependencies") {
        let Some(name) = str_at(doc, dep, &["name"]) else {
            continue;
        };
        let unpacked = repo.is_file(&format!("{charts}/{name}/Chart.yaml"));
        let packed = repo.files_under(&charts).any(|f| {
            parent(f) == charts
                && file_name(f)
                    .strip_prefix(name)
                    .and_then(|r| r.strip_prefix('-'))
                    .is_some_and(|r| r.ends_with(".tgz"))
        });
        if unpacked || packed {
            continue;
        }
        let from = str_at(doc, dep, &["repository"]).unwrap_or("no repository");
        blocked.push(Blocked {
            path: file.to_string(),
            range: doc.node(dep).range,
            message: format!(
                "{file} depends on the chart `{name}` ({from}), which is not vendored in {charts}/; dependencies are never downloaded when rendering (run `helm dependency build` and commit charts/)"
            ),
        });
    }
}
