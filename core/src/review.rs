//! The review KubeHarden posts on a pull request, planned without any I/O: inline comments with
//! suggestions where GitHub accepts them (inside one hunk of the diff), annotations and a
//! summary for everything else. The GitHub App posts it; `kubeharden review` prints it.

use std::collections::BTreeMap;
use std::fmt::Write;

use sha2::{Digest, Sha256};

use crate::change::{Hunk, PrFile, parse_hunks};
use crate::fix::{fix_parsed, suggest};
use crate::lint::{Finding, Linter, Report};
use crate::markdown::{MAX_BODY, clip, code, escape};
use crate::parsed::Parsed;
use crate::rules::{Applicability, Registry, Severity};
use crate::source::one_line;

/// Inline comments per review, beyond which the rest are summarised.
pub const MAX_COMMENTS: usize = 50;
/// Rows of the findings table in a summary.
const MAX_TABLE_ROWS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InlineComment {
    pub path: String,
    /// First line of a multi-line comment (absent for one line).
    pub start_line: Option<usize>,
    pub line: usize,
    pub body: String,
    pub fingerprint: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AnnotationLevel {
    Notice,
    Warning,
    Failure,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Annotation {
    pub path: String,
    pub start_line: usize,
    pub end_line: usize,
    pub annotation_level: AnnotationLevel,
    pub title: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Conclusion {
    Success,
    Failure,
}

#[derive(Debug, Clone)]
pub struct ReviewPlan {
    /// The review body; empty when there is nothing to say (then no review is posted).
    pub body: String,
    pub comments: Vec<InlineComment>,
    pub annotations: Vec<Annotation>,
    pub conclusion: Conclusion,
    pub check_title: String,
    pub check_summary: String,
    pub check_text: String,
    pub findings: usize,
    /// Findings that a suggestion (posted or not) would fix.
    pub fixable: usize,
    /// Of those, the ones the app may commit (not under `.github/workflows/`)...
    pub committable: usize,
    /// ...and of these, the ones whose fix is safe (what the **Apply fixes** button commits).
    pub safe_fixable: usize,
    /// Findings by rule, for metrics.
    pub rule_counts: BTreeMap<String, usize>,
    /// Fingerprints of every comment the review would carry, before the 50-comment cap: a
    /// thread of ours whose fingerprint is not here is about something that is gone.
    pub fingerprints: Vec<String>,
}

/// Marker that identifies our own comments and what they are about across pushes.
pub const FINGERPRINT_PREFIX: &str = "<!-- kubeharden:fingerprint=";

pub fn fingerprint_of(body: &str) -> Option<&str> {
    let start = body.find(FINGERPRINT_PREFIX)? + FINGERPRINT_PREFIX.len();
    let end = body[start..].find(" -->")? + start;
    Some(&body[start..end])
}

/// What a comment is about, stable while line numbers move: the file, the object, the
/// containers and the rules.
fn fingerprint(path: &str, findings: &[&Finding]) -> String {
    let mut keys: Vec<String> = findings
        .iter()
        .map(|f| {
            let object = f.object.as_ref().map(|o| o.to_string()).unwrap_or_default();
            // The pod is part of what a comment is about only where an object runs several,
            // so fingerprints of single-pod objects stay those of earlier reviews.
            match &f.pod {
                Some(pod) => format!(
                    "{object}|{pod}|{}|{}",
                    f.container.as_deref().unwrap_or(""),
                    f.rule
                ),
                None => format!(
                    "{object}|{}|{}",
                    f.container.as_deref().unwrap_or(""),
                    f.rule
                ),
            }
        })
        .collect();
    keys.sort();
    keys.dedup();
    let mut hasher = Sha256::new();
    hasher.update(path.as_bytes());
    for k in keys {
        hasher.update(b"\n");
        hasher.update(k.as_bytes());
    }
    hex::encode(&hasher.finalize()[..8])
}

/// What rendering the charts and kustomizations a pull request reaches gave the review: the
/// findings of their output, already on repository lines, and what to say about each root.
#[derive(Debug, Clone, Default)]
pub struct RenderedChange {
    pub findings: Vec<Finding>,
    /// Files the renders read: linted through them, not on their own.
    pub consumed: std::collections::BTreeSet<String>,
    pub roots: Vec<RootLine>,
    /// The patch of every changed file (templates and values files too), for the hunks.
    pub patches: BTreeMap<String, String>,
    /// Rendered outputs linted, and the workloads in them.
    pub files: usize,
    pub workloads: usize,
    /// Why nothing was rendered, when so (a tree too large to list).
    pub note: Option<String>,
    /// One-click suggestions of the confirmed source fixes, on the files they edit.
    pub suggestions: Vec<crate::provenance::fix::SourceSuggestion>,
}

/// One variant of one root, for the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootLine {
    pub root: String,
    pub variant: String,
    /// `rendered`, or `render-failed`/`render-skipped` with the reason.
    pub status: String,
}

/// Plan the review of the changed files.
pub fn plan(linter: &Linter<'_>, files: &[PrFile]) -> ReviewPlan {
    plan_rendered(linter, files, &RenderedChange::default())
}

/// [`plan`] with what rendering gave: rendered findings inside the diff are inline comments,
/// all are annotations, and the summary lists each root and variant.
pub fn plan_rendered(
    linter: &Linter<'_>,
    files: &[PrFile],
    rendered: &RenderedChange,
) -> ReviewPlan {
    let files: Vec<PrFile> = files
        .iter()
        .filter(|f| !rendered.consumed.contains(&f.path))
        .cloned()
        .collect();
    let files = files.as_slice();
    let parsed: Vec<Parsed> = files
        .iter()
        .map(|f| Parsed::new(f.source(), &linter.settings.limits))
        .collect();
    let (mut report, file_linter) = linter.lint_change(&parsed);
    report.files += rendered.files;
    report.workloads += rendered.workloads;
    report.findings.extend(rendered.findings.iter().cloned());
    report.findings.sort_by(|a, b| {
        (&a.path, a.start, &a.rule, &a.message).cmp(&(&b.path, b.start, &b.rule, &b.message))
    });
    let linter = &file_linter;
    let mut comments = Vec::new();
    let mut fingerprints = Vec::new();
    // Findings whose fix was left out because Kubernetes would refuse it, with the reason:
    // their annotations say so, since they get no suggestion.
    let mut refused: Vec<(Finding, String)> = Vec::new();
    let mut fixable = 0;
    let mut safe_fixable = 0;
    let mut committable = 0;
    // Findings of renders that a suggestion fixes in the chart or overlay: committed from the
    // suggestions, not by the app's own commit, which writes plain files only.
    let mut rendered_fixable = 0;
    // The hunks of each file, read once: suggestions and image comments both need them.
    let hunks_of: BTreeMap<&str, Vec<Hunk>> = files
        .iter()
        .map(|f| {
            let hunks = f.patch.as_deref().map(parse_hunks).unwrap_or_default();
            (f.path.as_str(), hunks)
        })
        .collect();
    for (file, parsed) in files.iter().zip(&parsed) {
        let hunks = &hunks_of[file.path.as_str()];
        // A file that does not fix cleanly still gets its findings, just no suggestions.
        let Ok(result) = fix_parsed(linter, parsed, Applicability::Unsafe) else {
            continue;
        };
        refused.extend(result.refused.iter().cloned());
        if result.fixed == parsed.file().text {
            continue;
        }
        for r in suggest::with_findings(
            parsed,
            &result.fixed,
            &result.fixed_findings,
            &result.origins,
        ) {
            let findings: Vec<&Finding> = r
                .findings
                .iter()
                .map(|&i| &result.fixed_findings[i])
                .collect();
            if findings.is_empty() {
                continue;
            }
            fixable += findings.len();
            if crate::change::may_touch(&file.path) {
                committable += findings.len();
                safe_fixable += findings
                    .iter()
                    .filter(|f| f.applicability == Some(Applicability::Safe))
                    .count();
            }
            let s = &r.suggestion;
            let fingerprint = fingerprint(&file.path, &findings);
            fingerprints.push(fingerprint.clone());
            let inside = hunks
                .iter()
                .any(|h| h.start <= s.start_line && s.end_line <= h.end);
            if !inside {
                continue;
            }
            let images = image_lines(&result.images, &file.path, &findings);
            comments.push(InlineComment {
                path: file.path.clone(),
                start_line: (s.start_line < s.end_line).then_some(s.start_line),
                line: s.end_line,
                body: comment_body(
                    linter.registry,
                    &findings,
                    &s.markdown(),
                    &result.notes,
                    &images,
                    &fingerprint,
                ),
                fingerprint,
            });
        }
    }
    // Vulnerable images get a comment on their `image:` line when the diff shows it: what the
    // scanner found is worth a reviewer's eyes even though there is nothing to suggest.
    for f in report
        .findings
        .iter()
        .filter(|f| f.rule == "image-vulnerable")
    {
        let Some(hunks) = hunks_of.get(f.path.as_str()) else {
            continue;
        };
        let Some(image) = f.hit.as_ref().and_then(|h| h.subject.clone()) else {
            continue;
        };
        let fingerprint = fingerprint(&format!("{}|{image}", f.path), &[f]);
        fingerprints.push(fingerprint.clone());
        if !hunks
            .iter()
            .any(|h| h.start <= f.start.line && f.start.line <= h.end)
        {
            continue;
        }
        let report = match linter.facts.images.scans.get(&image) {
            Some(crate::vuln::ScanOutcome::Report(r)) => Some(r.clone()),
            _ => None,
        };
        comments.push(InlineComment {
            path: f.path.clone(),
            start_line: None,
            line: f.start.line,
            body: vulnerability_body(linter.registry, f, &image, report.as_deref(), &fingerprint),
            fingerprint,
        });
    }
    // A confirmed source fix inside the diff of the file it edits (a values file, a patch, a
    // template) is a suggestion there, with the rendered findings it resolves.
    let mut suggested = vec![false; rendered.findings.len()];
    for s in &rendered.suggestions {
        let (indices, findings): (Vec<usize>, Vec<&Finding>) = rendered
            .findings
            .iter()
            .enumerate()
            .filter(|(_, f)| {
                crate::provenance::fix::RenderedFinding::of(f)
                    .is_some_and(|k| s.resolves.contains(&k))
            })
            .unzip();
        if findings.is_empty() {
            continue;
        }
        fixable += findings.len();
        rendered_fixable += findings.len();
        let fingerprint = fingerprint(&s.path, &findings);
        fingerprints.push(fingerprint.clone());
        let (start, end) = (s.suggestion.start_line, s.suggestion.end_line);
        let inside = rendered.patches.get(&s.path).is_some_and(|p| {
            parse_hunks(p)
                .iter()
                .any(|h| h.start <= start && end <= h.end)
        });
        if !inside {
            continue;
        }
        for i in indices {
            suggested[i] = true;
        }
        let renders: std::collections::BTreeSet<String> = findings
            .iter()
            .filter_map(|f| f.render.as_ref())
            .map(|r| {
                format!(
                    "found in the render of {} ({}), and confirmed by rendering again with this change",
                    code(&r.root),
                    escape(&r.variant)
                )
            })
            .collect();
        let notes: Vec<String> = renders.into_iter().collect();
        comments.push(InlineComment {
            path: s.path.clone(),
            start_line: (start < end).then_some(start),
            line: end,
            body: comment_body(
                linter.registry,
                &findings,
                &s.suggestion.markdown(),
                &notes,
                &[],
                &fingerprint,
            ),
            fingerprint,
        });
    }
    // Any other rendered finding inside the diff of the file it is placed in is a comment on
    // that line.
    for (i, f) in rendered.findings.iter().enumerate() {
        if suggested[i] {
            continue;
        }
        let Some(patch) = rendered.patches.get(&f.path) else {
            continue;
        };
        let fingerprint = fingerprint(&f.path, &[f]);
        if fingerprints.contains(&fingerprint) {
            continue;
        }
        fingerprints.push(fingerprint.clone());
        if !parse_hunks(patch)
            .iter()
            .any(|h| h.start <= f.start.line && f.start.line <= h.end)
        {
            continue;
        }
        comments.push(InlineComment {
            path: f.path.clone(),
            start_line: None,
            line: f.start.line,
            body: rendered_body(linter.registry, f, &fingerprint),
            fingerprint,
        });
    }
    let threshold = linter.settings.fail_on;
    let conclusion = if report.failed(threshold) {
        Conclusion::Failure
    } else {
        Conclusion::Success
    };
    let annotations = report
        .findings
        .iter()
        .map(|f| {
            let mut a = annotation(f);
            for (_, why) in refused
                .iter()
                .filter(|(g, _)| crate::fix::same_finding(g, f))
            {
                let mut why = why.chars();
                let first = why.next().map(|c| c.to_ascii_uppercase());
                let _ = write!(
                    a.message,
                    "\n{}{}.",
                    first.map(String::from).unwrap_or_default(),
                    why.as_str()
                );
            }
            a
        })
        .collect();
    let total_comments = comments.len();
    comments.truncate(MAX_COMMENTS);
    let (check_title, mut check_summary) = summary(
        &report,
        fixable,
        committable,
        safe_fixable,
        rendered_fixable,
        threshold,
    );
    check_summary.push_str(&roots_summary(rendered));
    let mut body = String::new();
    if !report.findings.is_empty() {
        body = format!("## KubeHarden: {check_title}\n\n{check_summary}");
        if total_comments > MAX_COMMENTS {
            let _ = write!(
                body,
                "\n\n{} more suggestions are not shown inline (GitHub reviews carry at most {MAX_COMMENTS}); commit them all with the **Apply fixes** button, `/kubeharden fix`, or `kubeharden fix --write --unsafe-fixes` locally.",
                total_comments - MAX_COMMENTS
            );
        }
        body = clip(&body, MAX_BODY);
    }
    ReviewPlan {
        body,
        comments,
        annotations,
        conclusion,
        check_title,
        check_text: clip(&table(&report), MAX_BODY),
        check_summary: clip(&check_summary, MAX_BODY),
        findings: report.findings.len(),
        fixable,
        committable,
        safe_fixable,
        fingerprints,
        rule_counts: report.findings.iter().fold(BTreeMap::new(), |mut m, f| {
            *m.entry(f.rule.clone()).or_default() += 1;
            m
        }),
    }
}

fn annotation(f: &Finding) -> Annotation {
    let level = match f.severity {
        Severity::Error => AnnotationLevel::Failure,
        Severity::Warning => AnnotationLevel::Warning,
        Severity::Note => AnnotationLevel::Notice,
    };
    let mut message = f.message.clone();
    if let Some(subject) = f.subject() {
        let _ = write!(message, " ({subject})");
    }
    Annotation {
        path: f.path.clone(),
        start_line: f.start.line,
        end_line: f.end.line.max(f.start.line),
        annotation_level: level,
        title: format!("KubeHarden [{}]", f.rule),
        message,
    }
}

/// What was learned about the images of the containers a suggestion is about, one line each.
fn image_lines(
    images: &[crate::decision::ContainerImage],
    path: &str,
    findings: &[&Finding],
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for f in findings {
        let Some(object) = &f.object else { continue };
        for c in images.iter().filter(|c| {
            c.path == path
                && c.document == f.document
                && &c.object == object
                // A pod-level finding is about every container of its pod.
                && f.container.as_ref().is_none_or(|name| *name == c.container)
        }) {
            let line = c.decision.markdown();
            if !out.contains(&line) {
                out.push(line);
            }
        }
    }
    out
}

fn comment_body(
    registry: &Registry,
    findings: &[&Finding],
    suggestion: &str,
    notes: &[String],
    images: &[String],
    fingerprint: &str,
) -> String {
    let mut rules: BTreeMap<&str, Vec<&Finding>> = BTreeMap::new();
    for f in findings {
        rules.entry(f.rule.as_str()).or_default().push(f);
    }
    let mut body = String::new();
    let names: Vec<String> = rules
        .keys()
        .map(|id| match registry.get(id) {
            Some(r) => format!("[`{id}`]({})", r.docs_url()),
            None => format!("`{id}`"),
        })
        .collect();
    // One container when the change is about one; the object when it is about the pod (a
    // hoisted runAsNonRoot serves every container).
    let containers: std::collections::BTreeSet<Option<&str>> =
        findings.iter().map(|f| f.container.as_deref()).collect();
    let subject = match containers.into_iter().collect::<Vec<_>>().as_slice() {
        [Some(c)] => format!("container {}", code(c)),
        _ => findings
            .iter()
            .find_map(|f| f.object.as_ref().map(|o| code(&o.to_string())))
            .unwrap_or_else(|| "this object".into()),
    };
    // Which pod, where the object runs several (a RayCluster's head and each worker group).
    let pods: std::collections::BTreeSet<Option<&str>> =
        findings.iter().map(|f| f.pod.as_deref()).collect();
    let subject = match pods.into_iter().collect::<Vec<_>>().as_slice() {
        [Some(p)] => format!("{subject} (pod {})", code(p)),
        _ => subject,
    };
    let _ = writeln!(
        body,
        "**KubeHarden** hardens {subject}: {}\n",
        names.join(", ")
    );
    for (id, fs) in &rules {
        let why = registry
            .get(id)
            .map(|r| why_sentence(&r.docs))
            .unwrap_or_default();
        let _ = writeln!(body, "- `{id}`: {}. {why}", escape(&fs[0].message));
    }
    let unsafe_notes: Vec<String> = rules
        .keys()
        .filter_map(|id| registry.get(id))
        .filter(|r| {
            findings
                .iter()
                .any(|f| f.rule == r.id && f.applicability < Some(Applicability::Safe))
        })
        .filter_map(|r| {
            r.fix
                .as_ref()
                .map(|fix| format!("- `{}`: {}", r.id, one_line(&fix.safety)))
        })
        .collect();
    if !unsafe_notes.is_empty() {
        let _ = writeln!(
            body,
            "\n> [!WARNING]\n> Check before committing: this change can stop the workload from working."
        );
        for n in unsafe_notes {
            let _ = writeln!(body, "> {n}");
        }
    }
    for note in notes {
        let _ = writeln!(body, "\nNote: {note}.");
    }
    for line in images {
        let _ = writeln!(body, "\n{line}");
    }
    let _ = write!(
        body,
        "\n{suggestion}\n\n{FINGERPRINT_PREFIX}{fingerprint} -->"
    );
    body
}

fn rendered_body(registry: &Registry, f: &Finding, fingerprint: &str) -> String {
    let rule = registry.get(&f.rule).map_or_else(
        || format!("`{}`", f.rule),
        |r| format!("[`{}`]({})", r.id, r.docs_url()),
    );
    let mut body = format!("**KubeHarden** {rule}: {}", escape(&f.message));
    if let Some(subject) = f.subject() {
        let _ = write!(body, " ({})", escape(&subject));
    }
    if let Some(site) = &f.render {
        let _ = write!(
            body,
            "\n\nFound in the render of {} ({})",
            code(&site.root),
            escape(&site.variant)
        );
        if let Some(field) = &site.field {
            let _ = write!(body, " at {}", code(field));
        }
        body.push('.');
    }
    let _ = write!(body, "\n\n{FINGERPRINT_PREFIX}{fingerprint} -->");
    clip(&body, MAX_BODY)
}

/// The rendered roots and variants, one line each; empty when nothing was rendered.
fn roots_summary(rendered: &RenderedChange) -> String {
    let mut s = String::new();
    if let Some(note) = &rendered.note {
        let _ = write!(
            s,
            "\n\nCharts and kustomizations were not rendered: {}.",
            escape(note)
        );
    }
    if rendered.roots.is_empty() {
        return s;
    }
    let _ = write!(
        s,
        "\n\nRendered for this change:\n\n| root | variant | |\n|---|---|---|\n"
    );
    for r in rendered.roots.iter().take(MAX_TABLE_ROWS) {
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            code(&r.root).replace('|', "\\|"),
            escape(&r.variant),
            escape(&r.status)
        );
    }
    if rendered.roots.len() > MAX_TABLE_ROWS {
        let _ = writeln!(s, "\n…and {} more.", rendered.roots.len() - MAX_TABLE_ROWS);
    }
    s
}

/// Rows of the vulnerability table in a comment.
const MAX_VULN_ROWS: usize = 10;

fn vulnerability_body(
    registry: &Registry,
    f: &Finding,
    image: &str,
    report: Option<&crate::vuln::ImageReport>,
    fingerprint: &str,
) -> String {
    let mut body = String::new();
    let rule = registry.get(&f.rule).map_or_else(
        || format!("`{}`", f.rule),
        |r| format!("[`{}`]({})", r.id, r.docs_url()),
    );
    let Some(report) = report else {
        let _ = writeln!(body, "**KubeHarden** {rule}: {}", escape(&f.message));
        let _ = write!(body, "\n{FINGERPRINT_PREFIX}{fingerprint} -->");
        return body;
    };
    let counts = report.counts();
    let parts: Vec<String> = crate::vuln::VulnSeverity::ALL
        .iter()
        .filter_map(|s| counts.get(s).map(|n| format!("{n} {s}")))
        .collect();
    let verdict = match f.severity {
        Severity::Error => "fails the check",
        _ => "is below the repository's threshold and does not fail the check",
    };
    let _ = writeln!(
        body,
        "**KubeHarden** {rule}: {} reports {} known vulnerabilit{} in {} ({}); this {verdict}.\n",
        report.scanner,
        report.vulnerabilities.len(),
        if report.vulnerabilities.len() == 1 {
            "y"
        } else {
            "ies"
        },
        code(image),
        parts.join(", ")
    );
    body.push_str(
        "| vulnerability | severity | package | installed | fixed in |\n|---|---|---|---|---|\n",
    );
    for v in report.worst_n(MAX_VULN_ROWS) {
        let id = match v.link() {
            Some(link) => format!(
                "[{}]({})",
                escape(&v.id),
                link.replace(')', "%29").replace(' ', "%20")
            ),
            None => escape(&v.id),
        };
        let _ = writeln!(
            body,
            "| {id} | {} | {} | {} | {} |",
            v.severity,
            code(&v.package),
            code(&v.installed),
            v.fixed
                .as_deref()
                .map_or_else(|| "no fix yet".to_string(), code)
        );
    }
    if report.vulnerabilities.len() > MAX_VULN_ROWS {
        let _ = writeln!(
            body,
            "\nand {} more: run the scanner on the image for all of them.",
            report.vulnerabilities.len() - MAX_VULN_ROWS
        );
    }
    let _ = write!(body, "\n{FINGERPRINT_PREFIX}{fingerprint} -->");
    clip(&body, MAX_BODY)
}

/// The first sentence of a rule's "Why is this bad?" section.
fn why_sentence(docs: &str) -> String {
    let Some(section) = docs.split("## Why is this bad?").nth(1) else {
        return String::new();
    };
    let text = one_line(section.split("\n## ").next().unwrap_or(""));
    match text.find(". ") {
        Some(i) => text[..=i].to_string(),
        None => text,
    }
}

fn summary(
    report: &Report,
    fixable: usize,
    committable: usize,
    safe_fixable: usize,
    rendered_fixable: usize,
    threshold: Severity,
) -> (String, String) {
    let count = |s: Severity| report.findings.iter().filter(|f| f.severity == s).count();
    let (e, w, n) = (
        count(Severity::Error),
        count(Severity::Warning),
        count(Severity::Note),
    );
    let title = if report.findings.is_empty() {
        "no pod-security findings".to_string()
    } else {
        format!(
            "{} finding{} ({e} error, {w} warning, {n} note)",
            report.findings.len(),
            if report.findings.len() == 1 { "" } else { "s" }
        )
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Checked {} file{}, {} workload{}. The check fails on findings of severity `{threshold}` or above.",
        report.files,
        if report.files == 1 { "" } else { "s" },
        report.workloads,
        if report.workloads == 1 { "" } else { "s" }
    );
    if fixable > 0 {
        let _ = writeln!(
            s,
            "\n{fixable} finding{} can be fixed by committing the suggestions, one by one or in a batch.",
            if fixable == 1 { "" } else { "s" }
        );
        if safe_fixable > 0 {
            let _ = writeln!(
                s,
                "A `/kubeharden fix` comment (or the **Apply fixes** button) commits the {safe_fixable} safe fix{} at once.",
                if safe_fixable == 1 { "" } else { "es" }
            );
        }
        let unsafe_count = committable - safe_fixable;
        if unsafe_count > 0 {
            let _ = writeln!(
                s,
                "{} fix{} unsafe: read {} in the review, then `/kubeharden fix --unsafe` (or **Apply all fixes**) commits {} too.",
                unsafe_count,
                if unsafe_count == 1 { " is" } else { "es are" },
                if unsafe_count == 1 { "it" } else { "them" },
                if unsafe_count == 1 { "it" } else { "them" },
            );
        }
        if rendered_fixable > 0 {
            let _ = writeln!(
                s,
                "{rendered_fixable} finding{} of rendered charts and kustomizations {} fixed by {} suggestion{} in the chart or overlay, confirmed by rendering again; commit {} from the review (the app's own commit writes plain manifests only).",
                if rendered_fixable == 1 { "" } else { "s" },
                if rendered_fixable == 1 { "is" } else { "are" },
                if rendered_fixable == 1 { "a" } else { "the" },
                if rendered_fixable == 1 { "" } else { "s" },
                if rendered_fixable == 1 { "it" } else { "them" },
            );
        }
        let workflows = fixable - committable - rendered_fixable;
        if workflows > 0 {
            let _ = writeln!(
                s,
                "The app never commits to `.github/workflows/`: {} fix{} there must be committed by hand.",
                workflows,
                if workflows == 1 { "" } else { "es" },
            );
        }
    }
    if !report.findings.is_empty() {
        let _ = write!(s, "\n{}", table(report));
    }
    (title, s)
}

fn table(report: &Report) -> String {
    if report.findings.is_empty() {
        return String::new();
    }
    let mut s =
        String::from("| severity | rule | where | object | message |\n|---|---|---|---|---|\n");
    for f in report.findings.iter().take(MAX_TABLE_ROWS) {
        let object = match (&f.object, &f.container) {
            (Some(o), Some(c)) => format!("{o}, container {c}"),
            (Some(o), None) => o.to_string(),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "| {} | `{}` | {} | {} | {} |",
            f.severity,
            f.rule,
            code(&format!("{}:{}", f.path, f.start.line)).replace('|', "\\|"),
            escape(&object),
            escape(&f.message)
        );
    }
    if report.findings.len() > MAX_TABLE_ROWS {
        let _ = writeln!(
            s,
            "\n…and {} more (every finding is an annotation of the check run).",
            report.findings.len() - MAX_TABLE_ROWS
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_found_again() {
        let body = format!("text\n\n{FINGERPRINT_PREFIX}abc123 -->");
        assert_eq!(fingerprint_of(&body), Some("abc123"));
        assert_eq!(fingerprint_of("no marker"), None);
    }
}
