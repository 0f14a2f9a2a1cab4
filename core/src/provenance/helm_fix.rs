//! Source fixes for Helm charts: the hardening keys set in `values.yaml` under the values key
//! the chart prints into the rendered field (found by the sentinel render, whatever the key is
//! called: `securityContext`, `podSecurityContext`, `controller.containerSecurityContext`),
//! else the template line edited when the template writes that part of the object as literal
//! YAML, else a [`NoSourceFix`] saying what the chart would need.
//!
//! What to set comes from the ordinary planner run on the first render (`fix::needs`: the
//! rules' needs after hoisting and the Kubernetes policy), so a chart gets exactly the values
//! a plain manifest would; only where they are written differs.

use std::collections::{BTreeMap, BTreeSet};

use crate::fix::need::Need;
use crate::fix::write::{Action, Writer, detect_style};
use crate::fix::{self, Edit, KEY_ORDER};
use crate::rules::Applicability;
use crate::source::TextRange;
use crate::yaml::{self, Document, Limits, NodeId};

use super::fix::{FileChange, NoSourceFix, PlanInput, Proposals, RenderedFinding, SourceFix};
use super::sentinel::Landing;

/// A need, and the path below its values mapping and action it is written there with.
type Written<'n> = (&'n Need, Vec<String>, Action);

/// Where one need goes in the values file, or why it cannot go there.
enum Placed {
    /// Under the values mapping of this marker, at this path, this action.
    Values {
        marker: usize,
        path: Vec<String>,
        action: Action,
    },
    /// No values key renders there: the message for the finding.
    Nowhere(String),
}

pub fn plan(input: &PlanInput) -> Proposals {
    let rendered = input.rendered;
    let docs = &rendered.stream().documents;
    let (needs, _refusals) = fix::needs(rendered, input.findings, input.min, input.kinds);
    let key = |i: usize| {
        RenderedFinding::on_render(&input.findings[i], input.root, input.variant, rendered)
    };
    let values = input.sentinel.map(|s| {
        let stream = yaml::parse(&s.values.text, &Limits::default());
        (s, stream)
    });
    // Needs by the values mapping they are written in; one fix per mapping.
    let mut groups: BTreeMap<usize, Vec<Written>> = BTreeMap::new();
    let mut unplaced: BTreeMap<usize, String> = BTreeMap::new();
    for need in &needs {
        let doc = &docs[need.doc];
        let placed = match &values {
            Some((s, stream)) if stream.errors.is_empty() => match stream.documents.first() {
                Some(vdoc) => place(doc, need, &s.landings, &s.markers, vdoc),
                None => Placed::Nowhere("the chart's values.yaml is empty".into()),
            },
            Some(_) => Placed::Nowhere("the chart's values.yaml does not parse".into()),
            None => Placed::Nowhere(
                "the chart has no values.yaml whose keys the sentinel render could trace".into(),
            ),
        };
        // A setting hoisted to the pod (runAsNonRoot, seccompProfile) that no values key
        // takes there can still go where each container's securityContext comes from, as the
        // container-level needs it stands for: many charts expose only that one.
        let each = match &placed {
            Placed::Nowhere(_) if !need.from.is_empty() => match &values {
                Some((s, stream)) if stream.errors.is_empty() => {
                    stream.documents.first().and_then(|vdoc| {
                        need.from
                            .iter()
                            .map(|n| match place(doc, n, &s.landings, &s.markers, vdoc) {
                                Placed::Values {
                                    marker,
                                    path,
                                    action,
                                } => Some((marker, (n, path, action))),
                                Placed::Nowhere(_) => None,
                            })
                            .collect::<Option<Vec<_>>>()
                    })
                }
                _ => None,
            },
            _ => None,
        };
        if let Some(each) = each {
            for (marker, written) in each {
                groups.entry(marker).or_default().push(written);
            }
            continue;
        }
        match placed {
            Placed::Values {
                marker,
                path,
                action,
            } => groups.entry(marker).or_default().push((need, path, action)),
            Placed::Nowhere(why) => {
                let why = match why.is_empty() {
                    true => nowhere(input, doc, need),
                    false => why,
                };
                for &f in &need.findings {
                    unplaced.entry(f).or_insert_with(|| why.clone());
                }
            }
        }
    }
    let mut out = Proposals::default();
    if let Some((s, stream)) = &values
        && let Some(vdoc) = stream.documents.first()
    {
        let style = detect_style(&s.values, &stream.documents);
        for (marker, group) in groups {
            // A finding with a need no values key takes is not resolved by the others.
            let resolves: BTreeSet<usize> = group
                .iter()
                .flat_map(|(n, _, _)| n.findings.iter().copied())
                .filter(|f| !unplaced.contains_key(f))
                .collect();
            if resolves.is_empty() {
                continue;
            }
            let Some(m) = s.markers.get(marker) else {
                continue;
            };
            let Some(base) = values_node(vdoc, &m.path) else {
                continue;
            };
            let mut writer = Writer::new(&s.values, vdoc, style, KEY_ORDER);
            let mut described = Vec::new();
            let mut applicability = Applicability::Safe;
            for (need, path, action) in &group {
                if !need.findings.iter().any(|f| resolves.contains(f)) {
                    continue;
                }
                if writer.apply(base, path, action) {
                    described.push(describe(&m.path, path, action));
                    applicability = applicability.min(need.applicability);
                }
            }
            writer.flush_inserts();
            if writer.edits.is_empty() {
                for &f in &resolves {
                    unplaced.entry(f).or_insert_with(|| {
                        format!(
                            "`{}` in {} cannot be edited in place (a block scalar or an alias)",
                            m.path.join("."),
                            s.values.path
                        )
                    });
                }
                continue;
            }
            let edits = std::mem::take(&mut writer.edits);
            if touches(&edits, &stream.comments) {
                // As for plain files: a comment may carry meaning the fix cannot see.
                applicability = match applicability {
                    Applicability::Safe => Applicability::Unsafe,
                    _ => Applicability::DisplayOnly,
                };
            }
            out.fixes.push(SourceFix {
                resolves: resolves.iter().map(|&f| key(f)).collect(),
                changes: BTreeMap::from([(s.values.path.clone(), FileChange::Edit(edits))]),
                applicability,
                description: format!("{} in {}", described.join("; "), s.values.path),
            });
        }
    }
    templates(input, &needs, &mut unplaced, &mut out);
    let mut seen = BTreeSet::new();
    for (f, message) in unplaced {
        let finding = key(f);
        if seen.insert(finding.clone()) {
            out.none.push(NoSourceFix { finding, message });
        }
    }
    out
}

/// For findings no values key takes: the ordinary fixer's edits on the render, written in the
/// template instead where the lines around them are the template's literal text (the
/// indentation shifted by what the template's own lines show). A fix is only tried when none
/// of its findings has a need written in the values, so the two never set the same field.
fn templates(
    input: &PlanInput,
    needs: &[Need],
    unplaced: &mut BTreeMap<usize, String>,
    out: &mut Proposals,
) {
    if unplaced.is_empty() {
        return;
    }
    let rendered = input.rendered;
    let text = &rendered.file().text;
    let docs = &rendered.stream().documents;
    let in_values: BTreeSet<usize> = needs
        .iter()
        .flat_map(|n| n.findings.iter().copied())
        .filter(|f| !unplaced.contains_key(f))
        .collect();
    let plan = fix::plan(rendered, input.findings, input.min, input.kinds);
    for f in plan.fixes {
        if f.findings.is_empty()
            || f.findings
                .iter()
                .any(|i| in_values.contains(i) || !unplaced.contains_key(i))
        {
            continue;
        }
        let Some(doc) = input
            .findings
            .get(f.findings[0])
            .and_then(|x| docs.get(x.document))
        else {
            continue;
        };
        let Some(path) = doc
            .root()
            .and_then(|r| super::helm_source(input.root, text, doc.node(r).range.start()))
        else {
            continue;
        };
        let Some(template) = (input.read)(&path) else {
            continue;
        };
        let edits: Option<Vec<Edit>> = f
            .edits()
            .iter()
            .map(|e| transplant(&template, text, e))
            .collect();
        let Some(edits) = edits else { continue };
        let resolves: BTreeSet<usize> = f.findings.iter().copied().collect();
        for i in &resolves {
            unplaced.remove(i);
        }
        let shown = path
            .strip_prefix(&format!("{}/", input.root.dir))
            .unwrap_or(&path)
            .to_string();
        out.fixes.push(SourceFix {
            resolves: resolves
                .iter()
                .map(|&i| {
                    RenderedFinding::on_render(
                        &input.findings[i],
                        input.root,
                        input.variant,
                        rendered,
                    )
                })
                .collect(),
            changes: BTreeMap::from([(path, FileChange::Edit(edits))]),
            // The template is shared by every values file: trusted one level less.
            applicability: f.applicability.min(Applicability::Unsafe),
            description: format!("{} in {shown}", f.description),
        });
    }
}

/// The line of `text` around `offset`: its range without the line break.
fn line_at(text: &str, offset: usize) -> TextRange {
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    TextRange::new(start, end)
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// `edit` on the rendered text as the same edit of `template`, when the rendered lines it
/// touches or follows are the template's own: a replacement inside one literal line, or an
/// insertion of whole lines after (else before) a line the template prints.
fn transplant(template: &str, rendered: &str, edit: &Edit) -> Option<Edit> {
    let (a, b) = (edit.range.start(), edit.range.end());
    let line = line_at(rendered, a);
    if a != b || a != line.start() {
        // Inside one line, which the template must hold literally.
        if b > line.end() {
            return None;
        }
        let at = super::template_line(template, rendered, a)?;
        let shown = line.slice(rendered).trim_start();
        if template[at.start()..at.end()].contains("{{") || !shown.starts_with(at.slice(template)) {
            return None;
        }
        let column = line.start() + indent_of(line.slice(rendered));
        return Some(Edit::replacement(
            TextRange::new(at.start() + (a - column), at.start() + (b - column)),
            edit.content.clone(),
        ));
    }
    // Whole lines inserted at a line start: after the line before, else before this one.
    let shift = |rendered_line: TextRange, template_at: TextRange| -> isize {
        let t = line_at(template, template_at.start());
        indent_of(t.slice(template)) as isize - indent_of(rendered_line.slice(rendered)) as isize
    };
    let placed = (a > 0)
        .then(|| line_at(rendered, a - 1))
        .filter(|l| !l.slice(rendered).trim().is_empty())
        .and_then(|prev| {
            let at = super::template_line(
                template,
                rendered,
                prev.start() + indent_of(prev.slice(rendered)),
            )?;
            let end = line_at(template, at.start()).end();
            let after = if end < template.len() { end + 1 } else { end };
            Some((after, shift(prev, at), end == template.len()))
        })
        .or_else(|| {
            let here = line_at(rendered, a);
            let at = super::template_line(template, rendered, a + indent_of(here.slice(rendered)))?;
            Some((
                line_at(template, at.start()).start(),
                shift(here, at),
                false,
            ))
        });
    let (at, shift, at_end) = placed?;
    let mut content = String::new();
    if at_end {
        content.push('\n');
    }
    for l in edit.content.split_inclusive('\n') {
        let body = l.trim_end_matches(['\n', '\r']);
        if body.trim().is_empty() {
            content.push_str(l);
            continue;
        }
        if shift >= 0 {
            content.push_str(&" ".repeat(shift as usize));
            content.push_str(l);
        } else {
            let cut = (-shift) as usize;
            if indent_of(l) < cut {
                return None;
            }
            content.push_str(&l[cut..]);
        }
    }
    Some(Edit::insertion(at, content))
}

/// The values mapping at `path` from the top of the values file.
fn values_node(doc: &Document, path: &[String]) -> Option<NodeId> {
    let mut at = doc.resolve(doc.root()?)?;
    for k in path {
        at = doc.resolve(doc.get(at, k)?)?;
    }
    doc.is_mapping(at).then_some(at)
}

/// Whether `path` lies strictly inside `prefix`, at a segment boundary; the rest.
fn below<'p>(path: &'p str, prefix: &str) -> Option<&'p str> {
    if prefix.is_empty() {
        return Some(path);
    }
    path.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('.'))
        .filter(|rest| !rest.is_empty())
}

/// The rendered path a need writes at, and the action, for the values mapping that renders
/// there; `Nowhere("")` asks the caller for the message about the chart.
fn place(
    doc: &Document,
    need: &Need,
    landings: &[Landing],
    markers: &[super::sentinel::Marker],
    values: &Document,
) -> Placed {
    let Some(top) = doc.root() else {
        return Placed::Nowhere(String::new());
    };
    let text = |path: &[&str]| {
        doc.get_path(top, path)
            .and_then(|n| doc.str_value(n))
            .unwrap_or_default()
    };
    let (kind, name) = (text(&["kind"]), text(&["metadata", "name"]));
    let base = doc.path_of(need.base);
    let join = |rest: &[String]| {
        let mut p = base.clone();
        for k in rest {
            if !p.is_empty() {
                p.push('.');
            }
            p.push_str(k);
        }
        p
    };
    let (full, removes) = match &need.action {
        Action::Set(_) | Action::AddItem(_) => (join(&need.path), false),
        Action::RemoveEntry(e) => (doc.path_of(e.key), true),
        _ => return Placed::Nowhere(String::new()),
    };
    let landing = landings
        .iter()
        .filter(|l| l.kind == kind && l.name == name && below(&full, &l.field).is_some())
        .max_by_key(|l| l.field.len());
    let Some(landing) = landing else {
        return Placed::Nowhere(String::new());
    };
    let Some(rest) = below(&full, &landing.field) else {
        return Placed::Nowhere(String::new());
    };
    // A list in between is no values mapping a key can be set under.
    if rest.contains('[') {
        return Placed::Nowhere(String::new());
    }
    let path: Vec<String> = rest.split('.').map(str::to_string).collect();
    let Some(marker) = markers.get(landing.marker) else {
        return Placed::Nowhere(String::new());
    };
    let action = if removes {
        // The key to remove must be the values file's own: else a template writes it.
        let found = values_node(values, &marker.path).and_then(|mut at| {
            let (last, parents) = path.split_last()?;
            for k in parents {
                at = values.resolve(values.get(at, k)?)?;
            }
            values.entry(at, last)
        });
        match found {
            Some(e) => Action::RemoveEntry(e),
            None => return Placed::Nowhere(String::new()),
        }
    } else {
        need.action.clone()
    };
    Placed::Values {
        marker: landing.marker,
        path: if removes { Vec::new() } else { path },
        action,
    }
}

/// What the chart would need so that a need could be written in its values.
fn nowhere(input: &PlanInput, doc: &Document, need: &Need) -> String {
    let base = doc.path_of(need.base);
    let field = if need.path.is_empty() {
        base.clone()
    } else if base.is_empty() {
        need.path.join(".")
    } else {
        format!("{base}.{}", need.path.join("."))
    };
    let template = doc
        .root()
        .and_then(|r| {
            super::helm_source(
                input.root,
                &input.rendered.file().text,
                doc.node(r).range.start(),
            )
        })
        .map(|p| {
            p.strip_prefix(&format!("{}/", input.root.dir))
                .unwrap_or(&p)
                .to_string()
        })
        .unwrap_or_else(|| "its template".into());
    // Say it in the chart's terms: whose securityContext a values key would have to reach.
    let owner = field.find(".securityContext").map(|i| &field[..i]);
    match owner {
        Some(owner) => {
            let whose = if owner.ends_with(']') {
                match &input.findings[need.findings[0]].container {
                    Some(c) => format!("container \"{c}\""),
                    None => "container".into(),
                }
            } else {
                "pod".into()
            };
            format!(
                "the chart renders no values key into the {whose}'s securityContext ({owner}.securityContext); add one to {template}"
            )
        }
        None => format!(
            "the chart renders no values key into {field}, and {template} does not write it as literal YAML; set it there"
        ),
    }
}

fn describe(at: &[String], path: &[String], action: &Action) -> String {
    let full: Vec<&str> = at.iter().chain(path).map(String::as_str).collect();
    let full = full.join(".");
    match action {
        Action::Set(v) => format!("set {full}: {v}"),
        Action::AddItem(v) => format!("add {v} to {full}"),
        Action::RemoveEntry(_) => format!("remove {full}"),
        _ => format!("change {full}"),
    }
}

fn touches(edits: &[Edit], comments: &[TextRange]) -> bool {
    edits.iter().any(|e| {
        comments
            .iter()
            .any(|c| e.range.start() < c.end() && c.start() < e.range.end())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lint::{Linter, Settings};
    use crate::parsed::Parsed;
    use crate::provenance::fix::apply;
    use crate::provenance::{Sentinel, rendered_path, sentinel};
    use crate::roots::{Root, RootKind, Variant};
    use crate::source::SourceFile;

    fn root() -> (Root, Variant) {
        let variant = Variant {
            name: "values.yaml".into(),
            values_files: Vec::new(),
            inline_values: None,
            release: "r".into(),
            namespace: None,
        };
        let root = Root {
            kind: RootKind::Helm,
            dir: "chart".into(),
            file: "chart/Chart.yaml".into(),
            variants: vec![variant.clone()],
            loads: Default::default(),
            patches: Vec::new(),
            blocked: Vec::new(),
            problems: Vec::new(),
        };
        (root, variant)
    }

    const RENDERED: &str = "---\n# Source: chart/templates/deployment.yaml\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: r-chart\nspec:\n  selector:\n    matchLabels: {app: x}\n  template:\n    metadata:\n      labels: {app: x}\n    spec:\n      containers:\n        - name: app\n          image: nginx:1.27\n          securityContext:\n            {}\n";

    /// The sentinel render of RENDERED's chart: `securityContext` (marker 0) printed into the
    /// container's securityContext.
    fn sentinel_of(values: &str) -> Sentinel {
        let values = SourceFile::new("chart/values.yaml", values);
        let (_, markers) = sentinel::sentinel_values(&values).unwrap();
        let landed = RENDERED.replace(
            "            {}\n",
            "            kubeharden-sentinel-0: \"\"\n",
        );
        Sentinel {
            landings: sentinel::landings(&landed),
            values,
            markers,
        }
    }

    fn proposals(values: &str, min: Applicability) -> (Proposals, String) {
        let (root, variant) = root();
        let registry = crate::rules::Registry::builtin().unwrap();
        let linter = Linter::new(&registry, Settings::default());
        let parsed = Parsed::new(
            SourceFile::new(rendered_path(&root, &variant), RENDERED),
            &linter.settings.limits,
        );
        let findings = linter
            .lint_parsed_files(std::slice::from_ref(&parsed))
            .findings;
        let sentinel = sentinel_of(values);
        let read = |_: &str| None;
        let input = PlanInput {
            root: &root,
            variant: &variant,
            rendered: &parsed,
            findings: &findings,
            sentinel: Some(&sentinel),
            read: &read,
            min,
            kinds: linter.workload_kinds(),
        };
        let p = plan(&input);
        let fixes: Vec<&SourceFix> = p.fixes.iter().collect();
        let read = |path: &str| (path == "chart/values.yaml").then(|| values.to_string());
        let out = apply(&fixes, &read).unwrap();
        let text = out.get("chart/values.yaml").cloned().unwrap_or_default();
        (p, text)
    }

    #[test]
    fn an_empty_security_context_in_values_is_filled_in_and_comments_stay() {
        let values = "replicaCount: 1\n# hardening goes here\nsecurityContext: {} # container\npodSecurityContext: {}\n";
        let (p, text) = proposals(values, Applicability::Safe);
        assert_eq!(p.fixes.len(), 1, "{p:?}");
        assert!(
            text.starts_with("replicaCount: 1\n# hardening goes here\nsecurityContext: {"),
            "{text}"
        );
        assert!(text.contains("allowPrivilegeEscalation: false"), "{text}");
        assert!(
            text.contains("# container\npodSecurityContext: {}\n"),
            "{text}"
        );
        assert!(
            p.fixes[0]
                .resolves
                .iter()
                .any(|f| f.rule == "privilege-escalation-allowed"),
            "{:?}",
            p.fixes[0].resolves
        );
    }

    #[test]
    fn a_pod_level_need_without_a_values_key_goes_to_the_containers_key() {
        let values = "securityContext: {}\n";
        let (p, text) = proposals(values, Applicability::Unsafe);
        // runAsNonRoot and the seccomp profile are hoisted to the pod by the plain fixer; no
        // values key lands there, so they are written where the container's comes from.
        assert!(text.contains("runAsNonRoot: true"), "{text}");
        assert!(text.contains("type: RuntimeDefault"), "{text}");
        let resolved: Vec<&str> = p
            .fixes
            .iter()
            .flat_map(|f| &f.resolves)
            .map(|f| f.rule.as_str())
            .collect();
        for rule in ["run-as-root-allowed", "seccomp-profile-missing"] {
            assert!(resolved.contains(&rule), "{resolved:?}");
        }
        assert!(
            p.none
                .iter()
                .all(|n| !n.message.contains("pod's securityContext")),
            "{:?}",
            p.none
        );
    }
}
