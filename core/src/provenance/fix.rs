//! Fixes for findings on rendered output, written where the user edits: a chart's values file
//! or template, a Kustomize resource or patch, or a new patch in an overlay.
//!
//! A planner per tool proposes [`SourceFix`]es from the placed findings of one root variant;
//! the shell applies a proposal to a scratch copy, renders again, and keeps it only if
//! [`confirm`] accepts the second render. A finding that gets no fix gets a [`NoSourceFix`]
//! saying what the chart or overlay would need. Proposals are byte edits on the files as read,
//! so every byte outside an edit stays, as in plain files.

use std::collections::{BTreeMap, BTreeSet};

use crate::fix::Edit;
use crate::lint::Finding;
use crate::parsed::Parsed;
use crate::roots::{Root, Variant};
use crate::rules::Applicability;
use crate::workloads::WorkloadKinds;
use crate::yaml::{self, Limits};

use super::Sentinel;

/// The finding of a render that a source fix resolves, by what survives a second render: the
/// rule, the root and variant, the rendered object and field, and the container.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RenderedFinding {
    pub rule: String,
    pub root: String,
    pub variant: String,
    /// `kind/namespace/name` of the rendered object.
    pub object: Option<String>,
    /// The field's path in the rendered object, as [`crate::lint::RenderSite::field`].
    pub field: Option<String>,
    pub container: Option<String>,
}

impl RenderedFinding {
    /// The key of a finding placed from a render; `None` for a finding on a plain file.
    pub fn of(f: &Finding) -> Option<Self> {
        let site = f.render.as_ref()?;
        Some(Self {
            rule: f.rule.clone(),
            root: site.root.clone(),
            variant: site.variant.clone(),
            object: f.object.as_ref().map(|o| {
                format!(
                    "{}/{}/{}",
                    o.kind,
                    o.namespace.as_deref().unwrap_or(""),
                    o.name.as_deref().unwrap_or("")
                )
            }),
            field: site.field.clone(),
            container: f.container.clone(),
        })
    }

    /// The key of a finding on the rendered output itself, before it is placed: the same
    /// key [`RenderedFinding::of`] gives once [`super::place`] has moved it.
    pub fn on_render(f: &Finding, root: &Root, variant: &Variant, rendered: &Parsed) -> Self {
        let field = rendered
            .stream()
            .documents
            .get(f.document)
            .and_then(|d| super::node_at(d, f.range).map(|n| d.path_of(n)));
        Self {
            rule: f.rule.clone(),
            root: root.name().to_string(),
            variant: variant.name.clone(),
            object: f.object.as_ref().map(|o| {
                format!(
                    "{}/{}/{}",
                    o.kind,
                    o.namespace.as_deref().unwrap_or(""),
                    o.name.as_deref().unwrap_or("")
                )
            }),
            field,
            container: f.container.clone(),
        }
    }

    /// Whether `other` is this finding again, in another render: the field may move (a
    /// `securityContext` that now exists holds it), so rule, root, variant, object and
    /// container decide. Stricter than the field would be, never looser.
    pub fn again(&self, other: &RenderedFinding) -> bool {
        self.rule == other.rule
            && self.root == other.root
            && self.variant == other.variant
            && self.object == other.object
            && self.container == other.container
    }
}

/// What a planner is given: one variant of one root, its first render parsed and linted.
pub struct PlanInput<'a> {
    pub root: &'a Root,
    pub variant: &'a Variant,
    /// The first render, under [`super::rendered_path`].
    pub rendered: &'a Parsed,
    /// The findings of the first render as the linter reported them (not yet placed: they
    /// still carry what the ordinary fixer needs).
    pub findings: &'a [Finding],
    /// For a chart: what the sentinel render taught.
    pub sentinel: Option<&'a Sentinel>,
    /// A repository file's text, by repository-relative path.
    pub read: &'a dyn Fn(&str) -> Option<String>,
    /// The lowest applicability asked for, as for plain files.
    pub min: Applicability,
    pub kinds: &'a WorkloadKinds,
}

/// What a planner proposes for one root variant: fixes to confirm, and the findings it has
/// none for.
#[derive(Debug, Clone, Default)]
pub struct Proposals {
    pub fixes: Vec<SourceFix>,
    pub none: Vec<NoSourceFix>,
}

/// The fields a fix may change: every leaf path (per rendered object) that the ordinary
/// plain-file fixer changes when it runs on the first render. A source fix whose second
/// render differs anywhere else changed more than hardening fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hardening {
    paths: BTreeSet<(String, String)>,
}

impl Hardening {
    /// Learn the fields from the first render and the plain fixer's result on it.
    pub fn learn(first: &str, fixed: &str) -> Result<Hardening, Unconfirmed> {
        Ok(Hardening {
            paths: differences(first, fixed)?.into_iter().collect(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    fn allows(&self, object: &str, path: &str) -> bool {
        let direct = |path: &str| {
            self.paths
                .iter()
                .any(|(o, h)| o == object && within(path, h))
        };
        direct(path) || at_pod_level(path).is_some_and(|p| direct(&p))
    }
}

/// Why a proposal was not confirmed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unconfirmed {
    #[error("the chart or overlay no longer renders after the fix: {0}")]
    RenderFailed(String),
    #[error("a render is not YAML: {0}")]
    NotYaml(String),
    #[error("[{}] is still reported on {} after the fix", .0.rule, .0.object.as_deref().unwrap_or("the render"))]
    Persists(Box<RenderedFinding>),
    #[error("the fix changes {path} of {object}, which is no hardening field")]
    Changed { object: String, path: String },
}

/// Confirm a proposal (or several applied together) by the second render: it succeeded,
/// none of the findings `resolves` names is reported again (`after`: the findings of the
/// second render), and every field that differs between the renders is a hardening field.
pub fn confirm(
    resolves: &[RenderedFinding],
    hardening: &Hardening,
    first: &str,
    second: Result<&str, &str>,
    after: &[RenderedFinding],
) -> Result<(), Unconfirmed> {
    let second = second.map_err(|e| Unconfirmed::RenderFailed(e.to_string()))?;
    if let Some(f) = resolves.iter().find(|r| after.iter().any(|a| r.again(a))) {
        return Err(Unconfirmed::Persists(Box::new(f.clone())));
    }
    for (object, path) in differences(first, second)? {
        if !hardening.allows(&object, &path) {
            return Err(Unconfirmed::Changed { object, path });
        }
    }
    Ok(())
}

/// For a container's setting that it inherits from the pod (`runAsNonRoot`, the seccomp
/// profile), the same setting in the pod's `securityContext`. The plain fixer writes those
/// once for the pod; a chart that exposes only its containers' `securityContext` takes them
/// there, which hardens exactly as much.
fn at_pod_level(path: &str) -> Option<String> {
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        let Some(i) = path.rfind(&format!(".{list}[")) else {
            continue;
        };
        let (pod, rest) = path.split_at(i);
        let rest = &rest[list.len() + 2..];
        let close = rest.find(']')?;
        let setting = rest[close + 1..].strip_prefix('.')?;
        let keys: Vec<&str> = setting.split('.').collect();
        // Leaf paths only: a container's whole `securityContext` is not the pod's setting.
        if crate::fix::policy::HOISTABLE
            .iter()
            .any(|h| keys.starts_with(h))
        {
            return Some(format!("{pod}.{setting}"));
        }
    }
    None
}

/// Whether `path` is `prefix` or lies inside it, at a segment boundary.
fn within(path: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// The leaf paths at which two renders differ, per object (`kind/namespace/name`; an object
/// only one render has differs at its root, `""`).
fn differences(a: &str, b: &str) -> Result<Vec<(String, String)>, Unconfirmed> {
    let (a, b) = (objects(a)?, objects(b)?);
    let mut out = Vec::new();
    for (key, x) in &a {
        match b.get(key) {
            Some(y) => diff(x, y, String::new(), &mut |p| out.push((key.clone(), p))),
            None => out.push((key.clone(), String::new())),
        }
    }
    out.extend(
        b.keys()
            .filter(|k| !a.contains_key(*k))
            .map(|k| (k.clone(), String::new())),
    );
    Ok(out)
}

/// A render's objects by `kind/namespace/name` (the n-th document without a kind by `#n`).
fn objects(text: &str) -> Result<BTreeMap<String, serde_json::Value>, Unconfirmed> {
    let stream = yaml::parse(
        text,
        &Limits {
            max_bytes: text.len().max(Limits::default().max_bytes),
            ..Limits::default()
        },
    );
    if let Some(e) = stream.errors.first() {
        return Err(Unconfirmed::NotYaml(e.message.clone()));
    }
    let mut out = BTreeMap::new();
    for (i, doc) in stream.documents.iter().enumerate() {
        let Some(root) = doc.root() else { continue };
        let value: serde_json::Value =
            yaml::de::from_node(doc, root).map_err(|e| Unconfirmed::NotYaml(e.to_string()))?;
        if value.is_null() {
            continue;
        }
        let text = |p: &str| value.pointer(p).and_then(|v| v.as_str()).unwrap_or("");
        let key = match text("/kind") {
            "" => format!("#{i}"),
            kind => format!(
                "{kind}/{}/{}",
                text("/metadata/namespace"),
                text("/metadata/name")
            ),
        };
        out.insert(key, value);
    }
    Ok(out)
}

/// Report every leaf path where `a` and `b` differ; a side that lacks a mapping or list the
/// other has counts as empty there, so an added block reports each leaf it adds.
fn diff(a: &serde_json::Value, b: &serde_json::Value, path: String, out: &mut dyn FnMut(String)) {
    use serde_json::Value;
    let key = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    let empty_map = serde_json::Map::new();
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                diff(v, y.get(k).unwrap_or(&Value::Null), key(k), out);
            }
            for (k, v) in y.iter().filter(|(k, _)| !x.contains_key(*k)) {
                diff(&Value::Null, v, key(k), out);
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                let (v, w) = (
                    x.get(i).unwrap_or(&Value::Null),
                    y.get(i).unwrap_or(&Value::Null),
                );
                diff(v, w, format!("{path}[{i}]"), out);
            }
        }
        (Value::Null, Value::Object(_)) => diff(&Value::Object(empty_map), b, path, out),
        (Value::Object(_), Value::Null) => diff(a, &Value::Object(empty_map), path, out),
        (Value::Null, Value::Array(_)) => diff(&Value::Array(Vec::new()), b, path, out),
        (Value::Array(_), Value::Null) => diff(a, &Value::Array(Vec::new()), path, out),
        _ if a == b => {}
        _ => out(path),
    }
}

/// What a source fix does to one repository file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileChange {
    /// Byte edits on the file as it was read.
    Edit(Vec<Edit>),
    /// A file that does not exist yet (a new overlay patch), whole.
    Create(String),
}

/// One fix, written in repository files, for findings of one rendered root variant.
#[derive(Debug, Clone)]
pub struct SourceFix {
    pub resolves: Vec<RenderedFinding>,
    /// Repository-relative path → what changes there.
    pub changes: BTreeMap<String, FileChange>,
    pub applicability: Applicability,
    /// For people: "set securityContext.runAsNonRoot: true in values.yaml".
    pub description: String,
}

/// Why a finding of a render gets no automatic fix, and what would make one possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoSourceFix {
    pub finding: RenderedFinding,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("{path}: two fixes edit the same bytes")]
    Overlap { path: String },
    #[error("{path}: an edit lies outside the file")]
    OutOfRange { path: String },
    #[error("{path}: the file to change cannot be read")]
    Unreadable { path: String },
    #[error("{path}: the file to create exists, or two fixes create it")]
    Exists { path: String },
}

/// The texts of every file `fixes` change, with all of them applied; `read` gives a
/// repository file's text (`None` when there is no such file). All or nothing: an overlap
/// between two fixes is an error, never a half-applied file.
pub fn apply(
    fixes: &[&SourceFix],
    read: &dyn Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, String>, ApplyError> {
    let mut edits: BTreeMap<&str, Vec<&Edit>> = BTreeMap::new();
    let mut created: BTreeMap<String, String> = BTreeMap::new();
    // Two fixes inserting different text at one place would both be written (two
    // `securityContext` blocks for overlays that each fixed a shared base a little
    // differently): that is an overlap too. The same insertion is one edit.
    let mut inserted: BTreeMap<(&str, usize), (usize, &str)> = BTreeMap::new();
    for (i, fix) in fixes.iter().enumerate() {
        for (path, change) in &fix.changes {
            match change {
                FileChange::Edit(e) => {
                    for edit in e.iter().filter(|e| e.range.is_empty()) {
                        let at = (path.as_str(), edit.range.start());
                        match inserted.get(&at) {
                            Some(&(j, text)) if j != i && text != edit.content => {
                                return Err(ApplyError::Overlap { path: path.clone() });
                            }
                            Some(_) => {}
                            None => {
                                inserted.insert(at, (i, &edit.content));
                            }
                        }
                    }
                    edits.entry(path).or_default().extend(e)
                }
                FileChange::Create(text) => {
                    if read(path).is_some() || created.contains_key(path) {
                        return Err(ApplyError::Exists { path: path.clone() });
                    }
                    created.insert(path.clone(), text.clone());
                }
            }
        }
    }
    let mut out = created;
    for (path, mut list) in edits {
        let err = |f: fn(String) -> ApplyError| f(path.to_string());
        if out.contains_key(path) {
            return Err(err(|path| ApplyError::Exists { path }));
        }
        let text = read(path).ok_or_else(|| err(|path| ApplyError::Unreadable { path }))?;
        list.sort();
        list.dedup();
        let mut new = String::with_capacity(text.len());
        let mut at = 0;
        for e in list {
            let (start, end) = (e.range.start(), e.range.end());
            if start < at {
                return Err(err(|path| ApplyError::Overlap { path }));
            }
            if end > text.len() || !text.is_char_boundary(start) || !text.is_char_boundary(end) {
                return Err(err(|path| ApplyError::OutOfRange { path }));
            }
            new.push_str(&text[at..start]);
            new.push_str(&e.content);
            at = end;
        }
        new.push_str(&text[at..]);
        out.insert(path.to_string(), new);
    }
    Ok(out)
}

/// A GitHub suggestion of confirmed source fixes on one file, with the findings it resolves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSuggestion {
    pub path: String,
    pub suggestion: crate::fix::suggest::Suggestion,
    pub resolves: Vec<RenderedFinding>,
    pub applicability: Applicability,
}

/// One-click suggestions for `fixes`, which were confirmed together: per file, the fixes that
/// edit only that file are applied together and the change becomes line suggestions, each
/// carrying the findings of the fixes whose edits lie in it. A fix that creates a file or
/// edits several is no single click (half of it would not render as confirmed): it is left to
/// a commit of all fixes.
pub fn suggestions(
    fixes: &[SourceFix],
    read: &dyn Fn(&str) -> Option<String>,
) -> Vec<SourceSuggestion> {
    let mut by_path: BTreeMap<&str, Vec<&SourceFix>> = BTreeMap::new();
    for f in fixes {
        if let [(path, FileChange::Edit(_))] = f.changes.iter().collect::<Vec<_>>().as_slice() {
            by_path.entry(path.as_str()).or_default().push(f);
        }
    }
    let mut out = Vec::new();
    for (path, list) in by_path {
        let (Some(original), Ok(mut fixed)) = (read(path), apply(&list, read)) else {
            continue;
        };
        let Some(fixed) = fixed.remove(path) else {
            continue;
        };
        let mut found: Vec<SourceSuggestion> = crate::fix::suggest::suggestions(&original, &fixed)
            .into_iter()
            .map(|suggestion| SourceSuggestion {
                path: path.to_string(),
                suggestion,
                resolves: Vec::new(),
                applicability: Applicability::Safe,
            })
            .collect();
        let line = |offset: usize| original[..offset.min(original.len())].matches('\n').count() + 1;
        for fix in list {
            let FileChange::Edit(edits) = &fix.changes[path] else {
                continue;
            };
            // An insertion at a line start is anchored on the line before, as suggestions are.
            let anchors: BTreeSet<usize> = edits
                .iter()
                .map(|e| {
                    let at = line(e.range.start());
                    let line_start = e.range.start() == 0
                        || original.as_bytes().get(e.range.start() - 1) == Some(&b'\n');
                    if e.range.is_empty() && line_start && at > 1 {
                        at - 1
                    } else {
                        at
                    }
                })
                .collect();
            for s in found.iter_mut().filter(|s| {
                anchors
                    .iter()
                    .any(|&a| s.suggestion.start_line <= a && a <= s.suggestion.end_line)
            }) {
                s.resolves.extend(fix.resolves.iter().cloned());
                s.applicability = s.applicability.min(fix.applicability);
            }
        }
        out.extend(found.into_iter().filter(|s| !s.resolves.is_empty()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::TextRange;

    fn fix(path: &str, change: FileChange) -> SourceFix {
        SourceFix {
            resolves: Vec::new(),
            changes: BTreeMap::from([(path.to_string(), change)]),
            applicability: Applicability::Safe,
            description: String::new(),
        }
    }

    #[test]
    fn edits_of_two_fixes_merge_and_keep_every_other_byte() {
        let read = |p: &str| (p == "values.yaml").then(|| "a: 1 # keep\nb: 2\n".to_string());
        let one = fix(
            "values.yaml",
            FileChange::Edit(vec![Edit::replacement(TextRange::new(3, 4), "9")]),
        );
        let two = fix(
            "values.yaml",
            FileChange::Edit(vec![Edit::insertion(17, "c: 3\n")]),
        );
        let new = fix("patch.yaml", FileChange::Create("x: 1\n".into()));
        let out = apply(&[&one, &two, &new], &read).unwrap();
        assert_eq!(out["values.yaml"], "a: 9 # keep\nb: 2\nc: 3\n");
        assert_eq!(out["patch.yaml"], "x: 1\n");
    }

    const FIRST: &str = "# Source: c/templates/d.yaml\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: r-c\nspec:\n  replicas: 1\n  template:\n    spec:\n      containers:\n        - name: app\n          image: nginx:1.27\n          securityContext:\n            {}\n---\n# Source: c/templates/s.yaml\napiVersion: v1\nkind: Service\nmetadata:\n  name: r-c\nspec:\n  ports: [{port: 80}]\n";

    fn finding(rule: &str) -> RenderedFinding {
        RenderedFinding {
            rule: rule.into(),
            root: "c".into(),
            variant: "values.yaml".into(),
            object: Some("Deployment//r-c".into()),
            field: Some("spec.template.spec.containers[0].securityContext".into()),
            container: Some("app".into()),
        }
    }

    /// The plain fixer's result on FIRST: two keys in the container's securityContext.
    fn hardening() -> Hardening {
        let fixed = FIRST.replace(
            "            {}\n",
            "            allowPrivilegeEscalation: false\n            capabilities: {drop: [ALL]}\n",
        );
        Hardening::learn(FIRST, &fixed).unwrap()
    }

    #[test]
    fn a_second_render_that_changes_only_hardening_fields_confirms() {
        let h = hardening();
        let second = FIRST.replace(
            "            {}\n",
            "            allowPrivilegeEscalation: false\n",
        );
        let resolves = [finding("privilege-escalation-allowed")];
        assert_eq!(confirm(&resolves, &h, FIRST, Ok(&second), &[]), Ok(()));
        // Other findings that remain do not matter; the resolved one must be gone.
        let mut again = finding("privilege-escalation-allowed");
        again.field = Some("spec.template.spec.containers[0]".into());
        assert_eq!(
            confirm(&resolves, &h, FIRST, Ok(&second), &[again.clone()]),
            Err(Unconfirmed::Persists(Box::new(resolves[0].clone())))
        );
        assert_eq!(
            confirm(
                &resolves,
                &h,
                FIRST,
                Ok(&second),
                &[finding("capabilities-not-dropped")]
            ),
            Ok(())
        );
    }

    #[test]
    fn a_setting_the_pod_would_hold_for_its_containers_may_be_set_on_a_container() {
        // The plain fixer hoists runAsNonRoot and the seccomp profile to the pod.
        let fixed = FIRST.replace(
            "    spec:\n      containers:",
            "    spec:\n      securityContext:\n        runAsNonRoot: true\n        seccompProfile: {type: RuntimeDefault}\n      containers:",
        );
        let h = Hardening::learn(FIRST, &fixed).unwrap();
        let resolves = [finding("run-as-root-allowed")];
        let on_container = FIRST.replace(
            "            {}\n",
            "            runAsNonRoot: true\n            seccompProfile: {type: RuntimeDefault}\n",
        );
        assert_eq!(
            confirm(&resolves, &h, FIRST, Ok(&on_container), &[]),
            Ok(())
        );
        // Other container settings stay outside what the fix may change.
        let other = FIRST.replace("            {}\n", "            runAsUser: 0\n");
        assert!(matches!(
            confirm(&resolves, &h, FIRST, Ok(&other), &[]),
            Err(Unconfirmed::Changed { .. })
        ));
    }

    #[test]
    fn any_other_change_of_the_render_is_refused() {
        let h = hardening();
        let resolves = [finding("privilege-escalation-allowed")];
        // A values key that also feeds the replica count, or a key beside the hardening ones.
        let replicas = FIRST
            .replace(
                "            {}\n",
                "            allowPrivilegeEscalation: false\n",
            )
            .replace("replicas: 1", "replicas: 2");
        assert_eq!(
            confirm(&resolves, &h, FIRST, Ok(&replicas), &[]),
            Err(Unconfirmed::Changed {
                object: "Deployment//r-c".into(),
                path: "spec.replicas".into()
            })
        );
        let beside = FIRST.replace(
            "            {}\n",
            "            allowPrivilegeEscalation: false\n            runAsUser: 0\n",
        );
        assert!(matches!(
            confirm(&resolves, &h, FIRST, Ok(&beside), &[]),
            Err(Unconfirmed::Changed { path, .. })
                if path == "spec.template.spec.containers[0].securityContext.runAsUser"
        ));
        // An object that appears or goes, a render that fails or is no YAML.
        let gone = FIRST.split("---").next().unwrap().replace(
            "            {}\n",
            "            allowPrivilegeEscalation: false\n",
        );
        assert_eq!(
            confirm(&resolves, &h, FIRST, Ok(&gone), &[]),
            Err(Unconfirmed::Changed {
                object: "Service//r-c".into(),
                path: String::new()
            })
        );
        assert!(matches!(
            confirm(&resolves, &h, FIRST, Err("parse error in values.yaml"), &[]),
            Err(Unconfirmed::RenderFailed(_))
        ));
        assert!(matches!(
            confirm(&resolves, &h, FIRST, Ok("a: [\n"), &[]),
            Err(Unconfirmed::NotYaml(_))
        ));
    }

    #[test]
    fn suggestions_carry_the_findings_of_the_fixes_in_them_and_skip_fixes_of_several_files() {
        let values = "image: nginx\n\npodSecurityContext: {}\n# the container\nsecurityContext:\n  privileged: true\n";
        let read = |p: &str| match p {
            "values.yaml" => Some(values.to_string()),
            "kustomization.yaml" => Some("resources: [a.yaml]\n".to_string()),
            _ => None,
        };
        let at = |s: &str| values.find(s).unwrap();
        let mut pod = fix(
            "values.yaml",
            FileChange::Edit(vec![Edit::replacement(
                TextRange::new(at(" {}"), at(" {}") + 3),
                "\n  runAsNonRoot: true",
            )]),
        );
        pod.resolves = vec![finding("run-as-root-allowed")];
        let start = at("  privileged");
        let mut container = fix(
            "values.yaml",
            FileChange::Edit(vec![
                Edit::replacement(TextRange::new(start, start + 19), "  privileged: false\n"),
                Edit::insertion(values.len(), "  allowPrivilegeEscalation: false\n"),
            ]),
        );
        container.resolves = vec![finding("privileged-container")];
        container.applicability = Applicability::Unsafe;
        let mut overlay = fix("patch.yaml", FileChange::Create("x: 1\n".into()));
        overlay.changes.insert(
            "kustomization.yaml".into(),
            FileChange::Edit(vec![Edit::insertion(0, "patches: [patch.yaml]\n")]),
        );
        overlay.resolves = vec![finding("seccomp-profile-missing")];
        let fixes = [pod, container, overlay];
        let got = suggestions(&fixes, &read);
        let shown: Vec<(usize, usize, &str, Vec<&str>, Applicability)> = got
            .iter()
            .map(|s| {
                (
                    s.suggestion.start_line,
                    s.suggestion.end_line,
                    s.suggestion.replacement.as_str(),
                    s.resolves.iter().map(|r| r.rule.as_str()).collect(),
                    s.applicability,
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                (
                    3,
                    3,
                    "podSecurityContext:\n  runAsNonRoot: true\n",
                    vec!["run-as-root-allowed"],
                    Applicability::Safe
                ),
                (
                    6,
                    6,
                    "  privileged: false\n  allowPrivilegeEscalation: false\n",
                    vec!["privileged-container"],
                    Applicability::Unsafe
                ),
            ]
        );
        // Committing both on the file gives what the two fixes write together.
        let all: Vec<_> = got.iter().map(|s| s.suggestion.clone()).collect();
        assert_eq!(
            crate::fix::suggest::apply(values, &all),
            apply(&[&fixes[0], &fixes[1]], &read).unwrap()["values.yaml"]
        );
    }

    #[test]
    fn overlapping_fixes_are_refused_whole() {
        let read = |_: &str| Some("abcdef".to_string());
        let one = fix(
            "f",
            FileChange::Edit(vec![Edit::replacement(TextRange::new(1, 4), "x")]),
        );
        let two = fix(
            "f",
            FileChange::Edit(vec![Edit::replacement(TextRange::new(2, 3), "y")]),
        );
        assert_eq!(
            apply(&[&one, &two], &read),
            Err(ApplyError::Overlap { path: "f".into() })
        );
        // Different insertions of two fixes at one place overlap; the same one is one edit.
        let at = |text: &str| fix("f", FileChange::Edit(vec![Edit::insertion(3, text)]));
        let (a, b, a2) = (at("x: 1\n"), at("y: 2\n"), at("x: 1\n"));
        assert_eq!(
            apply(&[&a, &b], &read),
            Err(ApplyError::Overlap { path: "f".into() })
        );
        assert_eq!(apply(&[&a, &a2], &read).unwrap()["f"], "abcx: 1\ndef");
        let create = fix("f", FileChange::Create("z".into()));
        assert_eq!(
            apply(&[&create], &read),
            Err(ApplyError::Exists { path: "f".into() })
        );
    }
}
