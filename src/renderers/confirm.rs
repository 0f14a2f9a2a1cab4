//! Source fixes for a group of rendered root variants that share files, confirmed by
//! rendering again: the planner of each root's tool proposes fixes on repository files; they
//! are applied to a scratch copy, every render they reach is rendered with the same tools and
//! options and linted, and a fix is kept only if `provenance::fix::confirm` accepts each of
//! those second renders. The repository is never touched.

use std::collections::BTreeMap;
use std::path::Path;

use kubeharden_core::fix::fix_parsed;
use kubeharden_core::lint::Finding;
use kubeharden_core::lint::Linter;
use kubeharden_core::parsed::Parsed;
use kubeharden_core::provenance::fix::{
    self as source, Hardening, NoSourceFix, PlanInput, Proposals, RenderedFinding, SourceFix,
};
use kubeharden_core::provenance::{self, helm_fix, kustomize_fix};
use kubeharden_core::roots::{Root, RootKind};
use kubeharden_core::rules::Applicability;
use kubeharden_core::source::SourceFile;

use super::{Options, Output, Tools, read_inside, render_with};

/// What came of one group's proposals.
#[derive(Debug, Default)]
pub struct Confirmed {
    /// Fixes the second renders confirmed, together.
    pub fixes: Vec<SourceFix>,
    /// Proposals the second renders refused, and why.
    pub dropped: Vec<(SourceFix, String)>,
    /// Findings no fix was proposed for, and what the chart or overlay would need.
    pub none: Vec<NoSourceFix>,
    /// Renders run to confirm.
    pub renders: usize,
}

/// One rendered root variant: `root`'s variant `variant`, whose first render is `first`.
#[derive(Clone, Copy)]
pub struct Rendered<'a> {
    pub root: &'a Root,
    pub variant: usize,
    pub first: &'a Output,
}

/// One render of a group, parsed and linted, with what its fixes may change.
struct Prepared<'a> {
    at: Rendered<'a>,
    parsed: Parsed,
    findings: Vec<Finding>,
}

/// Propose and confirm source fixes for a group of renders that share repository files
/// ([`kubeharden_core::roots::groups`]); `repo` is the directory the roots' paths are relative
/// to. A fix is kept only if every render of the group that reads a file it changes renders
/// again with the fix's findings gone and nothing but hardening fields changed: what is kept
/// is confirmed together, as it will be written, in every render it reaches.
#[allow(clippy::too_many_arguments)]
pub fn source_fixes(
    repo: &Path,
    group: &[Rendered],
    linter: &Linter,
    min: Applicability,
    tools: &Tools,
    options: &Options,
) -> Confirmed {
    let read = |rel: &str| read_inside(repo, rel);
    let prepared: Vec<Prepared> = group
        .iter()
        .map(|&at| {
            let v = &at.root.variants[at.variant];
            let parsed = Parsed::new(
                SourceFile::new(provenance::rendered_path(at.root, v), at.first.text.clone()),
                &linter.settings.limits,
            );
            let findings = linter
                .lint_parsed_files(std::slice::from_ref(&parsed))
                .findings;
            Prepared {
                at,
                parsed,
                findings,
            }
        })
        .collect();
    let mut proposed = Proposals::default();
    // Each chart variant is planned on its own; the Kustomize renders all at once, so that a
    // base several overlays render gets one edit for the findings of all of them.
    let mut placed = Vec::new();
    let mut kustomize = Vec::new();
    for p in &prepared {
        let v = &p.at.root.variants[p.at.variant];
        match p.at.root.kind {
            RootKind::Helm => {
                let input = PlanInput {
                    root: p.at.root,
                    variant: v,
                    rendered: &p.parsed,
                    findings: &p.findings,
                    sentinel: p.at.first.sentinel.as_ref(),
                    read: &read,
                    min,
                    kinds: linter.workload_kinds(),
                };
                let Proposals { fixes, none } = helm_fix::plan(&input);
                proposed.fixes.extend(fixes);
                proposed.none.extend(none);
            }
            RootKind::Kustomize => {
                // The Kustomize planner reads findings as placed, at their origin or patch.
                let mut f = p.findings.clone();
                provenance::place(&mut f, p.at.root, v, p.parsed.file(), None, &read);
                placed.extend(f);
                kustomize.push(kustomize_fix::Render {
                    root: p.at.root,
                    variant: v,
                    output: p.parsed.file(),
                });
            }
        }
    }
    if !kustomize.is_empty() {
        let p = kustomize_fix::plan(linter, &kustomize, &placed, min, &read);
        proposed.fixes.extend(p.fixes);
        proposed.none.extend(p.none);
    }
    let mut out = Confirmed {
        none: proposed.none,
        ..Confirmed::default()
    };
    // Two variants that propose the same edit propose one fix, resolving the findings of both.
    let mut fixes: Vec<SourceFix> = Vec::new();
    for f in proposed.fixes {
        match fixes.iter_mut().find(|g| g.changes == f.changes) {
            Some(g) => {
                g.resolves.extend(f.resolves);
                g.applicability = g.applicability.min(f.applicability);
            }
            None => fixes.push(f),
        }
    }
    // A fix the planner had to trust less (it touches a comment) waits for --unsafe-fixes.
    let (fixes, below): (Vec<SourceFix>, Vec<SourceFix>) =
        fixes.into_iter().partition(|f| f.applicability >= min);
    out.dropped.extend(below.into_iter().map(|f| {
        let why = format!(
            "it is {:?}: it is applied with --unsafe-fixes",
            f.applicability
        );
        (f, why.to_lowercase())
    }));
    if fixes.is_empty() {
        return out;
    }
    // The fields a fix may change in a render: what the plain fixer changes on its first
    // render. Learnt only for the renders a fix reaches.
    let mut hardening: BTreeMap<usize, Result<Hardening, String>> = BTreeMap::new();
    let mut check = |set: &[&SourceFix]| -> Result<(), String> {
        let files = source::apply(set, &read).map_err(|e| e.to_string())?;
        let mut rendered: Vec<(&str, &str)> = Vec::new();
        for (i, p) in prepared.iter().enumerate() {
            let root = p.at.root;
            // A new overlay patch comes with its kustomization's new entry, which it reads.
            if !files.keys().any(|f| root.loads.contains(f)) {
                continue;
            }
            let v = &root.variants[p.at.variant];
            rendered.push((root.name(), &v.name));
            let at = format!("{} ({})", root.name(), v.name);
            let h = hardening.entry(i).or_insert_with(|| {
                fix_parsed(linter, &p.parsed, min)
                    .map_err(|e| e.to_string())
                    .and_then(|r| {
                        Hardening::learn(&p.at.first.text, &r.fixed).map_err(|e| e.to_string())
                    })
            });
            let h = h.as_ref().map_err(|why| {
                format!("{at}: the render's own fixes could not be computed: {why}")
            })?;
            out.renders += 1;
            let second = render_with(repo, root, p.at.variant, tools, options, &files, false);
            let (text, after) = match &second {
                Ok(o) => (
                    Ok(o.text.as_str()),
                    lint_keys(linter, root, p.at.variant, &o.text),
                ),
                Err(e) => (Err(e.as_str()), Vec::new()),
            };
            let resolves: Vec<RenderedFinding> = set
                .iter()
                .flat_map(|f| &f.resolves)
                .filter(|r| r.root == root.name() && r.variant == v.name)
                .cloned()
                .collect();
            source::confirm(&resolves, h, &p.at.first.text, text, &after)
                .map_err(|e| format!("{at}: {e}"))?;
        }
        // Never confirmed unseen: each finding a fix resolves was rendered again.
        match set
            .iter()
            .flat_map(|f| &f.resolves)
            .find(|r| !rendered.contains(&(r.root.as_str(), r.variant.as_str())))
        {
            Some(r) => Err(format!(
                "{} ({}) reads none of the files the fix changes",
                r.root, r.variant
            )),
            None => Ok(()),
        }
    };
    // Usually every proposal holds and one round of renders confirms them all; else they are
    // added one at a time, so that what is kept is confirmed as it will be written: together.
    let all: Vec<&SourceFix> = fixes.iter().collect();
    let together = check(&all);
    let mut kept: Vec<usize> = Vec::new();
    let mut refused: BTreeMap<usize, String> = BTreeMap::new();
    match together {
        Ok(()) => kept = (0..fixes.len()).collect(),
        Err(why) if fixes.len() == 1 => {
            refused.insert(0, why);
        }
        Err(_) => {
            for i in 0..fixes.len() {
                let set: Vec<&SourceFix> = kept.iter().chain([&i]).map(|&k| &fixes[k]).collect();
                match check(&set) {
                    Ok(()) => kept.push(i),
                    Err(why) => {
                        refused.insert(i, why);
                    }
                }
            }
        }
    }
    for (i, fix) in fixes.into_iter().enumerate() {
        match refused.remove(&i) {
            Some(why) => out.dropped.push((fix, why)),
            None if kept.contains(&i) => out.fixes.push(fix),
            None => {}
        }
    }
    out
}

/// The findings of a render, keyed as [`RenderedFinding`]s.
fn lint_keys(linter: &Linter, root: &Root, variant: usize, text: &str) -> Vec<RenderedFinding> {
    let v = &root.variants[variant];
    let parsed = Parsed::new(
        SourceFile::new(provenance::rendered_path(root, v), text.to_string()),
        &linter.settings.limits,
    );
    linter
        .lint_parsed_files(std::slice::from_ref(&parsed))
        .findings
        .iter()
        .map(|f| RenderedFinding::on_render(f, root, v, &parsed))
        .collect()
}
