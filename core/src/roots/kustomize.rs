//! Kustomizations: which files one loads, transitively, read the way Kustomize reads them.

use std::collections::BTreeSet;

use super::{
    Blocked, Problem, Repo, Root, RootKind, Variant, Yaml, is_remote, join, mappings, strings,
};
use crate::source::TextRange;

/// The names Kustomize looks for in a directory, in its order.
pub const KUSTOMIZATION_FILES: [&str; 3] =
    ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// The kustomization file of `dir`, if it has one.
pub fn file_of(repo: &Repo, dir: &str) -> Option<String> {
    KUSTOMIZATION_FILES
        .iter()
        .map(|name| join(dir, name).unwrap_or_default())
        .find(|p| repo.is_file(p))
}

/// The root at `dir`; `None` for a `kind: Component`. With `enable_helm`, `helmCharts`
/// vendored in the kustomization's chart home are inflated; without it (or for a chart that
/// would be downloaded) they are blocked.
pub(super) fn root(repo: &Repo, dir: &str, enable_helm: bool) -> Option<Root> {
    let file = file_of(repo, dir)?;
    let mut root = Root {
        kind: RootKind::Kustomize,
        dir: dir.to_string(),
        file: file.clone(),
        variants: vec![Variant {
            name: super::file_name(&file).to_string(),
            values_files: Vec::new(),
            inline_values: None,
            release: String::new(),
            namespace: None,
        }],
        loads: BTreeSet::new(),
        patches: Vec::new(),
        blocked: Vec::new(),
        problems: Vec::new(),
    };
    let mut walk = Walk {
        repo,
        enable_helm,
        seen: BTreeSet::new(),
        root: &mut root,
    };
    match walk.kustomization(dir, true) {
        Some(Kind::Component) => None,
        _ => Some(root),
    }
}

enum Kind {
    Kustomization,
    Component,
}

struct Walk<'a, 'r> {
    repo: &'a Repo<'a>,
    enable_helm: bool,
    seen: BTreeSet<String>,
    root: &'r mut Root,
}

impl Walk<'_, '_> {
    /// Record the kustomization of `dir` and everything it loads.
    fn kustomization(&mut self, dir: &str, top: bool) -> Option<Kind> {
        let file = file_of(self.repo, dir)?;
        if !self.seen.insert(file.clone()) {
            return Some(Kind::Kustomization);
        }
        self.root.loads.insert(file.clone());
        let Some(source) = self.repo.read(&file) else {
            self.root.problems.push(Problem {
                path: file.clone(),
                range: TextRange::empty(0),
                message: format!("cannot read {file}"),
            });
            return Some(Kind::Kustomization);
        };
        let yaml = Yaml::parse(source);
        if let Some(p) = yaml.problem() {
            self.root.problems.push(p);
            return Some(Kind::Kustomization);
        }
        let Some((doc, map)) = yaml.first() else {
            return Some(Kind::Kustomization);
        };
        let kind = match doc.get(map, "kind").and_then(|k| doc.str_value(k)) {
            Some("Component") => Kind::Component,
            _ => Kind::Kustomization,
        };
        if top && matches!(kind, Kind::Component) {
            return Some(kind);
        }
        let refer = |walk: &mut Self, value: &str, range: TextRange, dirs_ok: bool| {
            walk.reference(dir, &file, value, range, dirs_ok);
        };
        for key in ["resources", "bases", "components"] {
            for (value, range) in strings(doc, map, key) {
                refer(self, &value, range, true);
            }
        }
        for key in [
            "crds",
            "configurations",
            "transformers",
            "generators",
            "validators",
        ] {
            for (value, range) in strings(doc, map, key) {
                // Inline transformer configurations are YAML documents, not paths.
                if !value.contains('\n') {
                    refer(self, &value, range, false);
                }
            }
        }
        for (value, range) in strings(doc, map, "patchesStrategicMerge") {
            if !value.contains('\n') {
                refer(self, &value, range, false);
                self.patch(dir, &value);
            }
        }
        for key in ["patches", "patchesJson6902", "replacements"] {
            for entry in mappings(doc, map, key) {
                for (value, range) in strings(doc, entry, "path") {
                    refer(self, &value, range, false);
                    if key != "replacements" {
                        self.patch(dir, &value);
                    }
                }
            }
        }
        if let Some(openapi) = doc.get(map, "openapi").filter(|n| doc.is_mapping(*n)) {
            for (value, range) in strings(doc, openapi, "path") {
                refer(self, &value, range, false);
            }
        }
        for key in ["configMapGenerator", "secretGenerator"] {
            for entry in mappings(doc, map, key) {
                for (value, range) in strings(doc, entry, "files") {
                    // `key=path` names the key the file's content is stored under.
                    let path = value.split_once('=').map_or(value.as_str(), |(_, p)| p);
                    refer(self, path, range, false);
                }
                for field in ["envs", "env"] {
                    for (value, range) in strings(doc, entry, field) {
                        refer(self, &value, range, false);
                    }
                }
            }
        }
        if let Some(charts) = doc.get(map, "helmCharts")
            && self.enable_helm
        {
            self.helm_charts(dir, &file, doc, map, charts);
        } else if let Some(charts) = doc.get(map, "helmCharts") {
            self.root.blocked.push(Blocked {
                path: file.clone(),
                range: doc.node(doc.key_of(charts).unwrap_or(charts)).range,
                message: format!(
                    "{file} inflates Helm charts (`helmCharts`), which needs Kustomize's --enable-helm; it is off unless the repository's configuration sets `render.enable-helm` (for charts vendored in the kustomization)"
                ),
            });
        }
        Some(kind)
    }

    /// With `--enable-helm`: each chart of `helmCharts` must be vendored where Kustomize looks
    /// before it downloads (`<chartHome>/<name>`, or `<chartHome>/<name>-<version>/<name>`
    /// when a version is given; chartHome is `charts` unless `helmGlobals.chartHome` says),
    /// and is then read with its values files; any other is blocked.
    fn helm_charts(
        &mut self,
        dir: &str,
        file: &str,
        doc: &crate::yaml::Document,
        map: crate::yaml::NodeId,
        charts: crate::yaml::NodeId,
    ) {
        let home = doc
            .get_path(map, &["helmGlobals", "chartHome"])
            .and_then(|n| doc.str_value(n))
            .unwrap_or("charts");
        let Some(home) = join(dir, home) else {
            self.root.problems.push(Problem {
                path: file.to_string(),
                range: doc.node(charts).range,
                message: format!("{file}: `helmGlobals.chartHome` is outside the repository"),
            });
            return;
        };
        for chart in doc.items(charts).iter().filter_map(|i| doc.resolve(*i)) {
            let str_of = |key: &str| doc.get(chart, key).and_then(|n| doc.str_value(n));
            let range = doc.node(chart).range;
            let Some(name) = str_of("name") else {
                continue;
            };
            let mut places = vec![format!("{home}/{name}")];
            if let Some(v) = str_of("version") {
                places.insert(0, format!("{home}/{name}-{v}/{name}"));
            }
            let vendored = places
                .into_iter()
                .find(|p| self.repo.is_file(&format!("{p}/Chart.yaml")));
            let Some(vendored) = vendored else {
                let from = str_of("repo").unwrap_or("no repository");
                self.root.blocked.push(Blocked {
                    path: file.to_string(),
                    range,
                    message: format!(
                        "{file} inflates the chart `{name}` ({from}), which is not vendored in {home}/; charts are never downloaded when rendering"
                    ),
                });
                continue;
            };
            let under: Vec<String> = self
                .repo
                .files_under(&vendored)
                .map(str::to_string)
                .collect();
            self.root.loads.extend(under);
            for (value, range) in strings(doc, chart, "valuesFile").into_iter().chain(strings(
                doc,
                chart,
                "additionalValuesFiles",
            )) {
                self.reference(dir, file, &value, range, false);
            }
        }
    }

    fn reference(&mut self, dir: &str, file: &str, value: &str, range: TextRange, dirs_ok: bool) {
        let Some(path) = join(dir, value) else {
            if is_remote(value) {
                self.remote(file, value, range);
            } else {
                self.root.problems.push(Problem {
                    path: file.to_string(),
                    range,
                    message: format!("{file} loads `{value}`, which is outside the repository"),
                });
            }
            return;
        };
        if self.repo.is_file(&path) {
            self.root.loads.insert(path);
        } else if dirs_ok && self.repo.is_dir(&path) {
            self.kustomization(&path, false);
        } else if is_remote(value) {
            self.remote(file, value, range);
        }
        // Anything else is missing: Kustomize itself says so when it renders.
    }

    fn patch(&mut self, dir: &str, value: &str) {
        if let Some(path) = join(dir, value).filter(|p| self.repo.is_file(p)) {
            self.root.patches.push(path);
        }
    }

    fn remote(&mut self, file: &str, value: &str, range: TextRange) {
        self.root.blocked.push(Blocked {
            path: file.to_string(),
            range,
            message: format!(
                "{file} loads the remote `{value}`, which is not fetched: remote resources are never downloaded when rendering"
            ),
        });
    }
}
