//! Source fixes for findings of rendered kustomizations, written where the user edits.
//!
//! Each finding's rendered field is traced as [`super::place`] traces it: to the last patch of
//! the root that sets it, else to the origin resource file. That file is fixed by the ordinary
//! plain-file fixer, restricted to the findings at hand (a base file also holds what overlays
//! already change: an image the overlay pins, a field a patch sets), so there is one writer and
//! every byte outside its edits stays. A base that several overlays render is planned once, so
//! it gets one edit that resolves the findings of all of them.
//!
//! When no repository file holds the field (the origin is remote, or a transformer or an
//! inline patch wrote it) or fixing that file does not resolve the finding, the overlay gets a
//! new strategic-merge patch: the plain-file fixer runs on the rendered object, and what it
//! changed, as a strategic merge, becomes the patch; the kustomization lists it in its own
//! style. The shell confirms every proposal by rendering again.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};
use similar::TextDiff;

use super::fix::{FileChange, NoSourceFix, RenderedFinding, SourceFix};
use super::{kustomize_origin, kustomize_site};
use crate::fix::{self, Edit, MAX_PASSES};
use crate::lint::{Finding, Linter};
use crate::parsed::Parsed;
use crate::roots::{Root, RootKind, Variant, join};
use crate::rules::Applicability;
use crate::source::SourceFile;
use crate::yaml::{self, Document, Limits, NodeId, NodeKind};

/// One rendered root variant: the root, the variant and the render's output.
#[derive(Clone, Copy)]
pub struct Render<'a> {
    pub root: &'a Root,
    pub variant: &'a Variant,
    pub output: &'a SourceFile,
}

/// The proposals for a set of renders' findings.
#[derive(Debug, Default)]
pub struct Planned {
    pub fixes: Vec<SourceFix>,
    /// Findings a plain file would have a fix for that get none here, with the reason.
    pub none: Vec<NoSourceFix>,
}

/// What ties a rendered finding to the same finding of a file linted on its own: the rule, the
/// pod and the container (positions and object names differ; the document is known).
type Key = (String, Option<String>, Option<String>);

fn key_of(f: &Finding) -> Key {
    (f.rule.clone(), f.pod.clone(), f.container.clone())
}

/// A rendered finding to fix, in one render.
struct Wanted {
    finding: RenderedFinding,
    key: Key,
    render: usize,
    /// The rendered document.
    doc: usize,
}

/// Propose source fixes for the `findings` (placed by [`super::place`], as the renders'
/// findings are) of the Kustomize `renders`; `read` gives a repository file's text. Findings
/// of other roots, and those no fix exists for even in the rendered object, are passed over.
pub fn plan(
    linter: &Linter<'_>,
    renders: &[Render<'_>],
    findings: &[Finding],
    min: Applicability,
    read: &dyn Fn(&str) -> Option<String>,
) -> Planned {
    let limits = Limits {
        max_bytes: renders
            .iter()
            .map(|r| r.output.text.len())
            .max()
            .unwrap_or(0)
            .max(Limits::default().max_bytes),
        ..Limits::default()
    };
    let streams: Vec<yaml::Stream> = renders
        .iter()
        .map(|r| yaml::parse(&r.output.text, &limits))
        .collect();
    let mut planned = Planned::default();
    // What the plain-file fixer would fix in each rendered object, linted on its own.
    let mut fixable: BTreeMap<(usize, usize), BTreeSet<Key>> = BTreeMap::new();
    let mut to_file: BTreeMap<String, Vec<(usize, Wanted)>> = BTreeMap::new();
    let mut to_overlay: Vec<Wanted> = Vec::new();
    let mut patches: BTreeSet<String> = BTreeSet::new();
    // The findings of each rendered document (render, document) that a file edit resolves.
    let mut fixed: BTreeMap<(usize, usize), BTreeSet<Key>> = BTreeMap::new();
    for f in findings {
        let Some(site) = &f.render else { continue };
        let Some(index) = renders.iter().position(|r| {
            r.root.kind == RootKind::Kustomize
                && r.root.name() == site.root
                && r.variant.name == site.variant
        }) else {
            continue;
        };
        let render = &renders[index];
        let Some(finding) = RenderedFinding::of(f) else {
            continue;
        };
        let stream = &streams[index];
        let Some(doc) = find_document(stream, f) else {
            planned.none.push(NoSourceFix {
                finding,
                message: "the rendered object could not be found again in the render".into(),
            });
            continue;
        };
        let keys = fixable.entry((index, doc)).or_insert_with(|| {
            let file = standalone(render.output, &stream.documents[doc]);
            linter
                .lint_files(std::slice::from_ref(&file))
                .findings
                .iter()
                .filter(|g| g.hit.is_some() && g.applicability >= Some(min))
                .map(key_of)
                .collect()
        });
        let key = key_of(f);
        if !keys.contains(&key) {
            continue;
        }
        let d = &stream.documents[doc];
        let wanted = Wanted {
            finding,
            key,
            render: index,
            doc,
        };
        let node = site.field.as_deref().and_then(|p| node_by_path(d, p));
        let origin = kustomize_origin(render.root, d).filter(|p| render.root.loads.contains(p));
        match (origin, node) {
            (Some(origin), Some(node)) => {
                match kustomize_site(render.root, &origin, d, node, read) {
                    Some(s) if s.transformer => planned.none.push(NoSourceFix {
                        finding: wanted.finding,
                        message: format!(
                            "the image comes from the `images:` entry in {}: change it there",
                            s.path
                        ),
                    }),
                    Some(s) => {
                        if s.patch {
                            patches.insert(s.path.clone());
                        }
                        to_file
                            .entry(s.path)
                            .or_default()
                            .push((s.document, wanted))
                    }
                    None => to_overlay.push(wanted),
                }
            }
            _ => to_overlay.push(wanted),
        }
    }
    for (path, wanted) in to_file {
        let Some(text) = read(&path) else {
            to_overlay.extend(wanted.into_iter().map(|(_, w)| w));
            continue;
        };
        let set: BTreeSet<(usize, Key)> = wanted.iter().map(|(d, w)| (*d, w.key.clone())).collect();
        // A patch's containers carry no image, and the linter reads such a fragment for what
        // it sets only; with a stand-in image it is read whole, so that what the field needs
        // beside the patched value is written there too. The stand-in goes again after.
        let patch = patches.contains(&path);
        let input = if patch {
            with_stand_in_images(&text)
        } else {
            text.clone()
        };
        let mut outcome = fix_restricted(
            linter,
            &SourceFile::new(path.clone(), input),
            &|f| set.contains(&(f.document, key_of(f))),
            min,
        );
        if patch {
            outcome.text = without_stand_in_images(&outcome.text);
        }
        let mut resolves = Vec::new();
        for (d, w) in wanted {
            match outcome.resolved.get(&(d, w.key.clone())) {
                Some(_) => {
                    fixed
                        .entry((w.render, w.doc))
                        .or_default()
                        .insert(w.key.clone());
                    resolves.push(w.finding)
                }
                None => to_overlay.push(w),
            }
        }
        if resolves.is_empty() {
            continue;
        }
        planned.fixes.push(SourceFix {
            resolves,
            changes: BTreeMap::from([(
                path.clone(),
                FileChange::Edit(line_edits(&text, &outcome.text)),
            )]),
            applicability: outcome.applicability,
            description: format!("{} in {path}", outcome.descriptions.join("; ")),
        });
    }
    let mut by_render: BTreeMap<usize, Vec<Wanted>> = BTreeMap::new();
    for w in to_overlay {
        by_render.entry(w.render).or_default().push(w);
    }
    for (index, wanted) in by_render {
        let fixed_here: BTreeMap<usize, BTreeSet<Key>> = fixed
            .iter()
            .filter(|((r, _), _)| *r == index)
            .map(|((_, d), keys)| (*d, keys.clone()))
            .collect();
        overlay_patch(
            linter,
            &renders[index],
            &streams[index],
            wanted,
            &fixed_here,
            min,
            read,
            &mut planned,
        );
    }
    planned
}

/// The rendered document a placed finding is about: the object of its kind, namespace and
/// name (a render holds each once).
fn find_document(stream: &yaml::Stream, f: &Finding) -> Option<usize> {
    let object = f.object.as_ref()?;
    stream.documents.iter().position(|d| {
        let Some(top) = d.root() else { return false };
        let text = |path: &[&str]| d.get_path(top, path).and_then(|n| d.str_value(n));
        text(&["kind"]) == Some(object.kind.as_str())
            && text(&["metadata", "name"]) == object.name.as_deref()
            && text(&["metadata", "namespace"]) == object.namespace.as_deref()
    })
}

/// A rendered document as a file of its own, for the plain-file fixer.
fn standalone(output: &SourceFile, doc: &Document) -> SourceFile {
    let range = doc.root().map(|r| doc.node(r).range);
    let text = range.map_or("", |r| r.slice(&output.text));
    SourceFile::new(output.path.clone(), format!("{text}\n"))
}

/// The node at a field path as [`Document::path_of`] writes it
/// (`spec.template.spec.containers[0].securityContext`); a key with dots in it is matched
/// whole.
fn node_by_path(doc: &Document, path: &str) -> Option<NodeId> {
    let mut at = doc.root()?;
    let mut rest = path;
    while !rest.is_empty() {
        rest = rest.strip_prefix('.').unwrap_or(rest);
        if let Some(r) = rest.strip_prefix('[') {
            let (index, tail) = r.split_once(']')?;
            at = *doc.items(at).get(index.parse::<usize>().ok()?)?;
            at = doc.resolve(at)?;
            rest = tail;
            continue;
        }
        let entry = doc
            .entries(at)
            .into_iter()
            .filter_map(|e| doc.key_str(e.key).map(|k| (k.len(), e)))
            .filter(|(len, e)| {
                let k = doc.key_str(e.key).unwrap_or_default();
                rest.starts_with(k) && matches!(rest.as_bytes().get(*len), None | Some(b'.' | b'['))
            })
            .max_by_key(|(len, _)| *len)?;
        at = doc.resolve(entry.1.value)?;
        rest = &rest[entry.0..];
    }
    Some(at)
}

/// The image of the stand-in lines [`with_stand_in_images`] adds.
const STAND_IN: &str = "image: kubeharden-stand-in.invalid/patch:0";

/// `text` with a stand-in `image` in every block container mapping that has none, on its own
/// line after the container's first entry.
fn with_stand_in_images(text: &str) -> String {
    let stream = yaml::parse(text, &Limits::default());
    let mut at: Vec<(usize, usize)> = Vec::new();
    for d in &stream.documents {
        for (_, n) in d.nodes() {
            let NodeKind::Mapping {
                entries,
                flow: false,
                ..
            } = &n.kind
            else {
                continue;
            };
            let Some(first) = entries.first() else {
                continue;
            };
            let in_containers = n
                .parent
                .and_then(|seq| d.key_of(seq))
                .and_then(|k| d.key_str(k))
                .is_some_and(|k| {
                    matches!(k, "containers" | "initContainers" | "ephemeralContainers")
                });
            if !in_containers || entries.iter().any(|e| d.key_str(e.key) == Some("image")) {
                continue;
            }
            let key = d.node(first.key).range.start();
            let column = key - text[..key].rfind('\n').map_or(0, |i| i + 1);
            let end = d.node(first.value).range.end().max(key);
            let Some(nl) = text[end..].find('\n') else {
                continue;
            };
            at.push((end + nl + 1, column));
        }
    }
    at.sort();
    let mut out = String::with_capacity(text.len() + at.len() * 64);
    let mut last = 0;
    for (offset, column) in at {
        out.push_str(&text[last..offset]);
        out.push_str(&" ".repeat(column));
        out.push_str(STAND_IN);
        out.push('\n');
        last = offset;
    }
    out.push_str(&text[last..]);
    out
}

fn without_stand_in_images(text: &str) -> String {
    text.split_inclusive('\n')
        .filter(|l| l.trim() != STAND_IN)
        .collect()
}

/// What the restricted fixer did to a file.
struct Outcome {
    text: String,
    /// The wanted findings (document, key) it resolved, with the applicability of their fix.
    resolved: BTreeMap<(usize, Key), Applicability>,
    applicability: Applicability,
    descriptions: Vec<String>,
}

/// The plain-file fixer on `file`, for the findings `want` accepts only: pass after pass (a
/// pass may unlock another, as `fix_file` does), until nothing changes.
fn fix_restricted(
    linter: &Linter<'_>,
    file: &SourceFile,
    want: &dyn Fn(&Finding) -> bool,
    min: Applicability,
) -> Outcome {
    let limits = &linter.settings.limits;
    let mut current = Parsed::new(file.clone(), limits);
    let mut first: BTreeMap<(usize, Key), Applicability> = BTreeMap::new();
    let mut descriptions = Vec::new();
    let unchanged = |file: &SourceFile| Outcome {
        text: file.text.clone(),
        resolved: BTreeMap::new(),
        applicability: Applicability::Safe,
        descriptions: Vec::new(),
    };
    if file.not_utf8.is_some() {
        return unchanged(file);
    }
    let errors = |p: &Parsed| {
        p.stream()
            .errors
            .iter()
            .filter(|e| e.kind == yaml::YamlErrorKind::Syntax)
            .count()
    };
    let mut left: BTreeSet<(usize, Key)>;
    let mut pass = 0;
    loop {
        let selected: Vec<Finding> = linter
            .lint_parsed_files(std::slice::from_ref(&current))
            .findings
            .into_iter()
            .filter(|f| want(f))
            .collect();
        left = selected.iter().map(|f| (f.document, key_of(f))).collect();
        if pass == 0 {
            for f in &selected {
                if let Some(a) = f.applicability {
                    first.insert((f.document, key_of(f)), a);
                }
            }
        }
        pass += 1;
        if pass > MAX_PASSES {
            return unchanged(file);
        }
        let plan = fix::plan(&current, &selected, min, linter.workload_kinds());
        let (text, applied) = fix::apply(&current.file().text, &plan.fixes, min);
        if applied.is_empty() || text == current.file().text {
            break;
        }
        descriptions.extend(
            applied
                .iter()
                .map(|&i| plan.fixes[i].description.clone())
                .filter(|d| !d.is_empty()),
        );
        let next = Parsed::new(SourceFile::new(file.path.clone(), text), limits);
        // A fix may not add a syntax error: then nothing is proposed.
        if errors(&next) > errors(&current) {
            return unchanged(file);
        }
        current = next;
    }
    let resolved: BTreeMap<(usize, Key), Applicability> = first
        .into_iter()
        .filter(|(k, _)| !left.contains(k))
        .collect();
    Outcome {
        text: current.file().text.clone(),
        applicability: resolved
            .values()
            .copied()
            .min()
            .unwrap_or(Applicability::Safe),
        resolved,
        descriptions,
    }
}

/// Byte edits that turn `old` into `new`, one per changed group of lines.
fn line_edits(old: &str, new: &str) -> Vec<Edit> {
    let starts = |text: &str| {
        let mut v = vec![0];
        v.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        if *v.last().unwrap_or(&0) != text.len() {
            v.push(text.len());
        }
        v
    };
    let (old_at, new_at) = (starts(old), starts(new));
    let diff = TextDiff::configure()
        .algorithm(similar::Algorithm::Myers)
        .diff_lines(old, new);
    diff.ops()
        .iter()
        .filter(|op| op.tag() != similar::DiffTag::Equal)
        .map(|op| {
            let (o, n) = (op.old_range(), op.new_range());
            Edit::replacement(
                crate::source::TextRange::new(old_at[o.start], old_at[o.end]),
                &new[new_at[n.start]..new_at[n.end]],
            )
        })
        .collect()
}

/// A new strategic-merge patch in the overlay for the findings no repository file fixes: the
/// fixer runs on each rendered object, and what it changed becomes the patch. `fixed` holds
/// the findings file edits resolve, by rendered document.
#[allow(clippy::too_many_arguments)]
fn overlay_patch(
    linter: &Linter<'_>,
    render: &Render<'_>,
    stream: &yaml::Stream,
    wanted: Vec<Wanted>,
    fixed: &BTreeMap<usize, BTreeSet<Key>>,
    min: Applicability,
    read: &dyn Fn(&str) -> Option<String>,
    planned: &mut Planned,
) {
    let root = render.root;
    let no = |planned: &mut Planned, w: Wanted, message: String| {
        planned.none.push(NoSourceFix {
            finding: w.finding,
            message,
        })
    };
    let Some(kustomization) = read(&root.file) else {
        for w in wanted {
            no(planned, w, format!("{} cannot be read", root.file));
        }
        return;
    };
    let style = KustomizationStyle::of(&kustomization);
    let mut by_doc: BTreeMap<usize, Vec<Wanted>> = BTreeMap::new();
    for w in wanted {
        by_doc.entry(w.doc).or_default().push(w);
    }
    let mut created: BTreeMap<String, FileChange> = BTreeMap::new();
    let mut entries: Vec<PatchEntry> = Vec::new();
    let mut resolves = Vec::new();
    let mut applicability = Applicability::Safe;
    let mut descriptions = Vec::new();
    for (doc, wanted) in by_doc {
        let d = &stream.documents[doc];
        let mut file = standalone(render.output, d);
        // What the file edits fix in this object is made first: a fix may wait on another
        // (allowPrivilegeEscalation: false on privileged: false, which a patch file gets), and
        // the new patch holds only what is left.
        if let Some(keys) = fixed.get(&doc) {
            let done = fix_restricted(linter, &file, &|f| keys.contains(&key_of(f)), min);
            file = SourceFile::new(file.path.clone(), done.text);
        }
        let set: BTreeSet<Key> = wanted.iter().map(|w| w.key.clone()).collect();
        let outcome = fix_restricted(linter, &file, &|f| set.contains(&key_of(f)), min);
        let parse = |text: &str| {
            let s = yaml::parse(text, &linter.settings.limits);
            let d = s.documents.into_iter().next()?;
            let r = d.root()?;
            crate::object::to_json(&d, r).ok()
        };
        let (Some(before), Some(after)) = (parse(&file.text), parse(&outcome.text)) else {
            for w in wanted {
                no(planned, w, "the rendered object cannot be read".into());
            }
            continue;
        };
        let text = |v: &Value, path: &[&str]| {
            path.iter()
                .try_fold(v, |v, k| v.get(k))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let (Some(api_version), Some(kind), Some(name)) = (
            text(&before, &["apiVersion"]),
            text(&before, &["kind"]),
            text(&before, &["metadata", "name"]),
        ) else {
            for w in wanted {
                no(planned, w, "the rendered object has no kind or name".into());
            }
            continue;
        };
        let diff = smp_diff(&before, &after, "");
        let (resolved, unresolved): (Vec<Wanted>, Vec<Wanted>) = wanted
            .into_iter()
            .partition(|w| outcome.resolved.contains_key(&(0, w.key.clone())));
        for w in unresolved {
            no(
                planned,
                w,
                "the fixer finds no fix for it in the rendered object alone".into(),
            );
        }
        let Some(Value::Object(mut diff)) = diff.filter(|_| !resolved.is_empty()) else {
            continue;
        };
        // The name the patch targets: as the bases made it, before this overlay's own
        // `namePrefix` and `nameSuffix`, which Kustomize applies after the patches.
        let target = style.strip_affixes(&name);
        let namespace = text(&before, &["metadata", "namespace"]);
        let legacy = style.legacy_only && !style.namespace;
        let mut metadata = Map::new();
        metadata.insert("name".into(), Value::String(target.clone()));
        if legacy && let Some(ns) = namespace {
            metadata.insert("namespace".into(), Value::String(ns));
        }
        if let Some(Value::Object(m)) = diff.remove("metadata") {
            metadata.extend(m);
        }
        let mut patch = String::new();
        patch.push_str(&format!(
            "apiVersion: {}\n",
            scalar(&Value::String(api_version))
        ));
        patch.push_str(&format!("kind: {}\n", scalar(&Value::String(kind.clone()))));
        emit_entries(&mut patch, &metadata_first(metadata), 0, &style, "metadata");
        emit_map(&mut patch, &diff, 0, &style);
        let base = format!(
            "kubeharden-{}-{}",
            kind.to_ascii_lowercase(),
            target.to_ascii_lowercase()
        );
        let mut file_rel = format!("{base}.yaml");
        let mut n = 2;
        while read(&join(&root.dir, &file_rel).unwrap_or_default()).is_some()
            || created.contains_key(&join(&root.dir, &file_rel).unwrap_or_default())
        {
            file_rel = format!("{base}-{n}.yaml");
            n += 1;
        }
        let Some(path) = join(&root.dir, &file_rel) else {
            continue;
        };
        created.insert(path, FileChange::Create(patch));
        entries.push(PatchEntry {
            path: file_rel,
            kind,
            name: target,
            legacy,
        });
        applicability = applicability.min(outcome.applicability);
        descriptions.extend(outcome.descriptions);
        resolves.extend(resolved.into_iter().map(|w| w.finding));
    }
    if entries.is_empty() {
        return;
    }
    match add_patch_entries(&kustomization, &style, &entries) {
        Some(edits) => {
            created.insert(root.file.clone(), FileChange::Edit(edits));
            planned.fixes.push(SourceFix {
                resolves,
                changes: created,
                applicability,
                description: format!(
                    "{} in a new patch of {}",
                    descriptions.join("; "),
                    root.file
                ),
            });
        }
        None => {
            for finding in resolves {
                planned.none.push(NoSourceFix {
                    finding,
                    message: format!(
                        "a new patch would fix it, but {} is not written in a way a patch entry can be added to (a flow mapping, or `patches` that is not a list)",
                        root.file
                    ),
                });
            }
        }
    }
}

/// `name` first in metadata, as people write it.
fn metadata_first(m: Map<String, Value>) -> Vec<(String, Value)> {
    let mut v: Vec<(String, Value)> = m.into_iter().collect();
    v.sort_by_key(|(k, _)| k != "name");
    v
}

/// The merge keys Kustomize's strategic merge uses for the lists of pod specs: items with the
/// same key are merged, others replaced whole.
fn merge_key(field: &str) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets" => Some("name"),
        "volumeMounts" | "volumeDevices" => Some("mountPath"),
        "ports" => Some("containerPort"),
        _ => None,
    }
}

/// What turns `before` into `after` as a strategic merge: changed and added fields, `null` for
/// a removed key, list items by their merge key (`$patch: delete` for a removed one), other
/// lists whole. `None` when nothing changed.
fn smp_diff(before: &Value, after: &Value, field: &str) -> Option<Value> {
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            let mut out = Map::new();
            for (k, av) in a {
                match b.get(k) {
                    None => {
                        out.insert(k.clone(), av.clone());
                    }
                    Some(bv) => {
                        if let Some(d) = smp_diff(bv, av, k) {
                            out.insert(k.clone(), d);
                        }
                    }
                }
            }
            for k in b.keys().filter(|k| !a.contains_key(*k)) {
                out.insert(k.clone(), Value::Null);
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        (Value::Array(b), Value::Array(a)) if b != a => {
            let id = |v: &Value, key: &str| v.get(key).cloned();
            let keyed = merge_key(field).filter(|key| {
                a.iter()
                    .chain(b)
                    .all(|v| v.is_object() && id(v, key).is_some())
            });
            let Some(key) = keyed else {
                return Some(after.clone());
            };
            let mut items = Vec::new();
            for av in a {
                let k = id(av, key);
                match b.iter().find(|bv| id(bv, key) == k) {
                    None => items.push(av.clone()),
                    Some(bv) => {
                        if let Some(Value::Object(mut d)) = smp_diff(bv, av, "") {
                            d.insert(key.to_string(), k.unwrap_or(Value::Null));
                            items.push(Value::Object(d));
                        }
                    }
                }
            }
            for bv in b
                .iter()
                .filter(|bv| !a.iter().any(|av| id(av, key) == id(bv, key)))
            {
                let mut d = Map::new();
                d.insert(key.to_string(), id(bv, key).unwrap_or(Value::Null));
                d.insert("$patch".into(), Value::String("delete".into()));
                items.push(Value::Object(d));
            }
            (!items.is_empty()).then_some(Value::Array(items))
        }
        _ if before != after => Some(after.clone()),
        _ => None,
    }
}

/// How a kustomization is written: what new entries and patches copy.
#[derive(Debug, Clone)]
struct KustomizationStyle {
    /// Columns from a key to the `-` of its block sequence's items.
    dash: usize,
    /// Columns per nesting level of mappings.
    indent: usize,
    /// It lists patches only under the legacy `patchesStrategicMerge`.
    legacy_only: bool,
    /// It sets `namespace` itself (applied after the patches).
    namespace: bool,
    prefix: String,
    suffix: String,
}

impl KustomizationStyle {
    fn of(text: &str) -> Self {
        let stream = yaml::parse(text, &Limits::default());
        let doc = stream.documents.first();
        let top = doc.and_then(|d| d.root().filter(|r| d.is_mapping(*r)).map(|r| (d, r)));
        let mut style = KustomizationStyle {
            dash: 2,
            indent: 2,
            legacy_only: false,
            namespace: false,
            prefix: String::new(),
            suffix: String::new(),
        };
        let Some((d, top)) = top else { return style };
        let string = |k: &str| {
            d.get(top, k)
                .and_then(|n| d.str_value(n))
                .unwrap_or_default()
                .to_string()
        };
        style.prefix = string("namePrefix");
        style.suffix = string("nameSuffix");
        style.namespace = !string("namespace").is_empty();
        style.legacy_only = d.get(top, "patches").is_none()
            && d.get(top, "patchesStrategicMerge")
                .is_some_and(|n| d.is_sequence(n));
        // The first block sequence of the top mapping shows where its dashes go.
        let column = |offset: usize| offset - text[..offset].rfind('\n').map_or(0, |i| i + 1);
        for e in d.entries(top) {
            let Some(seq) = d.resolve(e.value) else {
                continue;
            };
            if let NodeKind::Sequence { items, .. } = &d.node(seq).kind
                && let Some(first) = items.first()
            {
                let start = d.node(*first).range.start();
                let line = &text[start - column(start)..start];
                if let Some(dash) = line.rfind('-') {
                    style.dash = dash.saturating_sub(column(d.node(e.key).range.start()));
                    break;
                }
            }
        }
        // A block mapping under a top-level key shows the indentation.
        for e in d.entries(top) {
            let Some(value) = d.resolve(e.value) else {
                continue;
            };
            if let NodeKind::Mapping {
                entries,
                flow: false,
                ..
            } = &d.node(value).kind
                && let Some(first) = entries.first()
            {
                let inner = column(d.node(first.key).range.start());
                let outer = column(d.node(e.key).range.start());
                if inner > outer {
                    style.indent = inner - outer;
                    break;
                }
            }
        }
        style
    }

    fn strip_affixes(&self, name: &str) -> String {
        let n = name.strip_prefix(self.prefix.as_str()).unwrap_or(name);
        let n = n.strip_suffix(self.suffix.as_str()).unwrap_or(n);
        if n.is_empty() { name } else { n }.to_string()
    }
}

/// A new entry of the kustomization's patch list.
struct PatchEntry {
    /// Relative to the kustomization's directory.
    path: String,
    kind: String,
    name: String,
    /// Listed under `patchesStrategicMerge`, the patch naming its target itself.
    legacy: bool,
}

/// Edits that add `entries` to the kustomization's `patches` (or, where it lists only those,
/// `patchesStrategicMerge`), after its last item, in its own style; a new `patches` list at
/// the end when it has none. `None` when it is written in a way this cannot extend.
fn add_patch_entries(
    text: &str,
    style: &KustomizationStyle,
    entries: &[PatchEntry],
) -> Option<Vec<Edit>> {
    let stream = yaml::parse(text, &Limits::default());
    if !stream.errors.is_empty() {
        return None;
    }
    let d = stream.documents.first()?;
    let top = d.root().filter(|r| d.is_mapping(*r))?;
    if matches!(&d.node(top).kind, NodeKind::Mapping { flow: true, .. }) {
        return None;
    }
    let legacy = entries.iter().all(|e| e.legacy);
    let key = if legacy {
        "patchesStrategicMerge"
    } else {
        "patches"
    };
    let nl_end = if text.is_empty() || text.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    let Some(entry) = d.entry(top, key) else {
        return Some(vec![Edit::insertion(
            text.len(),
            format!("{nl_end}{key}:\n{}", entry_block(entries, legacy, 0, style)),
        )]);
    };
    let seq = d.resolve(entry.value)?;
    let NodeKind::Sequence { items, flow } = &d.node(seq).kind else {
        return None;
    };
    if *flow {
        let close = d.node(seq).range.end().checked_sub(1)?;
        if text.as_bytes().get(close) != Some(&b']') {
            return None;
        }
        let items_text: Vec<String> = entries
            .iter()
            .map(|e| {
                let path = scalar(&Value::String(e.path.clone()));
                if legacy {
                    path
                } else {
                    format!(
                        "{{path: {path}, target: {{kind: {}, name: {}}}}}",
                        scalar(&Value::String(e.kind.clone())),
                        scalar(&Value::String(e.name.clone()))
                    )
                }
            })
            .collect();
        let sep = if items.is_empty() { "" } else { ", " };
        return Some(vec![Edit::insertion(
            close,
            format!("{sep}{}", items_text.join(", ")),
        )]);
    }
    let last = *items.last()?;
    let key_start = d.node(entry.key).range.start();
    let key_col = key_start - text[..key_start].rfind('\n').map_or(0, |i| i + 1);
    let first = d.node(items[0]).range.start();
    let line_start = text[..first].rfind('\n').map_or(0, |i| i + 1);
    let dash_col = text[line_start..first].rfind('-')?;
    let style = KustomizationStyle {
        dash: dash_col.saturating_sub(key_col),
        ..style.clone()
    };
    let end = d.node(last).range.end();
    let at = text[end..].find('\n').map_or(text.len(), |i| end + i + 1);
    let lead = if at == text.len() { nl_end } else { "" };
    Some(vec![Edit::insertion(
        at,
        format!("{lead}{}", entry_block(entries, legacy, key_col, &style)),
    )])
}

/// Block sequence items for `entries`, under a key at column `key_col`.
fn entry_block(
    entries: &[PatchEntry],
    legacy: bool,
    key_col: usize,
    style: &KustomizationStyle,
) -> String {
    let pad = |n: usize| " ".repeat(n);
    let dash = pad(key_col + style.dash);
    let inner = pad(key_col + style.dash + 2);
    let step = pad(style.indent);
    let mut out = String::new();
    for e in entries {
        let path = scalar(&Value::String(e.path.clone()));
        if legacy {
            out.push_str(&format!("{dash}- {path}\n"));
        } else {
            out.push_str(&format!(
                "{dash}- path: {path}\n{inner}target:\n{inner}{step}kind: {}\n{inner}{step}name: {}\n",
                scalar(&Value::String(e.kind.clone())),
                scalar(&Value::String(e.name.clone())),
            ));
        }
    }
    out
}

/// A scalar as YAML: plain when it reads back as the same string, else double-quoted.
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => {
            let plain = !s.is_empty()
                && !s.starts_with(|c: char| "-?:,[]{}#&*!|>'\"%@` ".contains(c))
                && !s.ends_with([' ', ':'])
                && !s.contains(": ")
                && !s.contains(" #")
                && !s.contains(['\n', '\t', '\r'])
                && !matches!(
                    yaml::parse(s, &Limits::default())
                        .documents
                        .first()
                        .and_then(|d| d.root().and_then(|r| d.scalar(r)))
                        .map(|sc| sc.resolved()),
                    Some(p) if !matches!(p, yaml::Plain::Str(_))
                );
            if plain {
                s.clone()
            } else {
                serde_json::to_string(s).unwrap_or_default()
            }
        }
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

/// A mapping's entries at `indent`, as a block.
fn emit_map(out: &mut String, map: &Map<String, Value>, indent: usize, style: &KustomizationStyle) {
    let entries: Vec<(String, Value)> = map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    emit_list_of(out, &entries, indent, style);
}

fn emit_entries(
    out: &mut String,
    entries: &[(String, Value)],
    indent: usize,
    style: &KustomizationStyle,
    key: &str,
) {
    out.push_str(&format!(
        "{}{}:\n",
        " ".repeat(indent),
        scalar(&Value::String(key.into()))
    ));
    emit_list_of(out, entries, indent + style.indent, style);
}

fn emit_list_of(
    out: &mut String,
    entries: &[(String, Value)],
    indent: usize,
    style: &KustomizationStyle,
) {
    let pad = " ".repeat(indent);
    for (k, v) in entries {
        let key = scalar(&Value::String(k.clone()));
        match v {
            Value::Object(m) if !m.is_empty() => {
                out.push_str(&format!("{pad}{key}:\n"));
                emit_map(out, m, indent + style.indent, style);
            }
            Value::Array(items) if !items.is_empty() => {
                out.push_str(&format!("{pad}{key}:\n"));
                emit_items(out, items, indent + style.dash, style);
            }
            Value::Object(_) => out.push_str(&format!("{pad}{key}: {{}}\n")),
            Value::Array(_) => out.push_str(&format!("{pad}{key}: []\n")),
            scalar_value => out.push_str(&format!("{pad}{key}: {}\n", scalar(scalar_value))),
        }
    }
}

/// Sequence items with their `-` at `indent`; a mapping item's identifying keys come first.
fn emit_items(out: &mut String, items: &[Value], indent: usize, style: &KustomizationStyle) {
    let pad = " ".repeat(indent);
    for item in items {
        match item {
            Value::Object(m) if !m.is_empty() => {
                let mut entries: Vec<(String, Value)> =
                    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                let rank = |k: &str| match k {
                    "name" | "mountPath" | "containerPort" => 0,
                    "$patch" => 1,
                    _ => 2,
                };
                entries.sort_by_key(|(k, _)| rank(k));
                let mut inner = String::new();
                emit_list_of(&mut inner, &entries, indent + 2, style);
                // The first line's indentation becomes the dash.
                let body = inner.get(indent + 2..).unwrap_or_default();
                out.push_str(&format!("{pad}- {body}"));
            }
            Value::Array(_) | Value::Object(_) => out.push_str(&format!(
                "{pad}- {}\n",
                if item.is_array() { "[]" } else { "{}" }
            )),
            other => out.push_str(&format!("{pad}- {}\n", scalar(other))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lint::Settings;
    use crate::provenance::fix::apply;
    use crate::provenance::{place, rendered_path};
    use crate::roots::{Repo, discover};
    use crate::rules::Registry;

    /// A repository in memory, its roots, and the captured `kubectl kustomize` output of the
    /// roots named in `renders` (with `buildMetadata: [originAnnotations]`).
    struct Case {
        files: BTreeMap<String, String>,
        roots: Vec<Root>,
        outputs: Vec<(usize, SourceFile)>,
    }

    impl Case {
        fn new(files: &[(&str, &str)], renders: &[(&str, &str)]) -> Case {
            let files: BTreeMap<String, String> = files
                .iter()
                .map(|(p, t)| (p.to_string(), t.to_string()))
                .collect();
            let read = |p: &str| files.get(p).cloned();
            let roots = discover(&Repo::new(files.keys().cloned(), &read));
            let outputs = renders
                .iter()
                .map(|(dir, text)| {
                    let i = roots.iter().position(|r| r.dir == *dir).unwrap();
                    let path = rendered_path(&roots[i], &roots[i].variants[0]);
                    (i, SourceFile::new(path, *text))
                })
                .collect();
            Case {
                files,
                roots,
                outputs,
            }
        }

        /// Lint the renders, place their findings, plan.
        fn plan(&self, min: Applicability) -> (Vec<Finding>, Planned) {
            let registry = Registry::builtin().unwrap();
            let linter = Linter::new(&registry, Settings::default());
            let read = |p: &str| self.files.get(p).cloned();
            let mut all = Vec::new();
            for (i, output) in &self.outputs {
                let root = &self.roots[*i];
                let mut findings = linter.lint_files(std::slice::from_ref(output)).findings;
                place(&mut findings, root, &root.variants[0], output, None, &read);
                all.extend(findings);
            }
            let renders: Vec<Render> = self
                .outputs
                .iter()
                .map(|(i, output)| Render {
                    root: &self.roots[*i],
                    variant: &self.roots[*i].variants[0],
                    output,
                })
                .collect();
            let planned = plan(&linter, &renders, &all, min, &read);
            (all, planned)
        }

        fn apply(&self, planned: &Planned) -> BTreeMap<String, String> {
            let read = |p: &str| self.files.get(p).cloned();
            apply(&planned.fixes.iter().collect::<Vec<_>>(), &read).unwrap()
        }
    }

    const DEPLOY: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  selector:\n    matchLabels: {app: api}\n  template:\n    metadata:\n      labels: {app: api}\n    spec:\n      containers:\n        - name: log\n          image: busybox:1.36\n        - name: api\n          image: ghcr.io/acme/api:2.4.1\n";
    const PRIVILEGED: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  template:\n    spec:\n      containers:\n        - name: api\n          securityContext:\n            privileged: true\n";
    /// `kubectl kustomize prod` (v5.6.0) of the files below.
    const PROD: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  annotations:\n    config.kubernetes.io/origin: |\n      path: ../base/deploy.yaml\n  name: prod-api\nspec:\n  selector:\n    matchLabels:\n      app: api\n  template:\n    metadata:\n      labels:\n        app: api\n    spec:\n      containers:\n      - image: ghcr.io/acme/api:2.4.1\n        name: api\n        securityContext:\n          privileged: true\n      - image: busybox:1.36\n        name: log\n";

    fn rules(planned: &Planned) -> BTreeSet<String> {
        planned
            .fixes
            .iter()
            .flat_map(|f| f.resolves.iter().map(|r| r.rule.clone()))
            .collect()
    }

    #[test]
    fn a_patch_that_sets_privileged_is_edited_and_the_base_keeps_its_other_fixes() {
        let case = Case::new(
            &[
                ("base/kustomization.yaml", "resources: [deploy.yaml]\n"),
                ("base/deploy.yaml", DEPLOY),
                (
                    "prod/kustomization.yaml",
                    "resources: [../base]\nnamePrefix: prod-\npatches:\n  - path: privileged.yaml\n",
                ),
                ("prod/privileged.yaml", PRIVILEGED),
            ],
            &[("prod", PROD)],
        );
        let (found, planned) = case.plan(Applicability::Unsafe);
        let out = case.apply(&planned);
        let patch = out
            .get("prod/privileged.yaml")
            .unwrap_or_else(|| panic!("{found:#?}\n{planned:#?}\n{out:#?}"));
        assert!(patch.contains("privileged: false"), "{patch}");
        assert!(!patch.contains("privileged: true"), "{patch}");
        // Every byte of the patch before the edit stays.
        assert!(
            patch.starts_with(&PRIVILEGED[..PRIVILEGED.find("            privileged").unwrap()])
        );
        let fix = planned
            .fixes
            .iter()
            .find(|f| f.changes.contains_key("prod/privileged.yaml"))
            .unwrap();
        assert!(
            fix.resolves
                .iter()
                .any(|r| r.rule == "privileged-container" && r.root == "prod"),
            "{fix:?}"
        );
        // The patch is not a second writer's: no kustomization edit, no new file.
        assert!(!out.contains_key("prod/kustomization.yaml"), "{out:#?}");
        assert!(out.keys().all(|p| case.files.contains_key(p)), "{out:#?}");
        // The log container no patch touches is fixed in the base.
        if let Some(base) = out.get("base/deploy.yaml") {
            assert!(base.starts_with(&DEPLOY[..DEPLOY.find("        - name: log").unwrap()]));
            assert!(!base.contains("privileged"), "{base}");
        }
    }

    /// `kubectl kustomize prod` (v5.6.0) of a base and a flow-style patch that sets
    /// `privileged: true`.
    const FLOW_PROD: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  annotations:\n    config.kubernetes.io/origin: |\n      path: ../base/deploy.yaml\n  name: api\nspec:\n  selector:\n    matchLabels:\n      app: api\n  template:\n    metadata:\n      labels:\n        app: api\n    spec:\n      containers:\n      - image: ghcr.io/acme/api:2.4.1\n        name: api\n        securityContext:\n          privileged: true\n";

    #[test]
    fn a_new_patch_is_planned_on_the_object_as_the_patch_files_edit_leaves_it() {
        let flow = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api}\nspec:\n  template:\n    spec:\n      containers: [{name: api, securityContext: {privileged: true}}]\n";
        let case = Case::new(
            &[
                ("base/kustomization.yaml", "resources: [deploy.yaml]\n"),
                (
                    "base/deploy.yaml",
                    "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  selector:\n    matchLabels: {app: api}\n  template:\n    metadata:\n      labels: {app: api}\n    spec:\n      containers:\n        - name: api\n          image: ghcr.io/acme/api:2.4.1\n",
                ),
                (
                    "prod/kustomization.yaml",
                    "resources: [../base]\npatches:\n  - path: flow.yaml\n",
                ),
                ("prod/flow.yaml", flow),
            ],
            &[("prod", FLOW_PROD)],
        );
        let (_, planned) = case.plan(Applicability::Unsafe);
        // allowPrivilegeEscalation: false is refused beside privileged: true; the flow patch
        // gets privileged: false, so the new patch may set it.
        assert!(
            planned
                .none
                .iter()
                .all(|n| n.finding.rule != "privilege-escalation-allowed"),
            "{planned:#?}"
        );
        let out = case.apply(&planned);
        assert_eq!(
            out["prod/flow.yaml"],
            flow.replace("privileged: true", "privileged: false")
        );
        let patch = &out["prod/kubeharden-deployment-api.yaml"];
        assert!(patch.contains("allowPrivilegeEscalation: false"), "{patch}");
        // What the flow patch's edit fixes is not written twice.
        assert!(!patch.contains("privileged"), "{patch}");
    }

    const SHARED: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  selector:\n    matchLabels: {app: api}\n  template:\n    metadata:\n      labels: {app: api}\n    spec:\n      containers:\n        - name: api # the service\n          image: ghcr.io/acme/api:2.4.1\n          securityContext:\n            privileged: true\n";
    const SHARED_PROD: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  annotations:\n    config.kubernetes.io/origin: |\n      path: ../base/deploy.yaml\n  name: prod-api\nspec:\n  selector:\n    matchLabels:\n      app: api\n  template:\n    metadata:\n      labels:\n        app: api\n    spec:\n      containers:\n      - image: ghcr.io/acme/api:2.4.1\n        name: api\n        securityContext:\n          privileged: true\n";
    const SHARED_STAGING: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  annotations:\n    config.kubernetes.io/origin: |\n      path: ../base/deploy.yaml\n  name: api\n  namespace: staging\nspec:\n  selector:\n    matchLabels:\n      app: api\n  template:\n    metadata:\n      labels:\n        app: api\n    spec:\n      containers:\n      - image: ghcr.io/acme/api:2.4.1\n        name: api\n        securityContext:\n          privileged: true\n";

    #[test]
    fn a_base_two_overlays_render_gets_one_edit_that_resolves_both() {
        let case = Case::new(
            &[
                ("base/kustomization.yaml", "resources: [deploy.yaml]\n"),
                ("base/deploy.yaml", SHARED),
                (
                    "prod/kustomization.yaml",
                    "resources: [../base]\nnamePrefix: prod-\n",
                ),
                (
                    "staging/kustomization.yaml",
                    "resources:\n- ../base\nnamespace: staging\n",
                ),
            ],
            &[("prod", SHARED_PROD), ("staging", SHARED_STAGING)],
        );
        let (_, planned) = case.plan(Applicability::Unsafe);
        // One fix, in the base only, for the findings of both overlays.
        assert_eq!(planned.fixes.len(), 1, "{planned:#?}");
        let fix = &planned.fixes[0];
        assert_eq!(
            fix.changes.keys().collect::<Vec<_>>(),
            ["base/deploy.yaml"],
            "{fix:#?}"
        );
        let roots: BTreeSet<&str> = fix
            .resolves
            .iter()
            .filter(|r| r.rule == "privileged-container")
            .map(|r| r.root.as_str())
            .collect();
        assert_eq!(roots, BTreeSet::from(["prod", "staging"]));
        let out = case.apply(&planned);
        let base = &out["base/deploy.yaml"];
        assert_eq!(base.matches("privileged: false").count(), 1, "{base}");
        assert_eq!(base.matches("runAsNonRoot: true").count(), 1, "{base}");
        // The comment and every line before the edit stay.
        assert!(base.starts_with(&SHARED[..SHARED.find("            privileged").unwrap()]));
        // Safe fixes only: privileged stays, and what it blocks is not claimed either.
        let (_, safe) = case.plan(Applicability::Safe);
        assert!(!rules(&safe).contains("privileged-container"), "{safe:#?}");
    }

    #[test]
    fn a_base_two_overlays_render_is_reported_once_naming_both() {
        let case = Case::new(
            &[
                ("base/kustomization.yaml", "resources: [deploy.yaml]\n"),
                ("base/deploy.yaml", SHARED),
                (
                    "prod/kustomization.yaml",
                    "resources: [../base]\nnamePrefix: prod-\n",
                ),
                (
                    "staging/kustomization.yaml",
                    "resources:\n- ../base\nnamespace: staging\n",
                ),
            ],
            &[("prod", SHARED_PROD), ("staging", SHARED_STAGING)],
        );
        let (mut found, _) = case.plan(Applicability::Unsafe);
        let before = found.len();
        let privileged = |found: &[Finding]| {
            found
                .iter()
                .filter(|f| f.rule == "privileged-container")
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(privileged(&found).len(), 2);
        crate::provenance::merge_renders(&mut found);
        assert_eq!(found.len() * 2, before, "{found:#?}");
        let p = privileged(&found);
        assert_eq!(p.len(), 1, "{p:#?}");
        let site = p[0].render.as_ref().unwrap();
        assert_eq!(site.root, "prod");
        assert_eq!(
            site.also,
            [("staging".to_string(), "kustomization.yaml".to_string())]
        );
        assert_eq!(
            (p[0].path.as_str(), p[0].start.line),
            ("base/deploy.yaml", 16)
        );
    }

    /// `kubectl kustomize` of an overlay whose base is remote, as an allow-listed render would
    /// print it: the origin names a repository, not a file of this one.
    const REMOTE: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  annotations:\n    config.kubernetes.io/origin: |\n      path: deploy/api.yaml\n      repo: https://github.com/acme/base\n      ref: v1\n  name: prod-api\n  namespace: shop\nspec:\n  selector:\n    matchLabels:\n      app: api\n  template:\n    metadata:\n      labels:\n        app: api\n    spec:\n      hostPID: true\n      containers:\n      - image: ghcr.io/acme/api:2.4.1\n        name: api\n        volumeMounts:\n        - mountPath: /data\n          name: data\n      volumes:\n      - name: data\n        emptyDir: {}\n";

    #[test]
    fn a_remote_base_gets_a_new_overlay_patch_listed_in_the_kustomizations_style() {
        let kustomization = "# prod\nresources:\n- https://github.com/acme/base//deploy?ref=v1\nnamePrefix: prod-\nimages:\n- name: ghcr.io/acme/api\n  newTag: 2.4.1\n";
        let case = Case::new(
            &[("prod/kustomization.yaml", kustomization)],
            &[("prod", REMOTE)],
        );
        let (found, planned) = case.plan(Applicability::Unsafe);
        assert!(found.iter().any(|f| f.rule == "host-pid"), "{found:#?}");
        let out = case.apply(&planned);
        let patch = &out["prod/kubeharden-deployment-api.yaml"];
        let k = &out["prod/kustomization.yaml"];
        // The kustomization keeps every byte and lists the patch, targeted by the name the
        // base gives (this overlay's prefix comes after patches), dashes as its own.
        assert_eq!(
            k,
            &format!(
                "{kustomization}patches:\n- path: kubeharden-deployment-api.yaml\n  target:\n    kind: Deployment\n    name: api\n"
            )
        );
        assert!(patch.starts_with("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  template:\n    spec:\n"), "{patch}");
        // Only what the fixer changed: hostPID removed, the container hardened by its name.
        assert!(patch.contains("      hostPID: null\n"), "{patch}");
        assert!(
            patch.contains("      containers:\n      - name: api\n        securityContext:\n"),
            "{patch}"
        );
        assert!(!patch.contains("image"), "{patch}");
        assert!(!patch.contains("volumes"), "{patch}");
        let stream = yaml::parse(patch, &Limits::default());
        assert!(stream.errors.is_empty(), "{patch}");
        let fix = planned
            .fixes
            .iter()
            .find(|f| f.changes.contains_key("prod/kustomization.yaml"))
            .unwrap();
        assert!(
            fix.resolves.iter().any(|r| r.rule == "host-pid"),
            "{fix:#?}"
        );
        assert!(fix.description.contains("new patch"), "{}", fix.description);
    }

    #[test]
    fn a_kustomization_that_lists_legacy_patches_gets_its_entry_there() {
        let kustomization = "resources:\n  - https://github.com/acme/base//deploy?ref=v1\npatchesStrategicMerge:\n  - replicas.yaml\n";
        let case = Case::new(
            &[
                ("prod/kustomization.yaml", kustomization),
                (
                    "prod/replicas.yaml",
                    "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: prod-api\n  namespace: shop\nspec:\n  replicas: 2\n",
                ),
            ],
            &[("prod", &REMOTE.replace("name: prod-api", "name: api"))],
        );
        let (_, planned) = case.plan(Applicability::Unsafe);
        let out = case.apply(&planned);
        assert_eq!(
            out["prod/kustomization.yaml"],
            format!("{kustomization}  - kubeharden-deployment-api.yaml\n")
        );
        let patch = &out["prod/kubeharden-deployment-api.yaml"];
        // A legacy patch names its target itself, namespace included.
        assert!(
            patch.starts_with(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\n  namespace: shop\n"
            ),
            "{patch}"
        );
    }

    #[test]
    fn strategic_merge_diffs_merge_list_items_by_key() {
        let before = serde_json::json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b"}], "hostPID": true, "drop": ["A"]}});
        let after = serde_json::json!({"spec": {"containers": [{"name": "a", "image": "x", "securityContext": {"privileged": false}}], "drop": ["A", "ALL"]}});
        assert_eq!(
            smp_diff(&before, &after, ""),
            Some(serde_json::json!({"spec": {
                "containers": [{"name": "a", "securityContext": {"privileged": false}}, {"name": "b", "$patch": "delete"}],
                "hostPID": null,
                "drop": ["A", "ALL"],
            }}))
        );
        assert_eq!(smp_diff(&before, &before, ""), None);
    }

    #[test]
    fn scalars_are_quoted_only_when_plain_would_read_differently() {
        let s = |t: &str| scalar(&Value::String(t.into()));
        assert_eq!(s("api"), "api");
        assert_eq!(s("true"), "\"true\"");
        assert_eq!(s("1.0"), "\"1.0\"");
        assert_eq!(s("a: b"), "\"a: b\"");
        assert_eq!(s("- x"), "\"- x\"");
        assert_eq!(s(""), "\"\"");
    }
}
