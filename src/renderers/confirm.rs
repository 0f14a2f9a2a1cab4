//! Source fixes for one rendered root variant, confirmed by rendering again: the planner of
//! the root's tool proposes fixes on repository files; each is applied to a scratch copy,
//! rendered with the same tools and options, linted, and kept only if
//! `provenance::fix::confirm` accepts the second render. The repository is never touched.

use std::collections::BTreeMap;
use std::path::Path;

use kubeharden_core::fix::fix_parsed;
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

/// What came of one variant's proposals.
#[derive(Debug, Default)]
pub struct Confirmed {
    /// Fixes the second render confirmed, together.
    pub fixes: Vec<SourceFix>,
    /// Proposals the second render refused, and why.
    pub dropped: Vec<(SourceFix, String)>,
    /// Findings no fix was proposed for, and what the chart or overlay would need.
    pub none: Vec<NoSourceFix>,
    /// Renders run to confirm.
    pub renders: usize,
}

/// Propose and confirm source fixes for variant `variant` of `root`, whose first render is
/// `first`; `repo` is the directory the root's paths are relative to.
#[allow(clippy::too_many_arguments)]
pub fn source_fixes(
    repo: &Path,
    root: &Root,
    variant: usize,
    first: &Output,
    linter: &Linter,
    min: Applicability,
    tools: &Tools,
    options: &Options,
) -> Confirmed {
    let v = &root.variants[variant];
    let path = provenance::rendered_path(root, v);
    let parsed = Parsed::new(
        SourceFile::new(path, first.text.clone()),
        &linter.settings.limits,
    );
    let findings = linter
        .lint_parsed_files(std::slice::from_ref(&parsed))
        .findings;
    let read = |rel: &str| read_inside(repo, rel);
    let input = PlanInput {
        root,
        variant: v,
        rendered: &parsed,
        findings: &findings,
        sentinel: first.sentinel.as_ref(),
        read: &read,
        min,
        kinds: linter.workload_kinds(),
    };
    let Proposals { fixes, none } = match root.kind {
        RootKind::Helm => helm_fix::plan(&input),
        RootKind::Kustomize => {
            // The Kustomize planner reads findings as placed, at their origin or patch.
            let mut placed = findings.clone();
            provenance::place(&mut placed, root, v, parsed.file(), None, &read);
            let render = kustomize_fix::Render {
                root,
                variant: v,
                output: parsed.file(),
            };
            let p = kustomize_fix::plan(linter, &[render], &placed, min, &read);
            Proposals {
                fixes: p.fixes,
                none: p.none,
            }
        }
    };
    let mut out = Confirmed {
        none,
        ..Confirmed::default()
    };
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
    // The fields a fix may change: what the plain fixer changes on the first render.
    let hardening = fix_parsed(linter, &parsed, min)
        .map_err(|e| e.to_string())
        .and_then(|r| Hardening::learn(&first.text, &r.fixed).map_err(|e| e.to_string()));
    let hardening = match hardening {
        Ok(h) => h,
        Err(why) => {
            out.dropped.extend(fixes.into_iter().map(|f| {
                (
                    f,
                    format!("the render's own fixes could not be computed: {why}"),
                )
            }));
            return out;
        }
    };
    let mut check = |set: &[&SourceFix]| -> Result<(), String> {
        out.renders += 1;
        let files = source::apply(set, &read).map_err(|e| e.to_string())?;
        let second = render_with(repo, root, variant, tools, options, &files, false);
        let (text, after) = match &second {
            Ok(o) => (
                Ok(o.text.as_str()),
                lint_keys(linter, root, variant, &o.text),
            ),
            Err(e) => (Err(e.as_str()), Vec::new()),
        };
        let resolves: Vec<RenderedFinding> = set.iter().flat_map(|f| f.resolves.clone()).collect();
        source::confirm(&resolves, &hardening, &first.text, text, &after).map_err(|e| e.to_string())
    };
    // Usually every proposal holds and one render confirms them all; else they are added
    // one at a time, so that what is kept is confirmed as it will be written: together.
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
