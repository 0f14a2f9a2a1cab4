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

/// The root at `dir`; `None` for a `kind: Component`.
pub(super) fn root(repo: &Repo, dir: &str) -> Option<Root> {
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
        if let Some(charts) = doc.get(map, "helmCharts") {
            self.root.blocked.push(Blocked {
                path: file.clone(),
                range: doc.node(doc.key_of(charts).unwrap_or(charts)).range,
                message: format!(
                    "{file} inflates Helm charts (`helmCharts`), which needs Kustomize's --enable-helm and usually the network; it is off when rendering"
                ),
            });
        }
        Some(kind)
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
