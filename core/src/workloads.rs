//! Where pods live in each kind, as data: `rules/workloads/*.yaml` (embedded at build time),
//! extended by a `workloads/` folder of `--rules DIR` and by the repository configuration.
//!
//! An entry names API groups and kinds and lists their pod locations. A location is a path
//! from the object where `*` stands for any key of a mapping and `[]` for every item of a
//! sequence, in one of four forms:
//!
//! - `template: P`: a PodTemplateSpec (`P.metadata`, `P.spec`), as in a Deployment;
//! - `spec: P`: a PodSpec whose pod's metadata is the object's own, as in a Pod;
//! - `at: P` with container paths: a node that is not a PodSpec but holds containers (an Argo
//!   Workflows template, a Spark driver, a Tekton Task). With `pod-fields: true` the node also
//!   holds the pod's own fields (`securityContext` as a PodSecurityContext, `volumes`, …), and
//!   `defaults` names the node those fall back to, key by key (the Workflow's `spec`);
//! - `object: P`: a whole object embedded in this one (a Katib trial), located by its own kind.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::k8s::{Container, ContainerKind, Object, Workload, object_at};
use crate::source::{SourceFile, TextRange};
use crate::yaml::{self, Document, NodeId, de::from_node};

/// The workload files shipped with KubeHarden, embedded at build time.
const BUILTIN: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/builtin_workloads.rs"));

/// Nested objects (`object:`) deeper than this are not followed: real ones nest once.
const MAX_NESTING: usize = 4;

/// One step of a location path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    /// `*`: every key of a mapping.
    AnyKey,
    /// `[]`: every item of a sequence.
    Items,
}

/// A location path as written (`spec.workerGroupSpecs[].template`), parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocationPath {
    text: String,
    steps: Vec<Step>,
}

impl LocationPath {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut steps = Vec::new();
        let trimmed = text.trim();
        if trimmed != "." && !trimmed.is_empty() {
            for part in trimmed.split('.') {
                let mut key = part;
                let mut items = 0;
                while let Some(k) = key.strip_suffix("[]") {
                    key = k;
                    items += 1;
                }
                if key.is_empty() && items == 0 || key.contains(['[', ']']) {
                    return Err(format!(
                        "`{text}` is not a location path: write keys separated by `.`, `*` for any key of a mapping and `[]` after a key for every item of its sequence"
                    ));
                }
                match key {
                    "" => {}
                    "*" => steps.push(Step::AnyKey),
                    k => steps.push(Step::Key(k.to_string())),
                }
                steps.extend(std::iter::repeat_n(Step::Items, items));
            }
        }
        Ok(Self {
            text: trimmed.to_string(),
            steps,
        })
    }

    /// The keys of a path that reaches one node (no `*`, no `[]`); `None` for a wild one.
    pub fn plain_keys(&self) -> Option<Vec<&str>> {
        self.steps
            .iter()
            .map(|s| match s {
                Step::Key(k) => Some(k.as_str()),
                Step::AnyKey | Step::Items => None,
            })
            .collect()
    }

    /// Whether the path can reach more than one node.
    fn is_wild(&self) -> bool {
        self.steps.iter().any(|s| !matches!(s, Step::Key(_)))
    }

    /// Every node the path reaches from `base`, with its concrete path (`a.b[2].c`, `a.Worker`).
    fn expand(&self, doc: &Document, base: NodeId, prefix: &str) -> Vec<(NodeId, String)> {
        let mut out = vec![(base, prefix.to_string())];
        for step in &self.steps {
            let mut next = Vec::new();
            for (node, path) in out {
                match step {
                    Step::Key(k) => {
                        if let Some(v) = doc.get(node, k) {
                            next.push((v, join(&path, k)));
                        }
                    }
                    Step::AnyKey => {
                        if !doc.is_mapping(node) {
                            continue;
                        }
                        for e in doc.entries(node) {
                            if let (Some(k), Some(v)) = (doc.key_str(e.key), doc.resolve(e.value)) {
                                next.push((v, join(&path, k)));
                            }
                        }
                    }
                    Step::Items => {
                        for (i, &item) in doc.items(node).iter().enumerate() {
                            if let Some(v) = doc.resolve(item) {
                                next.push((v, format!("{path}[{i}]")));
                            }
                        }
                    }
                }
            }
            out = next;
        }
        out
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl<'de> Deserialize<'de> for LocationPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        LocationPath::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Where one kind's pods are.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Location {
    pub template: Option<LocationPath>,
    pub spec: Option<LocationPath>,
    pub at: Option<LocationPath>,
    pub object: Option<LocationPath>,
    /// With `at`: the node holds pod-level fields too.
    #[serde(default)]
    pub pod_fields: bool,
    /// With `at` and `pod-fields`: where absent pod-level fields fall back to (from the object).
    pub defaults: Option<LocationPath>,
    /// With `at`: the pod's metadata, below the node.
    pub metadata: Option<LocationPath>,
    /// With `at`: app containers below the node (`.` for the node itself).
    #[serde(default)]
    pub containers: Vec<LocationPath>,
    #[serde(default)]
    pub init_containers: Vec<LocationPath>,
    /// Fields (dotted, from the pod or container node) whose findings get no automatic fix,
    /// because the operator's own validation rejects what the fix would write.
    #[serde(default)]
    pub no_fix: Vec<String>,
}

impl Location {
    fn check(&self) -> Result<(), String> {
        let forms = [&self.template, &self.spec, &self.at, &self.object]
            .iter()
            .filter(|f| f.is_some())
            .count();
        if forms != 1 {
            return Err(
                "a pod location has exactly one of `template`, `spec`, `at` or `object`".into(),
            );
        }
        let extras = self.pod_fields
            || self.defaults.is_some()
            || self.metadata.is_some()
            || !self.containers.is_empty()
            || !self.init_containers.is_empty();
        if self.at.is_none() && extras {
            return Err(
                "`pod-fields`, `defaults`, `metadata`, `containers` and `init-containers` go with `at`"
                    .into(),
            );
        }
        if self.at.is_some() && self.containers.is_empty() && self.init_containers.is_empty() {
            return Err("a location given by `at` needs `containers` or `init-containers`".into());
        }
        if self.defaults.is_some() && !self.pod_fields {
            return Err("`defaults` needs `pod-fields: true`".into());
        }
        Ok(())
    }

    fn path(&self) -> &LocationPath {
        [&self.template, &self.spec, &self.at, &self.object]
            .into_iter()
            .flatten()
            .next()
            .expect("checked: one form")
    }
}

/// The kinds of some API groups and where their pods are.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KindEntry {
    /// API groups: the part of `apiVersion` before `/`, `""` for the core group (`v1`).
    pub groups: Vec<String>,
    pub kinds: Vec<String>,
    pub pods: Vec<Location>,
    /// The resource (the plural of the CustomResourceDefinition's `names`) of each namespaced
    /// kind, `Kind: plural`, which the admission webhook's configurations route by: the API
    /// server matches webhook rules by resource, not kind. A kind without one is linted when
    /// sent but not routed; cluster-scoped kinds get none, as the webhook routes by namespace
    /// label and they have no namespace.
    #[serde(default)]
    pub resources: BTreeMap<String, String>,
    /// Where the entry came from, for messages.
    #[serde(skip)]
    pub origin: String,
}

impl KindEntry {
    /// Check what serde cannot: each location's form. Errors name the location's index.
    pub fn check(&self) -> Result<(), String> {
        if self.kinds.is_empty() || self.groups.is_empty() || self.pods.is_empty() {
            return Err("a workload entry needs `groups`, `kinds` and `pods`".into());
        }
        for (i, p) in self.pods.iter().enumerate() {
            p.check().map_err(|e| format!("`pods[{i}]`: {e}"))?;
        }
        for (kind, resource) in &self.resources {
            if !self.kinds.contains(kind) {
                return Err(format!(
                    "`resources`: `{kind}` is not one of the entry's `kinds`"
                ));
            }
            if !is_resource_name(resource) {
                return Err(format!(
                    "`resources.{kind}`: `{resource}` is not a resource name (the plural in lower case, as `kubectl api-resources` lists it)"
                ));
            }
        }
        Ok(())
    }

    fn matches(&self, group: &str, kind: &str) -> bool {
        self.kinds.iter().any(|k| k == kind) && self.groups.iter().any(|g| g == group || g == "*")
    }

    /// Whether naming the location is needed to tell one pod of the object from another.
    fn ambiguous(&self) -> bool {
        self.pods.len() > 1
            || self
                .pods
                .iter()
                .any(|p| p.object.is_some() || p.path().is_wild())
    }
}

/// What Kubernetes accepts as a CustomResourceDefinition's plural: a DNS-1035 label.
fn is_resource_name(s: &str) -> bool {
    s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct WorkloadFile {
    workloads: Vec<KindEntry>,
}

#[derive(Debug, thiserror::Error)]
#[error("{origin}:{line}:{column}: {message}")]
pub struct WorkloadError {
    pub origin: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Parse a workload file: one YAML document with a `workloads:` list.
pub fn parse_file(origin: &str, text: &str) -> Result<Vec<KindEntry>, WorkloadError> {
    let file = SourceFile::new(origin, text);
    let invalid = |range: TextRange, message: String| {
        let at = file.line_col(range.start());
        WorkloadError {
            origin: origin.to_string(),
            line: at.line,
            column: at.column,
            message,
        }
    };
    let stream = yaml::parse(text, &yaml::Limits::default());
    if let Some(e) = stream.errors.first() {
        return Err(invalid(e.range, e.message.clone()));
    }
    let docs: Vec<&Document> = stream
        .documents
        .iter()
        .filter(|d| d.root().is_some())
        .collect();
    let [doc] = docs.as_slice() else {
        return Err(invalid(
            TextRange::default(),
            "a workload file holds exactly one YAML document".into(),
        ));
    };
    let root = doc.root().expect("filtered on root");
    let parsed: WorkloadFile = from_node(doc, root).map_err(|e| {
        let at = e.node.map(|n| doc.path_of(n)).filter(|p| !p.is_empty());
        let message = match at {
            Some(key) => format!("`{key}`: {}", e.message),
            None => e.message,
        };
        invalid(e.range.unwrap_or_default(), message)
    })?;
    parse_entries(doc, doc.get(root, "workloads"), parsed.workloads, &invalid)
        .map(|entries| {
            entries
                .into_iter()
                .map(|e| KindEntry {
                    origin: origin.to_string(),
                    ..e
                })
                .collect()
        })
        .map_err(|e| *e)
}

/// Check deserialized entries, each error at its own entry of `list` (the YAML sequence).
pub(crate) fn parse_entries<E>(
    doc: &Document,
    list: Option<NodeId>,
    entries: Vec<KindEntry>,
    invalid: &impl Fn(TextRange, String) -> E,
) -> Result<Vec<KindEntry>, Box<E>> {
    let items = list.map(|l| doc.items(l).to_vec()).unwrap_or_default();
    for (i, entry) in entries.iter().enumerate() {
        if let Err(message) = entry.check() {
            let range = items
                .get(i)
                .map_or_else(TextRange::default, |&n| doc.node(n).range);
            return Err(Box::new(invalid(
                range,
                format!("`workloads[{i}]`: {message}"),
            )));
        }
    }
    Ok(entries)
}

/// Every kind KubeHarden knows to run pods, and where.
#[derive(Debug, Clone)]
pub struct WorkloadKinds {
    /// Later entries override earlier ones for the same group and kind.
    entries: Vec<KindEntry>,
}

/// An object's pods, as found.
pub struct Located {
    pub workloads: Vec<Workload>,
    /// The kind runs pods, whether or not this object (a patch) shows them.
    pub known: bool,
}

impl WorkloadKinds {
    /// The kinds shipped in `rules/workloads/`.
    pub fn builtin() -> Result<Self, WorkloadError> {
        let mut entries = Vec::new();
        for (name, text) in BUILTIN {
            entries.extend(parse_file(&format!("rules/workloads/{name}"), text)?);
        }
        Ok(Self { entries })
    }

    /// Add entries that take precedence over those already known (same group and kind).
    pub fn extend(&mut self, entries: impl IntoIterator<Item = KindEntry>) {
        self.entries.extend(entries);
    }

    pub fn entries(&self) -> &[KindEntry] {
        &self.entries
    }

    fn entry(&self, object: &Object) -> Option<&KindEntry> {
        self.find(api_group(&object.info.api_version), &object.info.kind)
    }

    /// The entry that says where a kind of an API group (`""` for the core group) keeps its
    /// pods: the last one given for it.
    pub fn find(&self, group: &str, kind: &str) -> Option<&KindEntry> {
        self.entries.iter().rev().find(|e| e.matches(group, kind))
    }

    /// (API group, resource, kind) for each kind that an entry gives a resource, sorted. An
    /// entry that overrides a kind's pod locations without naming its resource keeps the
    /// resource given before: the kind is still served under it.
    pub fn resources(&self) -> Vec<(String, String, String)> {
        let mut out: BTreeMap<(String, String), String> = BTreeMap::new();
        for e in &self.entries {
            for g in &e.groups {
                for (k, r) in &e.resources {
                    out.insert((g.clone(), k.clone()), r.clone());
                }
            }
        }
        let mut routes: Vec<(String, String, String)> =
            out.into_iter().map(|((g, k), r)| (g, r, k)).collect();
        routes.sort();
        routes
    }

    /// Each kind with where its entry came from, for listings.
    pub fn summary(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for e in &self.entries {
            for g in &e.groups {
                for k in &e.kinds {
                    let name = if g.is_empty() {
                        k.clone()
                    } else {
                        format!("{k}.{g}")
                    };
                    out.insert(name, e.origin.clone());
                }
            }
        }
        out
    }

    /// The pods of an object. Unknown kinds count when they carry a pod template with
    /// containers at `spec.template` (OpenShift DeploymentConfig, in-house operators).
    pub fn locate(&self, doc: &Document, object: &Object) -> Located {
        let mut workloads = Vec::new();
        match self.entry(object) {
            Some(entry) => {
                self.locate_in(doc, object, object, entry, "", 0, &mut workloads);
                Located {
                    workloads,
                    known: true,
                }
            }
            None => {
                let guess = doc
                    .get_path(object.node, &["spec", "template"])
                    .filter(|&t| {
                        doc.get(t, "spec")
                            .is_some_and(|s| doc.get(s, "containers").is_some())
                    });
                if let Some(t) = guess {
                    workloads.extend(template_workload(
                        doc,
                        object,
                        t,
                        "spec.template".into(),
                        None,
                    ));
                }
                Located {
                    workloads,
                    known: false,
                }
            }
        }
    }

    /// The locations of `entry` within `inner` (the object itself, or one nested in `outer`).
    #[allow(clippy::too_many_arguments)]
    fn locate_in(
        &self,
        doc: &Document,
        outer: &Object,
        inner: &Object,
        entry: &KindEntry,
        prefix: &str,
        depth: usize,
        out: &mut Vec<Workload>,
    ) {
        let named = depth > 0 || entry.ambiguous();
        let inner_metadata = (depth > 0).then_some(inner.metadata).flatten();
        for loc in &entry.pods {
            for (node, path) in loc.path().expand(doc, inner.node, prefix) {
                let label = named.then(|| path.clone());
                if loc.template.is_some() {
                    if let Some(mut w) = template_workload(doc, outer, node, path, label) {
                        w.inner_metadata = inner_metadata;
                        w.no_fix = loc.no_fix.clone();
                        out.push(w);
                    }
                } else if loc.spec.is_some() {
                    if !doc.is_mapping(node) {
                        continue;
                    }
                    out.push(Workload {
                        no_fix: loc.no_fix.clone(),
                        object: outer.clone(),
                        pod_metadata: inner.metadata,
                        inner_metadata,
                        pod_spec: Some(node),
                        pod_defaults: None,
                        is_pod_spec: true,
                        containers: pod_spec_containers(doc, node),
                        pod_spec_path: path,
                        label,
                    });
                } else if loc.at.is_some() {
                    if !doc.is_mapping(node) {
                        continue;
                    }
                    let mut containers = Vec::new();
                    for (kind, paths) in [
                        (ContainerKind::Init, &loc.init_containers),
                        (ContainerKind::App, &loc.containers),
                    ] {
                        for p in paths {
                            for (c, cpath) in p.expand(doc, node, "") {
                                if doc.is_mapping(c) {
                                    let label = if cpath.is_empty() {
                                        path.rsplit('.').next().unwrap_or(&path).to_string()
                                    } else {
                                        cpath
                                    };
                                    containers.push(container(doc, kind, c, label));
                                }
                            }
                        }
                    }
                    if containers.is_empty() {
                        // A template that runs no container (an Argo `steps` or `dag`).
                        continue;
                    }
                    let defaults = loc
                        .defaults
                        .as_ref()
                        .and_then(|d| d.expand(doc, inner.node, "").into_iter().next())
                        .map(|(n, _)| n)
                        .filter(|&n| doc.is_mapping(n));
                    let metadata = loc
                        .metadata
                        .as_ref()
                        .and_then(|m| m.expand(doc, node, "").into_iter().next())
                        .map(|(n, _)| n)
                        .filter(|&n| doc.is_mapping(n));
                    out.push(Workload {
                        no_fix: loc.no_fix.clone(),
                        object: outer.clone(),
                        pod_metadata: metadata,
                        inner_metadata,
                        pod_spec: loc.pod_fields.then_some(node),
                        pod_defaults: defaults,
                        is_pod_spec: false,
                        containers,
                        pod_spec_path: path,
                        label,
                    });
                } else if depth < MAX_NESTING
                    && let Some(nested) = object_at(doc, node)
                    && let Some(nested_entry) = self.entry(&nested)
                {
                    self.locate_in(doc, outer, &nested, nested_entry, &path, depth + 1, out);
                }
            }
        }
    }
}

/// The API group of an `apiVersion`: `apps` for `apps/v1`, `""` for `v1`.
pub fn api_group(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

fn template_workload(
    doc: &Document,
    object: &Object,
    template: NodeId,
    path: String,
    label: Option<String>,
) -> Option<Workload> {
    let spec = doc.get(template, "spec").filter(|&s| doc.is_mapping(s))?;
    let metadata = doc.get(template, "metadata").filter(|&m| doc.is_mapping(m));
    Some(Workload {
        no_fix: Vec::new(),
        object: object.clone(),
        pod_metadata: metadata,
        inner_metadata: None,
        pod_spec: Some(spec),
        pod_defaults: None,
        is_pod_spec: true,
        containers: pod_spec_containers(doc, spec),
        pod_spec_path: join(&path, "spec"),
        label: label.map(|l| join(&l, "spec")),
    })
}

fn pod_spec_containers(doc: &Document, spec: NodeId) -> Vec<Container> {
    let mut out = Vec::new();
    for kind in ContainerKind::ALL {
        let Some(list) = doc.get(spec, kind.field()) else {
            continue;
        };
        for (index, &item) in doc.items(list).iter().enumerate() {
            if let Some(node) = doc.resolve(item).filter(|&n| doc.is_mapping(n)) {
                out.push(container(
                    doc,
                    kind,
                    node,
                    format!("{}[{index}]", kind.field()),
                ));
            }
        }
    }
    out
}

fn container(doc: &Document, kind: ContainerKind, node: NodeId, label: String) -> Container {
    let name = doc
        .get(node, "name")
        .and_then(|n| doc.str_value(n))
        .map(str::to_string);
    Container {
        kind,
        node,
        name,
        label,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_wildcards_and_items() {
        let p = LocationPath::parse("spec.workerGroupSpecs[].template").unwrap();
        assert_eq!(
            p.steps,
            vec![
                Step::Key("spec".into()),
                Step::Key("workerGroupSpecs".into()),
                Step::Items,
                Step::Key("template".into())
            ]
        );
        let p = LocationPath::parse("spec.pytorchReplicaSpecs.*.template").unwrap();
        assert_eq!(p.steps[2], Step::AnyKey);
        assert!(LocationPath::parse(".").unwrap().steps.is_empty());
        assert!(LocationPath::parse("spec..x").is_err());
        assert!(LocationPath::parse("spec.x[0]").is_err());
    }

    #[test]
    fn builtin_entries_are_valid() {
        let kinds = WorkloadKinds::builtin().unwrap();
        assert!(kinds.summary().contains_key("Deployment.apps"));
        assert!(kinds.summary().contains_key("RayCluster.ray.io"));
    }

    fn entry(resources: &str) -> Result<Vec<KindEntry>, WorkloadError> {
        let text = format!(
            "workloads:\n  - groups: [example.com]\n    kinds: [Runner, ClusterRunner]\n    resources: {resources}\n    pods:\n      - template: spec.template\n"
        );
        parse_file("runner.yaml", &text)
    }

    #[test]
    fn resources_name_kinds_of_their_entry_by_their_plural() {
        let kinds = WorkloadKinds {
            entries: entry("{Runner: runners}").unwrap(),
        };
        assert_eq!(
            kinds.resources(),
            vec![("example.com".into(), "runners".into(), "Runner".into())]
        );
        let e = entry("{Walker: walkers}").unwrap_err();
        assert!(
            e.message
                .contains("`Walker` is not one of the entry's `kinds`"),
            "{e}"
        );
        let e = entry("{Runner: Runners}").unwrap_err();
        assert!(e.message.contains("is not a resource name"), "{e}");
        let e = entry("{Runner: runners/status}").unwrap_err();
        assert!(e.message.contains("is not a resource name"), "{e}");
    }

    #[test]
    fn an_override_without_resources_keeps_the_kinds_resource() {
        let mut kinds = WorkloadKinds {
            entries: entry("{Runner: runners}").unwrap(),
        };
        kinds.extend(entry("{}").unwrap());
        assert_eq!(kinds.resources().len(), 1);
    }
}
