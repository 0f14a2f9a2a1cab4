//! Which key of a chart's `values.yaml` feeds a rendered field, learned from one more render
//! with sentinel values: every mapping of the values gains one marker key
//! (`kubeharden-sentinel-N: ""`), so wherever the chart prints that mapping (`toYaml
//! .Values.securityContext`, the `helm create` convention) the marker shows up in the rendered
//! object, and the rendered mapping that holds it comes from values key N. Scalars keep their
//! values: a changed boolean or string would change what the chart's conditions choose.

use crate::source::{SourceFile, TextRange};
use crate::yaml::{self, Document, Limits, NodeId, NodeKind};

const MARKER: &str = "kubeharden-sentinel-";

/// A mapping of the values file that got a marker.
#[derive(Debug, Clone)]
pub struct Marker {
    /// Its keys from the top, e.g. `["securityContext"]`.
    pub path: Vec<String>,
    /// The mapping's key in the values file, where a finding is shown.
    pub key: TextRange,
}

/// The sentinel version of a values file, as JSON (which is YAML), and its markers; `None`
/// when the file is not one YAML mapping.
pub fn sentinel_values(values: &SourceFile) -> Option<(String, Vec<Marker>)> {
    let stream = yaml::parse(&values.text, &Limits::default());
    if !stream.errors.is_empty() {
        return None;
    }
    let doc = stream.documents.first()?;
    let root = doc.root().filter(|r| doc.is_mapping(*r))?;
    let mut json: serde_json::Value = yaml::de::from_node(doc, root).ok()?;
    let mut markers = Vec::new();
    mark(doc, root, &mut json, &mut Vec::new(), &mut markers);
    Some((json.to_string(), markers))
}

fn mark(
    doc: &Document,
    node: NodeId,
    json: &mut serde_json::Value,
    path: &mut Vec<String>,
    markers: &mut Vec<Marker>,
) {
    let Some(object) = json.as_object_mut() else {
        return;
    };
    if !path.is_empty()
        && let Some(key) = doc.node(node).parent.and_then(|p| match &doc.node(p).kind {
            NodeKind::Mapping { entries, .. } => entries
                .iter()
                .find(|e| doc.resolve(e.value) == Some(node))
                .map(|e| doc.node(e.key).range),
            _ => None,
        })
    {
        object.insert(format!("{MARKER}{}", markers.len()), "".into());
        markers.push(Marker {
            path: path.clone(),
            key,
        });
    }
    for entry in doc.entries(node) {
        let (Some(k), Some(value)) = (doc.key_str(entry.key), doc.resolve(entry.value)) else {
            continue;
        };
        if !doc.is_mapping(value) {
            continue;
        }
        if let Some(child) = object.get_mut(k) {
            path.push(k.to_string());
            mark(doc, value, child, path, markers);
            path.pop();
        }
    }
}

/// Where markers landed in the sentinel render: (kind, name, path of the rendered mapping
/// that holds the marker, marker index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landing {
    pub kind: String,
    pub name: String,
    pub field: String,
    pub marker: usize,
}

pub fn landings(rendered: &str) -> Vec<Landing> {
    let stream = yaml::parse(
        rendered,
        &Limits {
            max_bytes: rendered.len().max(Limits::default().max_bytes),
            ..Limits::default()
        },
    );
    let mut out = Vec::new();
    for doc in &stream.documents {
        let Some(root) = doc.root().filter(|r| doc.is_mapping(*r)) else {
            continue;
        };
        let text = |path: &[&str]| {
            doc.get_path(root, path)
                .and_then(|n| doc.str_value(n))
                .unwrap_or_default()
                .to_string()
        };
        let (kind, name) = (text(&["kind"]), text(&["metadata", "name"]));
        for (id, node) in doc.nodes() {
            let NodeKind::Mapping { entries, .. } = &node.kind else {
                continue;
            };
            for e in entries {
                if let Some(n) = doc
                    .key_str(e.key)
                    .and_then(|k| k.strip_prefix(MARKER))
                    .and_then(|n| n.parse().ok())
                {
                    out.push(Landing {
                        kind: kind.clone(),
                        name: name.clone(),
                        field: doc.path_of(id),
                        marker: n,
                    });
                }
            }
        }
    }
    out
}

/// Whether `field` is `prefix` or lies inside it, at a segment boundary.
fn within(field: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || field
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// The values key a finding on `field` of the object (`kind`, `name`) comes from: the marker
/// whose rendered mapping is `field` or holds it, deepest first; else, for a field of a pod
/// or container that renders no `securityContext` with the real values, the marker that
/// lands in that pod's or container's `securityContext` (the chart prints that values key
/// there once it holds anything). The range is the key inside that values mapping that
/// `field` names next, when the values file has it, else the mapping's own key (where the
/// hardening keys would be added).
pub fn values_site(
    values: &SourceFile,
    markers: &[Marker],
    landings: &[Landing],
    kind: &str,
    name: &str,
    field: &str,
) -> Option<TextRange> {
    let here = landings.iter().filter(|l| l.kind == kind && l.name == name);
    let holding = here
        .clone()
        .filter(|l| within(field, &l.field))
        .max_by_key(|l| l.field.len());
    let beside = || {
        here.clone()
            .filter(|l| {
                l.field
                    .strip_suffix(".securityContext")
                    .is_some_and(|owner| within(field, owner))
            })
            .max_by_key(|l| l.field.len())
    };
    let (landing, rest) = match holding {
        Some(l) => (l, field[l.field.len()..].trim_start_matches('.')),
        None => (beside()?, ""),
    };
    let marker = markers.get(landing.marker)?;
    let next = rest.split(['.', '[']).next().unwrap_or_default();
    if !next.is_empty() {
        let stream = yaml::parse(&values.text, &Limits::default());
        let doc = stream.documents.first()?;
        let mut at = doc.root()?;
        for k in &marker.path {
            at = doc.get(at, k)?;
        }
        if let Some(e) = doc.entry(at, next) {
            return Some(doc.node(e.key).range.cover(doc.node(e.value).range));
        }
    }
    Some(marker.key)
}
