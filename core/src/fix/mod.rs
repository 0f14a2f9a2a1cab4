//! Fixes as minimal text edits, modelled on ruff: an [`Edit`] replaces one range, a [`Fix`] is a
//! sorted set of edits with an [`Applicability`]. Every byte outside an edit stays as it was.

mod image;
pub(crate) mod need;
mod overlay;
mod plan;
pub(crate) mod policy;
mod spell;
pub mod suggest;
pub(crate) mod write;

use std::collections::BTreeSet;

pub(crate) use plan::needs;
pub use plan::{Plan, plan};
pub(crate) use policy::KEY_ORDER;
pub use policy::{Refusal, Why};

use crate::constraints;
use crate::lint::{Finding, Linter, Report};
use crate::parsed::Parsed;
use crate::rules::Applicability;
use crate::source::{SourceFile, TextRange};

/// Replace `range` with `content` (an insertion when the range is empty).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Edit {
    pub range: TextRange,
    pub content: String,
}

impl Edit {
    pub fn insertion(at: usize, content: impl Into<String>) -> Self {
        Self {
            range: TextRange::empty(at),
            content: content.into(),
        }
    }

    pub fn replacement(range: TextRange, content: impl Into<String>) -> Self {
        Self {
            range,
            content: content.into(),
        }
    }

    pub fn deletion(range: TextRange) -> Self {
        Self {
            range,
            content: String::new(),
        }
    }
}

/// Edits that belong together, applied all or nothing.
#[derive(Debug, Clone)]
pub struct Fix {
    edits: Vec<Edit>,
    pub applicability: Applicability,
    /// What the fix does, for people: "set allowPrivilegeEscalation: false".
    pub description: String,
    /// Rules whose findings the fix resolves.
    pub rules: BTreeSet<String>,
    /// Said when the fix changes more than the finding's own object (an anchor's users).
    pub note: Option<String>,
    /// Indices of the findings (as passed to the planner) the fix resolves.
    pub findings: Vec<usize>,
}

impl Fix {
    pub fn new(mut edits: Vec<Edit>, applicability: Applicability, description: String) -> Self {
        edits.sort();
        Self {
            edits,
            applicability,
            description,
            rules: BTreeSet::new(),
            note: None,
            findings: Vec::new(),
        }
    }

    pub fn edits(&self) -> &[Edit] {
        &self.edits
    }

    fn start(&self) -> usize {
        self.edits.first().map_or(0, |e| e.range.start())
    }

    /// A fix that would touch a comment is trusted one level less: the comment may carry
    /// meaning the fix cannot see.
    pub fn downgrade_if_touching(&mut self, comments: &[TextRange]) {
        let touches = self.edits.iter().any(|e| {
            comments
                .iter()
                .any(|c| e.range.start() < c.end() && c.start() < e.range.end())
        });
        if touches {
            self.applicability = match self.applicability {
                Applicability::Safe => Applicability::Unsafe,
                _ => Applicability::DisplayOnly,
            };
        }
    }
}

/// Apply fixes at or above `min` in one pass; a fix overlapping one already applied is skipped
/// whole (it will be planned again on the next pass). Returns the new text and the fixes applied.
pub fn apply(text: &str, fixes: &[Fix], min: Applicability) -> (String, Vec<usize>) {
    let mut order: Vec<usize> = (0..fixes.len())
        .filter(|&i| fixes[i].applicability >= min && !fixes[i].edits.is_empty())
        .collect();
    order.sort_by_key(|&i| (fixes[i].start(), i));
    let mut applied = Vec::new();
    let mut claimed: Vec<TextRange> = Vec::new();
    for i in order {
        let fix = &fixes[i];
        // A fix whose own edits overlap is a planner bug; skipping it keeps the text intact.
        let self_overlap = fix
            .edits
            .windows(2)
            .any(|w| w[1].range.start() < w[0].range.end());
        debug_assert!(!self_overlap, "fix with overlapping edits: {fix:?}");
        let overlaps = self_overlap
            || fix.edits.iter().any(|e| {
                claimed.iter().any(|c| {
                    e.range.start() < c.end() && c.start() < e.range.end()
                        || e.range.is_empty()
                            && c.start() < e.range.start()
                            && e.range.start() < c.end()
                        || c.is_empty() && e.range.start() < c.start() && c.start() < e.range.end()
                })
            });
        if overlaps {
            continue;
        }
        claimed.extend(fix.edits.iter().map(|e| e.range));
        applied.push(i);
    }
    // Blocks inserted at the same place nest: the deeper one belongs to the inner node (a
    // container's new `securityContext` goes before the pod's, both at the end of the pod
    // spec), so at one offset deeper insertions come first.
    let mut edits: Vec<&Edit> = applied
        .iter()
        .flat_map(|&i| fixes[i].edits.iter())
        .collect();
    edits.sort_by_key(|e| {
        (
            e.range.start(),
            !e.range.is_empty(),
            std::cmp::Reverse(depth(&e.content)),
        )
    });
    let mut out = String::with_capacity(text.len() + 256);
    let mut last = 0;
    for e in edits {
        out.push_str(&text[last..e.range.start()]);
        out.push_str(&e.content);
        last = e.range.end();
    }
    out.push_str(&text[last..]);
    (out, applied)
}

/// Indentation of the lines an edit inserts.
fn depth(content: &str) -> usize {
    let content = content.trim_start_matches(['\r', '\n']);
    content.len() - content.trim_start_matches(' ').len()
}

/// The outcome of fixing one file.
#[derive(Debug)]
pub struct FixResult {
    pub fixed: String,
    /// Findings of the original text that the fixes resolved.
    pub fixed_findings: Vec<Finding>,
    /// Findings, of any pass, that an applied fix set out to resolve.
    pub claimed: Vec<Finding>,
    /// What people should know about the applied fixes (anchors whose users all change).
    pub notes: Vec<String>,
    /// Findings whose fix was left out because Kubernetes would refuse the result, each with
    /// the reason (also among `notes`).
    pub refused: Vec<(Finding, String)>,
    /// Rules whose unsafe fixes were applied.
    pub unsafe_rules: BTreeSet<String>,
    /// Where in the original text the first pass edited for each finding it resolved, so a
    /// suggestion can name the findings it really fixes (a container's `runAsNonRoot` may be
    /// fixed in the pod's `securityContext`).
    pub origins: Vec<(TextRange, Finding)>,
    /// What each container's image allows, as the original text was linted (empty unless
    /// images were inspected).
    pub images: Vec<crate::decision::ContainerImage>,
    /// Findings left in the fixed text.
    pub remaining: Report,
    pub passes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum FixError {
    #[error("{path}: fixes did not converge after {passes} passes (a bug: please report it)")]
    NoConvergence { path: String, passes: usize },
    #[error("{path}: the fixed text does not parse: {message} (a bug: please report it)")]
    BrokeSyntax { path: String, message: String },
    #[error(
        "{path}: the byte 0x{byte:02X} at byte {offset} is not UTF-8; the file was left unchanged"
    )]
    NotUtf8 {
        path: String,
        offset: usize,
        byte: u8,
    },
}

/// The most passes a file gets: each pass may unlock fixes an earlier one blocked (such as
/// `allowPrivilegeEscalation: false` once `privileged` is gone).
pub const MAX_PASSES: usize = 8;

/// Fix one file: plan, apply, re-lint, until nothing changes.
pub fn fix_file(
    linter: &Linter<'_>,
    file: &SourceFile,
    min: Applicability,
) -> Result<FixResult, FixError> {
    fix_parsed(
        linter,
        &Parsed::new(file.clone(), &linter.settings.limits),
        min,
    )
}

/// [`fix_file`] on a file parsed already: every text, the original and each pass's result,
/// is parsed exactly once, and that one parse serves the linter, the planner and the syntax
/// check alike.
pub fn fix_parsed(
    linter: &Linter<'_>,
    parsed: &Parsed,
    min: Applicability,
) -> Result<FixResult, FixError> {
    let file = parsed.file();
    // The text of bytes that are not UTF-8 is not the file: writing it back would lose them.
    if let Some(bad) = &file.not_utf8 {
        return Err(FixError::NotUtf8 {
            path: file.path.clone(),
            offset: bad.offset,
            byte: bad.byte,
        });
    }
    let mut report = linter.lint_parsed_files(std::slice::from_ref(parsed));
    let first_findings = report.findings.clone();
    let images = report.containers.clone();
    // The first pass reads the caller's parse; later ones own theirs.
    let mut owned: Option<Parsed> = None;
    let mut claimed = Vec::new();
    let mut notes = Vec::new();
    let mut unsafe_rules = BTreeSet::new();
    let mut origins = Vec::new();
    let mut refused: Vec<(Finding, String)> = Vec::new();
    for pass in 1..=MAX_PASSES {
        let current = owned.as_ref().unwrap_or(parsed);
        let Plan {
            mut fixes,
            refusals,
        } = plan(current, &report.findings, min, linter.workload_kinds());
        for r in refusals {
            let reason = r.reason(min);
            for &f in &r.findings {
                let finding = &report.findings[f];
                if refused
                    .iter()
                    .any(|(g, why)| same_finding(g, finding) && *why == reason)
                {
                    continue;
                }
                let note = format!("{}: [{}] {reason}", object_of(finding), finding.rule);
                if !notes.contains(&note) {
                    notes.push(note);
                }
                refused.push((finding.clone(), reason.clone()));
            }
        }
        let (text, applied, next) =
            apply_within_constraints(linter, current, &mut fixes, min, &mut notes);
        for &i in &applied {
            let fix = &fixes[i];
            notes.extend(fix.note.clone().filter(|n| !notes.contains(n)));
            for &f in &fix.findings {
                let finding = &report.findings[f];
                if pass == 1 {
                    origins.extend(fix.edits.iter().map(|e| (e.range, finding.clone())));
                }
                if finding.applicability < Some(Applicability::Safe) {
                    unsafe_rules.insert(finding.rule.clone());
                }
                claimed.push(finding.clone());
            }
        }
        if applied.is_empty() || text == current.file().text {
            let fixed_findings = first_findings
                .iter()
                .filter(|f| !report.findings.iter().any(|r| same_finding(f, r)))
                .cloned()
                .collect();
            return Ok(FixResult {
                fixed: current.file().text.clone(),
                fixed_findings,
                claimed,
                notes,
                unsafe_rules,
                origins,
                refused,
                images,
                remaining: report,
                passes: pass - 1,
            });
        }
        let Some(next) = next else {
            unreachable!("a changed text is parsed by apply_within_constraints")
        };
        // A fix may not add a syntax error the text did not have.
        let new_error = syntax_errors(&next)
            .find(|e| !syntax_errors(current).any(|old| old.message == e.message));
        if let Some(e) = new_error {
            let next_file = next.file();
            let at = next_file.line_col(e.range.start());
            return Err(FixError::BrokeSyntax {
                path: file.path.clone(),
                message: format!(
                    "{} at line {} of the fixed text: {:?}",
                    e.message,
                    at.line,
                    next_file
                        .lines
                        .line_range(at.line - 1, &next_file.text)
                        .slice(&next_file.text)
                ),
            });
        }
        report = linter.lint_parsed_files(std::slice::from_ref(&next));
        owned = Some(next);
    }
    Err(FixError::NoConvergence {
        path: file.path.clone(),
        passes: MAX_PASSES,
    })
}

/// How a note names the object a finding is about.
fn object_of(f: &Finding) -> String {
    f.object
        .as_ref()
        .map_or_else(|| format!("document {}", f.document + 1), |o| o.to_string())
}

/// The post-check, in one place for every rule's fixes: apply the fixes, and if the result
/// has a combination Kubernetes refuses that the text did not have, withhold every fix in
/// the objects concerned and apply again. The planner already leaves such needs out
/// (`policy::enforce`), so this only fires on a planner bug; it keeps the promise anyway.
/// Returns the text, the fixes applied, and the text's parse when it changed.
fn apply_within_constraints(
    linter: &Linter<'_>,
    current: &Parsed,
    fixes: &mut [Fix],
    min: Applicability,
    notes: &mut Vec<String>,
) -> (String, Vec<usize>, Option<Parsed>) {
    let file = current.file();
    let found = |p: &Parsed| -> Vec<(usize, constraints::Found)> {
        p.stream()
            .documents
            .iter()
            .enumerate()
            .flat_map(|(d, doc)| {
                constraints::found_in(doc, linter.workload_kinds())
                    .into_iter()
                    .map(move |f| (d, f))
            })
            .collect()
    };
    let before = found(current);
    let same = |a: &(usize, constraints::Found), b: &(usize, constraints::Found)| {
        a.0 == b.0
            && a.1.constraint == b.1.constraint
            && a.1.object == b.1.object
            && a.1.container == b.1.container
    };
    loop {
        let (text, applied) = apply(&file.text, fixes, min);
        if applied.is_empty() || text == file.text {
            return (text, applied, None);
        }
        let next = Parsed::new(
            SourceFile::new(file.path.clone(), text.clone()),
            &linter.settings.limits,
        );
        let new: Vec<_> = found(&next)
            .into_iter()
            .filter(|f| !before.iter().any(|b| same(b, f)))
            .collect();
        if new.is_empty() {
            return (text, applied, Some(next));
        }
        let mut withheld = false;
        for (d, f) in &new {
            let Some(doc) = current.stream().documents.get(*d) else {
                continue;
            };
            let ranges: Vec<TextRange> = constraints::workloads(doc, linter.workload_kinds())
                .iter()
                .filter(|(w, _)| constraints::object_key(w) == f.object)
                .map(|(w, _)| doc.node(w.object.node).range)
                .collect();
            for &i in &applied {
                let inside = fixes[i].edits.iter().any(|e| {
                    ranges
                        .iter()
                        .any(|r| r.start() <= e.range.start() && e.range.end() <= r.end())
                });
                if inside {
                    fixes[i].edits.clear();
                    withheld = true;
                }
            }
            let (who, says) = constraints::CONSTRAINTS
                .iter()
                .find(|c| c.id == f.constraint)
                .map_or(("Kubernetes refuses", f.constraint), |c| {
                    (c.enforcer.name(), c.says)
                });
            let note = format!(
                "fixes of {} withheld: {who} the result: \"{says}\" (a bug: please report it)",
                f.object
            );
            if !notes.contains(&note) {
                notes.push(note);
            }
        }
        if !withheld {
            // Nothing of ours is inside: leave the text as it was rather than loop.
            return (file.text.clone(), Vec::new(), None);
        }
    }
}

fn syntax_errors(parsed: &Parsed) -> impl Iterator<Item = &crate::yaml::YamlError> {
    parsed
        .stream()
        .errors
        .iter()
        .filter(|e| e.kind == crate::yaml::YamlErrorKind::Syntax)
}

/// Findings are the same across texts when rule, object, pod, container and message agree
/// (their positions move as lines are inserted). The pod tells apart two worker groups whose
/// containers share a name.
pub fn same_finding(a: &Finding, b: &Finding) -> bool {
    a.rule == b.rule
        && a.object == b.object
        && a.pod == b.pod
        && a.container == b.container
        && a.message == b.message
        && a.document == b.document
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix(edits: Vec<Edit>, applicability: Applicability) -> Fix {
        Fix::new(edits, applicability, String::new())
    }

    #[test]
    fn overlapping_fixes_are_skipped_whole() {
        let text = "abcdef";
        let fixes = vec![
            fix(
                vec![Edit::replacement(TextRange::new(1, 3), "X")],
                Applicability::Safe,
            ),
            fix(
                vec![
                    Edit::insertion(0, "<"),
                    Edit::replacement(TextRange::new(2, 4), "Y"),
                ],
                Applicability::Safe,
            ),
            fix(
                vec![Edit::deletion(TextRange::new(5, 6))],
                Applicability::Safe,
            ),
        ];
        let (out, applied) = apply(text, &fixes, Applicability::Safe);
        // The second fix starts first, so it wins; the first overlaps it and waits.
        assert_eq!(out, "<abYe");
        assert_eq!(applied, [1, 2]);
    }

    #[test]
    fn applicability_filters() {
        let fixes = vec![
            fix(vec![Edit::insertion(0, "s")], Applicability::Safe),
            fix(vec![Edit::insertion(1, "u")], Applicability::Unsafe),
            fix(vec![Edit::insertion(2, "d")], Applicability::DisplayOnly),
        ];
        assert_eq!(apply("ab", &fixes, Applicability::Safe).0, "sab");
        assert_eq!(apply("ab", &fixes, Applicability::Unsafe).0, "saub");
    }

    #[test]
    fn touching_a_comment_downgrades() {
        let mut f = fix(
            vec![Edit::deletion(TextRange::new(0, 10))],
            Applicability::Safe,
        );
        f.downgrade_if_touching(&[TextRange::new(5, 8)]);
        assert_eq!(f.applicability, Applicability::Unsafe);
        let mut f = fix(vec![Edit::insertion(3, "x")], Applicability::Safe);
        f.downgrade_if_touching(&[TextRange::new(5, 8)]);
        assert_eq!(f.applicability, Applicability::Safe);
    }

    #[test]
    fn the_post_check_withholds_a_fix_kubernetes_would_refuse() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n    - name: a\n      securityContext:\n        privileged: true\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: q\nspec:\n  hostPID: true\n";
        let registry = crate::rules::Registry::builtin().unwrap();
        let linter = Linter::new(&registry, crate::lint::Settings::default());
        let parsed = Parsed::new(SourceFile::new("p.yaml", text), &linter.settings.limits);
        // As a planner bug would write it: allowPrivilegeEscalation: false beside privileged.
        let at = text.find("        privileged").unwrap();
        let host_pid = text.find("  hostPID: true\n").unwrap();
        let mut fixes = vec![
            fix(
                vec![Edit::insertion(
                    at,
                    "        allowPrivilegeEscalation: false\n",
                )],
                Applicability::Safe,
            ),
            fix(
                vec![Edit::deletion(TextRange::new(host_pid, text.len()))],
                Applicability::Safe,
            ),
        ];
        let mut notes = Vec::new();
        let (fixed, applied, next) = apply_within_constraints(
            &linter,
            &parsed,
            &mut fixes,
            Applicability::Safe,
            &mut notes,
        );
        // The other object's fix stays; the refused one is withheld, with a note.
        assert_eq!(applied, [1]);
        assert_eq!(fixed, &text[..host_pid]);
        assert!(next.is_some());
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("fixes of Pod/p withheld"), "{notes:?}");
    }
}
