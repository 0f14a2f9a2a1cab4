//! Render roots: the Helm charts and Kustomize kustomizations of a repository, found from its
//! list of files, with what each render reads and what it cannot render without the network.
//!
//! Pure: the shell hands in the repository's file paths and a way to read a file's text; the
//! child processes that render live in the shell. Paths are repository-relative with `/`.

use std::collections::BTreeSet;

use crate::source::{SourceFile, TextRange};
use crate::yaml::{self, Document, Limits, NodeId};

mod helm;
mod kustomize;

pub use kustomize::KUSTOMIZATION_FILES;

/// The repository as roots see it: every file's path, and a reader for the few it parses.
pub struct Repo<'a> {
    files: BTreeSet<String>,
    dirs: BTreeSet<String>,
    read: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> Repo<'a> {
    pub fn new(
        paths: impl IntoIterator<Item = String>,
        read: &'a dyn Fn(&str) -> Option<String>,
    ) -> Self {
        let files: BTreeSet<String> = paths.into_iter().collect();
        let mut dirs = BTreeSet::new();
        dirs.insert(String::new());
        for f in &files {
            let mut d = parent(f);
            while !d.is_empty() && dirs.insert(d.to_string()) {
                d = parent(d);
            }
        }
        Repo { files, dirs, read }
    }

    pub fn is_file(&self, path: &str) -> bool {
        self.files.contains(path)
    }

    pub fn is_dir(&self, path: &str) -> bool {
        self.dirs.contains(path)
    }

    pub fn files(&self) -> impl Iterator<Item = &str> {
        self.files.iter().map(String::as_str)
    }

    /// Files at or below `dir`.
    pub fn files_under<'s>(&'s self, dir: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.files.iter().map(String::as_str).filter(move |f| {
            dir.is_empty() || f.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
        })
    }

    fn read(&self, path: &str) -> Option<SourceFile> {
        (self.read)(path).map(|text| SourceFile::new(path, text))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RootKind {
    Helm,
    Kustomize,
}

/// One way a root is rendered: for a chart, which values; a kustomization has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// How findings name it: `values.yaml`, `ci/tls-values.yaml`, `argocd/app.yaml`.
    pub name: String,
    /// Values files passed with `-f`, in order, repository-relative.
    pub values_files: Vec<String>,
    /// Values given inline (Argo CD `helm.values`/`valuesObject`, Flux `spec.values`), as YAML
    /// text, passed after the files.
    pub inline_values: Option<String>,
    pub release: String,
    pub namespace: Option<String>,
}

/// Something the render would fetch over the network, which it never does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// The file that names it (a kustomization, `Chart.yaml`).
    pub path: String,
    pub range: TextRange,
    pub message: String,
}

/// A kustomization or chart that cannot even be read: the render is a failure at this place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub range: TextRange,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct Root {
    pub kind: RootKind,
    /// The chart's or kustomization's directory; empty for the repository's top.
    pub dir: String,
    /// `Chart.yaml` or the kustomization file: where a failed render is reported.
    pub file: String,
    pub variants: Vec<Variant>,
    /// Every repository file the render reads: what is copied into the scratch directory, and
    /// what is linted through the render instead of on its own.
    pub loads: BTreeSet<String>,
    /// The patch files among them (Kustomize), in the order they are applied.
    pub patches: Vec<String>,
    pub blocked: Vec<Blocked>,
    pub problems: Vec<Problem>,
}

impl Root {
    /// How findings and summaries name the root: its directory, `.` for the top.
    pub fn name(&self) -> &str {
        if self.dir.is_empty() { "." } else { &self.dir }
    }

    /// Whether a change of `path` reaches the root, so that a review renders it: a file it
    /// reads, anything inside a chart, or the Argo CD Application or Flux HelmRelease a
    /// variant comes from.
    pub fn reached_by(&self, path: &str) -> bool {
        self.loads.contains(path)
            || (self.kind == RootKind::Helm
                && (self.dir.is_empty() || path.starts_with(&format!("{}/", self.dir))))
            || self
                .variants
                .iter()
                .any(|v| v.name.split('#').next() == Some(path))
    }
}

/// Every root of the repository, in path order. `kind: Component` kustomizations are not
/// roots; they render through the kustomizations that use them. A chart vendored inside
/// another chart's `charts/` renders through its parent.
pub fn discover(repo: &Repo) -> Vec<Root> {
    discover_with(repo, &crate::config::Render::default()).0
}

/// [`discover`] as a repository's `render:` configuration adjusts it: roots skipped and
/// added, values files that are one more variant each, Kustomize's Helm inflation. Beside the
/// roots, the problems of the configuration itself (a root to add that is none, values for a
/// directory that is no chart), each at its line of the configuration file.
pub fn discover_with(repo: &Repo, config: &crate::config::Render) -> (Vec<Root>, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut roots = found(repo, config);
    roots.retain(|r| !config.skips(&r.dir));
    // A chart a kustomization inflates renders through it, with the values it gives.
    let inflated: BTreeSet<String> = roots
        .iter()
        .filter(|r| r.kind == RootKind::Kustomize)
        .flat_map(|r| {
            r.loads
                .iter()
                .filter(|f| file_name(f) == "Chart.yaml")
                .cloned()
        })
        .collect();
    roots.retain(|r| r.kind != RootKind::Helm || !inflated.contains(&r.file));
    let charts: Vec<String> = roots
        .iter()
        .filter(|r| r.kind == RootKind::Helm)
        .map(|r| r.dir.clone())
        .chain(config.add.iter().map(|a| a.path.clone()))
        .collect();
    for add in &config.add {
        if roots.iter().any(|r| r.dir == add.path) {
            continue;
        }
        let chart = format!("{}Chart.yaml", prefix(&add.path));
        if repo.is_file(&chart) {
            let apps = helm::deployments(repo, &charts);
            roots.push(helm::root(repo, &add.path, &apps));
        } else if let Some(root) = kustomize::root(repo, &add.path, config.enable_helm) {
            roots.push(root);
        } else {
            problems.push(Problem {
                path: config.file.clone(),
                range: add.range,
                message: format!(
                    "`render.add` names `{}`, which holds no Chart.yaml and no kustomization to render",
                    add.path
                ),
            });
        }
    }
    for (chart, files) in &config.values {
        let Some(root) = roots
            .iter_mut()
            .find(|r| r.kind == RootKind::Helm && r.dir == chart.path)
        else {
            if !config.skips(&chart.path) {
                problems.push(Problem {
                    path: config.file.clone(),
                    range: chart.range,
                    message: format!(
                        "`render.values` names `{}`, which is no chart (no Chart.yaml there)",
                        chart.path
                    ),
                });
            }
            continue;
        };
        let release = root
            .variants
            .first()
            .map_or_else(|| file_name(&root.dir).to_string(), |v| v.release.clone());
        for f in files {
            if !repo.is_file(&f.path) {
                problems.push(Problem {
                    path: config.file.clone(),
                    range: f.range,
                    message: format!("`render.values`: there is no file `{}`", f.path),
                });
                continue;
            }
            root.loads.insert(f.path.clone());
            root.variants.push(Variant {
                name: f
                    .path
                    .strip_prefix(&prefix(&root.dir))
                    .unwrap_or(&f.path)
                    .to_string(),
                values_files: vec![f.path.clone()],
                inline_values: None,
                release: release.clone(),
                namespace: None,
            });
        }
    }
    roots.sort_by(|a, b| (&a.dir, a.kind).cmp(&(&b.dir, b.kind)));
    (roots, problems)
}

fn found(repo: &Repo, config: &crate::config::Render) -> Vec<Root> {
    let charts: Vec<String> = repo
        .files()
        .filter(|f| file_name(f) == "Chart.yaml")
        .map(|f| parent(f).to_string())
        .collect();
    let apps = helm::deployments(repo, &charts);
    let mut roots = Vec::new();
    for dir in &charts {
        let nested = charts
            .iter()
            .any(|other| other != dir && is_under(dir, &format!("{}charts", prefix(other))));
        if !nested {
            roots.push(helm::root(repo, dir, &apps));
        }
    }
    let mut seen = BTreeSet::new();
    for f in repo.files() {
        if KUSTOMIZATION_FILES.contains(&file_name(f)) && seen.insert(parent(f).to_string()) {
            let dir = parent(f);
            if let Some(root) = kustomize::root(repo, dir, config.enable_helm) {
                roots.push(root);
            }
        }
    }
    // A kustomization another root loads (a base of overlays) renders through them: on its
    // own it would report what its overlays change (an image they pin, a field they patch).
    let loaded: BTreeSet<String> = roots
        .iter()
        .filter(|r| r.kind == RootKind::Kustomize)
        .flat_map(|r| r.loads.iter().filter(|f| **f != r.file).cloned())
        .collect();
    roots.retain(|r| r.kind != RootKind::Kustomize || !loaded.contains(&r.file));
    roots.sort_by(|a, b| (&a.dir, a.kind).cmp(&(&b.dir, b.kind)));
    roots
}

/// The roots that share repository files, in groups: a fix of a shared file (a base two
/// overlays load, a values file two variants read) changes every render of its group, so a
/// group is planned and confirmed together, and different groups' fixes never touch the same
/// file. Indices into `roots`, each group and the list in ascending order.
pub fn groups(roots: &[Root]) -> Vec<Vec<usize>> {
    // Union-find over the roots, joined through each file they load.
    let mut parent: Vec<usize> = (0..roots.len()).collect();
    fn top(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut owner: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for (i, root) in roots.iter().enumerate() {
        for file in &root.loads {
            match owner.get(file.as_str()) {
                Some(&j) => {
                    let (a, b) = (top(&mut parent, i), top(&mut parent, j));
                    parent[a.max(b)] = a.min(b);
                }
                None => {
                    owner.insert(file, i);
                }
            }
        }
    }
    let mut out: std::collections::BTreeMap<usize, Vec<usize>> = std::collections::BTreeMap::new();
    for i in 0..roots.len() {
        let t = top(&mut parent, i);
        out.entry(t).or_default().push(i);
    }
    out.into_values().collect()
}

/// `a/b/c.yaml` → `a/b`; a top-level file → ``.
pub fn parent(path: &str) -> &str {
    path.rfind('/').map_or("", |i| &path[..i])
}

pub fn file_name(path: &str) -> &str {
    path.rfind('/').map_or(path, |i| &path[i + 1..])
}

/// `dir` with a trailing `/`, or nothing for the top.
fn prefix(dir: &str) -> String {
    if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    }
}

fn is_under(path: &str, dir: &str) -> bool {
    dir.is_empty() || path == dir || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

/// `rel` resolved against `dir`, normalised; `None` when it leaves the repository or is
/// absolute.
pub fn join(dir: &str, rel: &str) -> Option<String> {
    if rel.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// A parsed YAML file and its first document's root mapping.
struct Yaml {
    file: SourceFile,
    stream: yaml::Stream,
}

impl Yaml {
    fn parse(file: SourceFile) -> Yaml {
        let stream = yaml::parse(&file.text, &Limits::default());
        Yaml { file, stream }
    }

    fn first(&self) -> Option<(&Document, NodeId)> {
        self.stream
            .documents
            .iter()
            .find_map(|d| d.root().filter(|r| d.is_mapping(*r)).map(|r| (d, r)))
    }

    /// The first syntax error, as a problem of this file.
    fn problem(&self) -> Option<Problem> {
        self.stream.errors.first().map(|e| Problem {
            path: self.file.path.clone(),
            range: e.range,
            message: format!("cannot read {}: {}", self.file.path, e.message),
        })
    }
}

/// The strings of `key`: a sequence of scalars, or one scalar; each with its range.
fn strings(doc: &Document, map: NodeId, key: &str) -> Vec<(String, TextRange)> {
    let Some(node) = doc.get(map, key) else {
        return Vec::new();
    };
    if doc.is_sequence(node) {
        doc.items(node)
            .iter()
            .filter_map(|i| doc.resolve(*i))
            .filter_map(|i| doc.str_value(i).map(|s| (s.to_string(), doc.node(i).range)))
            .collect()
    } else {
        doc.str_value(node)
            .map(|s| vec![(s.to_string(), doc.node(node).range)])
            .unwrap_or_default()
    }
}

/// The mappings of a sequence under `key`.
fn mappings(doc: &Document, map: NodeId, key: &str) -> Vec<NodeId> {
    doc.get(map, key)
        .filter(|n| doc.is_sequence(*n))
        .map(|n| {
            doc.items(n)
                .iter()
                .filter_map(|i| doc.resolve(*i))
                .filter(|i| doc.is_mapping(*i))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a reference is to something fetched over the network rather than a repository path:
/// a URL, an scp-style git address, or a host name as its first segment (`github.com/org/repo`,
/// Kustomize's shorthand).
pub fn is_remote(reference: &str) -> bool {
    if reference.contains("://") || reference.starts_with("git@") || reference.contains("?ref=") {
        return true;
    }
    let first = reference.split('/').next().unwrap_or_default();
    reference.contains('/')
        && first.contains('.')
        && !first.starts_with('.')
        && first
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic()))
        && !first.ends_with(".yaml")
        && !first.ends_with(".yml")
}
