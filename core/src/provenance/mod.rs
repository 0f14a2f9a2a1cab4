//! Provenance: findings on rendered output moved to the repository file they come from.
//!
//! A render's output is linted like any file, under a name no repository file has
//! ([`rendered_path`]); then each finding is placed in the file that produced its object:
//! the Helm template named by the `# Source:` comment before it, or the file Kustomize's
//! `config.kubernetes.io/origin` annotation names (the renderer asks for it with
//! `buildMetadata: [originAnnotations]`). In a Kustomize origin file the finding goes to the
//! same field of the same object, or to its nearest ancestor there when a patch or
//! transformer added the field. A finding never points at a line of rendered output, which
//! is in no file; where no better place is known it is the start of the template, or the
//! chart's or kustomization's own file.

pub mod fix;
pub mod kustomize_fix;
pub mod sentinel;

use crate::lint::{Finding, RenderSite};
use crate::roots::{Root, RootKind, Variant, join};
use crate::source::{LineCol, SourceFile, TextRange};
use crate::yaml::{self, Document, Limits, NodeId, NodeKind};

/// The name a root's rendered output is linted under: never a repository path.
pub fn rendered_path(root: &Root, variant: &Variant) -> String {
    format!("<rendered {} ({})>", root.name(), variant.name)
}

/// What a chart's sentinel render taught: which values keys land in which rendered mappings.
#[derive(Debug, Clone)]
pub struct Sentinel {
    /// The chart's `values.yaml`, repository-relative path and text.
    pub values: SourceFile,
    pub markers: Vec<sentinel::Marker>,
    pub landings: Vec<sentinel::Landing>,
}

/// The annotation Kustomize writes with `buildMetadata: [originAnnotations]`.
pub const ORIGIN_ANNOTATION: &str = "config.kubernetes.io/origin";

/// Move `findings` that lie in `rendered` (the output of `variant` of `root`) to repository
/// files; `read` gives a repository file's text.
pub fn place(
    findings: &mut [Finding],
    root: &Root,
    variant: &Variant,
    rendered: &SourceFile,
    sentinel: Option<&Sentinel>,
    read: &dyn Fn(&str) -> Option<String>,
) {
    let stream = yaml::parse(
        &rendered.text,
        &Limits {
            max_bytes: rendered.text.len().max(Limits::default().max_bytes),
            ..Limits::default()
        },
    );
    for f in findings.iter_mut().filter(|f| f.path == rendered.path) {
        let site = RenderSite {
            root: root.name().to_string(),
            variant: variant.name.clone(),
            rendered_line: f.start.line,
            field: None,
            also: Vec::new(),
        };
        let doc = stream.documents.get(f.document);
        let field = doc.and_then(|d| node_at(d, f.range).map(|n| (d, n)));
        // Only files the root reads are looked at: never a path the output merely names.
        let origin = match root.kind {
            RootKind::Helm => helm_source(root, &rendered.text, f.range.start()),
            RootKind::Kustomize => doc.and_then(|d| kustomize_origin(root, d)),
        }
        .filter(|p| root.loads.contains(p));
        // A values key that feeds the field is where the user edits, before any template line.
        let from_values = match (root.kind, sentinel, field) {
            (RootKind::Helm, Some(s), Some((d, n))) => d.root().and_then(|top| {
                let text = |path: &[&str]| {
                    d.get_path(top, path)
                        .and_then(|n| d.str_value(n))
                        .unwrap_or_default()
                };
                sentinel::values_site(
                    &s.values,
                    &s.markers,
                    &s.landings,
                    text(&["kind"]),
                    text(&["metadata", "name"]),
                    &d.path_of(n),
                )
                .map(|range| (s.values.path.clone(), range))
            }),
            _ => None,
        };
        let (mut origin, from_values) = match from_values {
            Some((path, range)) => (Some(path), Some((range, 0))),
            None => (origin, None),
        };
        let located = match (root.kind, &origin, field) {
            _ if from_values.is_some() => from_values,
            (RootKind::Kustomize, Some(path), Some((d, n))) => {
                let site = kustomize_site(root, path, d, n, read);
                if let Some(s) = &site {
                    origin = Some(s.path.clone());
                }
                site.map(|s| (s.range, s.document))
            }
            (RootKind::Helm, Some(path), _) => read(path)
                .and_then(|t| template_line(&t, &rendered.text, f.range.start()))
                .map(|r| (r, 0)),
            _ => None,
        };
        let path = origin.unwrap_or_else(|| root.file.clone());
        let (range, document) = located.unwrap_or((TextRange::empty(0), 0));
        let file = read(&path).map(|t| SourceFile::new(path.clone(), t));
        let first = LineCol { line: 1, column: 1 };
        f.start = file.as_ref().map_or(first, |s| s.line_col(range.start()));
        f.end = file.as_ref().map_or(first, |s| s.line_col(range.end()));
        f.range = range;
        f.document = document;
        f.path = path;
        f.render = Some(RenderSite {
            field: field.map(|(d, n)| d.path_of(n)),
            ..site
        });
        // A fix computed on the rendered text cannot be applied to the template or base.
        f.fixable = false;
        f.applicability = None;
        f.hit = None;
    }
}

/// Report once what several renders find at one place: a base that two overlays render has
/// its finding at the same line of the base through both. Findings of different renders with
/// the same rule, file, range, object kind, pod, container and message become the first of
/// them, with the other roots and variants in [`RenderSite::also`]; within one render such
/// findings are different objects (a template that loops), so the n-th of one render goes
/// with the n-th of another. The order of the rest is kept.
pub fn merge_renders(findings: &mut Vec<Finding>) {
    use std::collections::HashMap;
    type Place = (
        String,
        String,
        usize,
        usize,
        Option<String>,
        Option<String>,
        Option<String>,
        String,
    );
    let mut first: HashMap<(Place, usize), usize> = HashMap::new();
    let mut seen: HashMap<(Place, String, String), usize> = HashMap::new();
    let mut out: Vec<Finding> = Vec::with_capacity(findings.len());
    for f in findings.drain(..) {
        let Some(site) = &f.render else {
            out.push(f);
            continue;
        };
        let place = (
            f.rule.clone(),
            f.path.clone(),
            f.range.start(),
            f.range.end(),
            f.object.as_ref().map(|o| o.kind.clone()),
            f.pod.clone(),
            f.container.clone(),
            f.message.clone(),
        );
        let pair = (site.root.clone(), site.variant.clone());
        let nth = seen
            .entry((place.clone(), pair.0.clone(), pair.1.clone()))
            .or_default();
        let key = (place, *nth);
        *nth += 1;
        match first.get(&key) {
            Some(&i) => {
                let kept = out[i].render.as_mut().expect("a render's finding");
                if !kept.also.contains(&pair) {
                    kept.also.push(pair);
                }
            }
            None => {
                first.insert(key, out.len());
                out.push(f);
            }
        }
    }
    *findings = out;
}

/// The template that produced the document at `offset`: the last `# Source:` before it,
/// `<chart>/templates/x.yaml` (or `<chart>/charts/<sub>/templates/x.yaml`) in the chart's
/// directory.
fn helm_source(root: &Root, text: &str, offset: usize) -> Option<String> {
    let before = &text[..offset.min(text.len())];
    let at = before.rfind("# Source: ")?;
    let line = text[at + "# Source: ".len()..].lines().next()?.trim();
    let (_, inside) = line.split_once('/')?;
    join(&root.dir, inside)
}

/// The line of a Helm template that printed the rendered line at `offset`, when the template
/// writes it as literal text: the template's lines are matched against the rendered line with
/// each `{{ }}` action standing for any text, and the n-th rendered occurrence (counted from
/// the document's `# Source:`) is the n-th matching template line. Lines that are actions only
/// match nothing. `None` when there is no such line (the text came from a values key or a
/// helper), so the finding stays at the template's start.
fn template_line(template: &str, rendered: &str, offset: usize) -> Option<TextRange> {
    let offset = offset.min(rendered.len());
    let line_start = rendered[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = rendered[offset..]
        .find('\n')
        .map_or(rendered.len(), |i| offset + i);
    let wanted = rendered[line_start..line_end].trim();
    if wanted.is_empty() {
        return None;
    }
    let doc_start = rendered[..line_start].rfind("# Source: ").unwrap_or(0);
    let earlier = rendered[doc_start..line_start]
        .lines()
        .filter(|l| l.trim() == wanted)
        .count();
    let mut at = 0;
    let mut seen = 0;
    for line in template.split_inclusive('\n') {
        let start = at;
        at += line.len();
        let text = line.trim_end_matches(['\n', '\r']);
        let trimmed = text.trim();
        if matches_template(trimmed, wanted) {
            if seen == earlier {
                let indent = text.len() - text.trim_start().len();
                return Some(TextRange::new(
                    start + indent,
                    start + indent + trimmed.len(),
                ));
            }
            seen += 1;
        }
    }
    None
}

/// Whether `text` is what the template line `line` can print, each `{{ }}` matching any text;
/// a line with no literal text outside its actions matches nothing.
fn matches_template(line: &str, text: &str) -> bool {
    let mut parts = Vec::new();
    let mut rest = line;
    while let Some(open) = rest.find("{{") {
        parts.push(&rest[..open]);
        match rest[open..].find("}}") {
            Some(close) => rest = &rest[open + close + 2..],
            None => return false,
        }
    }
    parts.push(rest);
    if parts.iter().all(|p| p.trim().is_empty()) {
        return false;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return first == text;
    }
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut middle = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match middle.find(part) {
            Some(i) => middle = &middle[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// Where a Kustomize-rendered field comes from in the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KustomizeSite {
    pub path: String,
    pub range: TextRange,
    pub document: usize,
    /// A patch of the root sets the field (else `path` is the origin resource).
    pub patch: bool,
    /// An `images:` entry of a kustomization sets the field (a container's image).
    pub transformer: bool,
}

/// The file and place of the rendered `node`: the last patch of `root` that sets the field,
/// else the field (or its deepest ancestor) in the `origin` resource file.
pub(crate) fn kustomize_site(
    root: &Root,
    origin: &str,
    doc: &Document,
    node: NodeId,
    read: &dyn Fn(&str) -> Option<String>,
) -> Option<KustomizeSite> {
    // A patch that sets the field is where its value comes from.
    let patched = root.patches.iter().rev().find_map(|p| {
        let text = read(p)?;
        locate(&SourceFile::new(p.clone(), text), doc, node, true).map(|at| (p.clone(), at))
    });
    let (path, (range, document), patch) = match patched {
        Some((p, at)) => (p, at, true),
        None => {
            let text = read(origin)?;
            let at = locate(&SourceFile::new(origin, text.clone()), doc, node, false)?;
            if let Some(site) = image_entry(root, &text[at.0.start()..at.0.end()], doc, node, read)
            {
                return Some(site);
            }
            (origin.to_string(), at, false)
        }
    };
    Some(KustomizeSite {
        path,
        range,
        document,
        patch,
        transformer: false,
    })
}

/// The `images:` entry that rewrites the container image at `node`, whose origin file writes
/// `written`: the entry's `newTag`, `digest` or `newName`, in the root's own kustomization
/// first, then in the kustomizations it loads. `None` when the node is no container image or
/// no entry names it.
fn image_entry(
    root: &Root,
    written: &str,
    doc: &Document,
    node: NodeId,
    read: &dyn Fn(&str) -> Option<String>,
) -> Option<KustomizeSite> {
    let segs = segments(doc, node);
    let is_image = matches!(segs.last(), Some(Seg::Key(k)) if k == "image")
        && segs.iter().rev().nth(2).is_some_and(|s| {
            matches!(s, Seg::Key(k) if matches!(k.as_str(), "containers" | "initContainers" | "ephemeralContainers"))
        });
    if !is_image || written.contains('\n') {
        return None;
    }
    let written = written.trim().trim_matches(['"', '\'']);
    // The name an `images:` entry matches: the reference without its tag or digest.
    let name = written.split('@').next().unwrap_or(written);
    let name = match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => &name[..i],
        _ => name,
    };
    let kustomizations = std::iter::once(&root.file).chain(
        root.loads
            .iter()
            .filter(|f| *f != &root.file)
            .filter(|f| crate::roots::KUSTOMIZATION_FILES.contains(&crate::roots::file_name(f))),
    );
    for file in kustomizations {
        let Some(text) = read(file) else { continue };
        let stream = yaml::parse(&text, &Limits::default());
        let Some(d) = stream.documents.first() else {
            continue;
        };
        let Some(top) = d.root() else { continue };
        let Some(images) = d.get(top, "images") else {
            continue;
        };
        for item in d.items(images) {
            let Some(item) = d.resolve(*item) else {
                continue;
            };
            if d.get(item, "name").and_then(|n| d.str_value(n)) != Some(name) {
                continue;
            }
            let at = ["newTag", "digest", "newName"]
                .iter()
                .find_map(|k| d.get(item, k))
                .unwrap_or(item);
            return Some(KustomizeSite {
                path: file.clone(),
                range: d.node(at).range,
                document: 0,
                patch: false,
                transformer: true,
            });
        }
    }
    None
}

/// The repository file the origin annotation of the object holding `node` names.
fn kustomize_origin(root: &Root, doc: &Document) -> Option<String> {
    let top = doc.root()?;
    let origin = doc.get_path(top, &["metadata", "annotations", ORIGIN_ANNOTATION])?;
    let text = doc.str_value(origin)?;
    let origin = yaml::parse(text, &Limits::default());
    let d = origin.documents.first()?;
    let map = d.root()?;
    // Remote origins carry `repo`: no file of this repository.
    if d.get(map, "repo").is_some() {
        return None;
    }
    let path = d.get(map, "path").and_then(|p| d.str_value(p))?;
    join(&root.dir, path)
}

/// The node a finding's range stands for: the smallest that starts where it starts (a range
/// from a key over its value starts at the key, which names the field; a one-entry mapping has
/// that same range), else the smallest that covers it.
fn node_at(doc: &Document, range: TextRange) -> Option<NodeId> {
    let smallest = |keep: &dyn Fn(TextRange) -> bool| {
        doc.nodes()
            .filter(|(_, n)| keep(n.range))
            .min_by_key(|(_, n)| n.range.len())
            .map(|(id, _)| id)
    };
    smallest(&|r| r.start() == range.start())
        .or_else(|| smallest(&|r| r.start() <= range.start() && range.end() <= r.end()))
}

#[derive(Debug, PartialEq)]
enum Seg {
    Key(String),
    /// An item, and its `name` when it has one: merge keys in Kustomize's strategic merge.
    Index(usize, Option<String>),
}

/// The keys and indices from the document's root to `node`.
fn segments(doc: &Document, mut node: NodeId) -> Vec<Seg> {
    let mut out = Vec::new();
    while let Some(up) = doc.node(node).parent {
        match &doc.node(up).kind {
            NodeKind::Mapping { entries, .. } => {
                if let Some(e) = entries.iter().find(|e| e.value == node || e.key == node)
                    && let Some(k) = doc.key_str(e.key)
                {
                    out.push(Seg::Key(k.to_string()));
                }
            }
            NodeKind::Sequence { items, .. } => {
                if let Some(i) = items.iter().position(|i| *i == node) {
                    let name = doc
                        .get(node, "name")
                        .and_then(|n| doc.str_value(n))
                        .map(str::to_string);
                    out.push(Seg::Index(i, name.filter(|_| doc.is_mapping(node))));
                }
            }
            _ => {}
        }
        node = up;
    }
    out.reverse();
    out
}

/// In `origin`, the object of the same kind (with `exact`, only when it has the very field:
/// a patch that sets it) as the rendered one whose name the rendered name
/// contains (a `namePrefix`/`nameSuffix` only adds to it), and in it the field at the rendered
/// node's path or its deepest ancestor there: its range and document index.
fn locate(
    origin: &SourceFile,
    rendered: &Document,
    node: NodeId,
    exact: bool,
) -> Option<(TextRange, usize)> {
    let top = rendered.root()?;
    let kind = rendered
        .get(top, "kind")
        .and_then(|k| rendered.str_value(k));
    let name = rendered
        .get_path(top, &["metadata", "name"])
        .and_then(|k| rendered.str_value(k))
        .unwrap_or_default();
    let stream = yaml::parse(&origin.text, &Limits::default());
    let (index, doc, mut at) = stream.documents.iter().enumerate().find_map(|(i, d)| {
        let r = d.root().filter(|r| d.is_mapping(*r))?;
        let k = d.get(r, "kind").and_then(|k| d.str_value(k));
        let n = d
            .get_path(r, &["metadata", "name"])
            .and_then(|k| d.str_value(k))
            .unwrap_or_default();
        (k == kind && name.contains(n)).then_some((i, d, r))
    })?;
    let mut mark = at;
    for seg in segments(rendered, node) {
        let next = match seg {
            Seg::Key(k) => doc.entry(at, &k).map(|e| {
                let value = doc.resolve(e.value).unwrap_or(e.value);
                // A collection is shown at its key, where a reader looks and a field is added.
                let shown = if doc.is_mapping(value) || doc.is_sequence(value) {
                    e.key
                } else {
                    e.value
                };
                (shown, value)
            }),
            Seg::Index(i, name) => doc
                .resolve(at)
                .filter(|n| doc.is_sequence(*n))
                .and_then(|n| {
                    let items = doc.items(n);
                    match name {
                        Some(name) => items.iter().copied().find(|item| {
                            doc.get(*item, "name").and_then(|v| doc.str_value(v))
                                == Some(name.as_str())
                        }),
                        None => items.get(i).copied(),
                    }
                })
                .map(|item| (item, doc.resolve(item).unwrap_or(item))),
        };
        match next {
            Some((shown, value)) => {
                mark = shown;
                at = value;
            }
            None if exact => return None,
            None => break,
        }
    }
    Some((doc.node(mark).range, index))
}
