//! The planner: rules say what they need ("this container's
//! `securityContext.allowPrivilegeEscalation` must be `false`"); the planner applies the
//! Kubernetes policy (`policy`), merges the needs of all findings per target node, and has the
//! writer (`write`) turn them into the smallest edits.

use std::collections::{BTreeMap, HashMap};

use crate::lint::Finding;
use crate::parsed::Parsed;
use crate::rules::eval::Target;
use crate::rules::{Applicability, FixAction};
use crate::workloads::WorkloadKinds;
use crate::yaml::{Document, NodeId};

use super::Fix;
use super::need::Need;
use super::policy::{KEY_ORDER, Refusal, drop_conflicts, enforce, hoist};
use super::write::{Action, Writer, anchor_note, detect_style};

/// The fixes for one file's findings, and the needs left out because Kubernetes would refuse
/// what they write.
#[derive(Debug)]
pub struct Plan {
    pub fixes: Vec<Fix>,
    pub refusals: Vec<Refusal>,
}

/// Plan fixes for the findings of one file; only needs at or above `min` are planned, so a
/// created block never carries an edit the caller did not ask for.
pub fn plan(
    parsed: &Parsed,
    findings: &[Finding],
    min: Applicability,
    kinds: &WorkloadKinds,
) -> Plan {
    let file = parsed.file();
    let stream = parsed.stream();
    let docs = &stream.documents;
    let style = detect_style(file, docs);
    let (needs, refusals) = needs(parsed, findings, min, kinds);

    let mut fixes = Vec::new();
    // One fix per base node: a container's needs become one coherent edit set.
    let mut by_base: BTreeMap<(usize, NodeId), Vec<Need>> = BTreeMap::new();
    for n in needs {
        by_base
            .entry((n.doc, n.group.unwrap_or(n.base)))
            .or_default()
            .push(n);
    }
    for ((doc_index, _), group) in by_base {
        let doc = &docs[doc_index];
        let mut writer = Writer::new(file, doc, style, KEY_ORDER);
        let mut described = Vec::new();
        for need in &group {
            if writer.apply(need.base, &need.path, &need.action) {
                described.push(describe(need));
            }
        }
        writer.flush_inserts();
        if writer.edits.is_empty() {
            continue;
        }
        let applicability = group
            .iter()
            .map(|n| n.applicability)
            .min()
            .unwrap_or(Applicability::DisplayOnly);
        let mut fix = Fix::new(
            std::mem::take(&mut writer.edits),
            applicability,
            described.join("; "),
        );
        fix.rules = group.iter().map(|n| n.rule.clone()).collect();
        fix.findings = group
            .iter()
            .flat_map(|n| n.findings.iter().copied())
            .collect();
        fix.note = anchor_note(doc, &writer.touched, &file.text);
        fix.downgrade_if_touching(&stream.comments);
        fixes.push(fix);
    }
    Plan { fixes, refusals }
}

/// What the findings of one file ask for, as the planner writes it: every rule's need after
/// the image's additions, hoisting to the pod, rebasing onto the node it changes, and the
/// Kubernetes policy (needs it refuses are returned as refusals). The render planners read
/// these to write the same values in a chart's values file or template.
pub(crate) fn needs(
    parsed: &Parsed,
    findings: &[Finding],
    min: Applicability,
    kinds: &WorkloadKinds,
) -> (Vec<Need>, Vec<Refusal>) {
    let file = parsed.file();
    let stream = parsed.stream();
    parsed.reset_budgets();
    let docs = &stream.documents;
    let mut needs: Vec<Need> = Vec::new();
    for (index, f) in findings
        .iter()
        .enumerate()
        .filter(|(_, f)| f.path == file.path)
    {
        let (Some(hit), Some(applicability)) = (&f.hit, f.applicability) else {
            continue;
        };
        if applicability < min || f.document >= docs.len() {
            continue;
        }
        // Node ids of another parse would name the wrong nodes.
        if hit.stamp != parsed.stamp() {
            debug_assert!(false, "a finding of another parse reached the planner");
            continue;
        }
        if let Some(need) = need_for(f.document, &hit.target, applicability, &f.rule, index) {
            needs.push(need);
        }
    }
    let cross = super::image::adjust(docs, &mut needs);
    // What the image added beside a fix is trusted no more than it says.
    needs.retain(|n| n.applicability >= min);
    hoist(docs, &mut needs);
    super::image::regroup(&mut needs, &cross);
    for n in &mut needs {
        rebase(&docs[n.doc], n);
    }
    dedup(&mut needs);
    let mut refusals = drop_conflicts(&mut needs);
    refusals.extend(enforce(docs, &mut needs, rebase, kinds));
    dedup(&mut needs);
    (needs, refusals)
}

fn need_for(
    doc_index: usize,
    t: &Target,
    applicability: Applicability,
    rule: &str,
    finding: usize,
) -> Option<Need> {
    let action = match t.action.as_ref()? {
        FixAction::Set(v) => Action::Set(v.clone()),
        FixAction::AddItem(item) => Action::AddItem(item.clone()),
        FixAction::RemoveKey => Action::RemoveEntry(t.entry?),
        FixAction::RemoveItems => Action::RemoveItem(t.item?),
        FixAction::PinDigest => Action::Append(t.value?, t.suffix.clone()?),
    };
    let fit = t.image_fit;
    Some(Need {
        doc: doc_index,
        base: t.base,
        pod: t.pod,
        path: t.path.iter().map(|p| strip_index(p)).collect(),
        action,
        applicability,
        rule: rule.to_string(),
        findings: vec![finding],
        from: Vec::new(),
        fit,
        image: t.image.clone(),
        no_hoist: false,
        group: None,
    })
}

/// `ports[2]` → `ports`: paths in targets carry the index of the item they went through.
fn strip_index(p: &str) -> String {
    p.split('[').next().unwrap_or(p).to_string()
}

/// Move a need's base to the deepest node its path already reaches, resolving aliases, so
/// that needs meet at the node they change, whichever container reached it: two containers
/// sharing one `securityContext` through an anchor need one edit there, not two.
fn rebase(doc: &Document, n: &mut Need) {
    let holder = |node: NodeId| doc.node(node).parent;
    match &n.action {
        Action::Set(_) | Action::AddItem(_) | Action::AddMap(_) => {}
        // Removals and appends name their node; what they change is the collection holding
        // it, which insertions into that collection must be written together with.
        Action::RemoveEntry(e) => {
            if let Some(map) = holder(e.key) {
                n.base = map;
            }
            return;
        }
        Action::RemoveItem(item) => {
            // The item's sequence may go with its key: the mapping holding the key owns it.
            if let Some(seq) = holder(*item) {
                n.base = holder(seq).filter(|&m| doc.is_mapping(m)).unwrap_or(seq);
            }
            return;
        }
        Action::Append(node, _) => {
            if let Some(parent) = holder(*node) {
                n.base = parent;
            }
            return;
        }
    }
    let Some(mut node) = doc.resolve(n.base) else {
        return;
    };
    let mut consumed = 0;
    while consumed < n.path.len() && doc.is_mapping(node) {
        let Some(e) = doc.entry(node, &n.path[consumed]) else {
            break;
        };
        if consumed + 1 == n.path.len() {
            // The key exists (perhaps in a mapping merged with `<<`): its mapping is changed.
            if let Some(map) = holder(e.key) {
                node = map;
            }
            break;
        }
        match doc.resolve(e.value) {
            Some(v) if doc.is_mapping(v) => {
                node = v;
                consumed += 1;
            }
            _ => break,
        }
    }
    n.base = node;
    n.path.drain(..consumed);
}

/// Several findings can need the same edit (every container hoisting `runAsNonRoot` to the
/// pod; two rules removing the same capability): keep one need that resolves them all, at the
/// lowest applicability among them.
fn dedup(needs: &mut Vec<Need>) {
    let mut first: HashMap<String, usize> = HashMap::new();
    let mut out: Vec<Need> = Vec::new();
    for n in needs.drain(..) {
        let key = match &n.action {
            Action::Set(v) => format!("{}:{}:{}=set{v}", n.doc, n.base, n.path.join(".")),
            Action::AddItem(v) => format!("{}:{}:{}+={v}", n.doc, n.base, n.path.join(".")),
            Action::RemoveEntry(e) => format!("{}:rm{}", n.doc, e.key),
            Action::RemoveItem(i) => format!("{}:rmi{i}", n.doc),
            Action::Append(node, text) => format!("{}:{node}+{text}", n.doc),
            Action::AddMap(fields) => format!(
                "{}:{}:{}+={}",
                n.doc,
                n.base,
                n.path.join("."),
                super::write::render_flow_map(fields)
            ),
        };
        match first.get(&key) {
            Some(&i) => {
                out[i].findings.extend(n.findings);
                out[i].from.extend(n.from);
                out[i].applicability = out[i].applicability.min(n.applicability);
            }
            None => {
                first.insert(key, out.len());
                out.push(n);
            }
        }
    }
    *needs = out;
}

fn describe(n: &Need) -> String {
    let path = n.path.join(".");
    match &n.action {
        Action::Set(v) => format!("set {path}: {v}"),
        Action::AddItem(v) => format!("add {v} to {path}"),
        Action::RemoveEntry(_) => format!("remove {path}"),
        Action::RemoveItem(_) => format!("remove an entry of {path}"),
        Action::Append(_, text) => format!("append {text} to {path}"),
        Action::AddMap(fields) => {
            format!("add {} to {path}", super::write::render_flow_map(fields))
        }
    }
}
