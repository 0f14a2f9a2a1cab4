//! One rendering job, as the command line and the GitHub App both run it: the roots of one
//! repository tree rendered with the real tools (`renderers`), what each root and variant came
//! to (for summaries), and the findings on rendered output moved to the repository lines they
//! come from (`provenance`), with the findings about roots that did not render.

use std::collections::HashMap;
use std::path::Path;

use kubeharden_core::lint::{Finding, Linter, RENDER_FAILED, RENDER_SKIPPED};
use kubeharden_core::provenance;
use kubeharden_core::roots::{Problem, Root, RootKind};
use kubeharden_core::rules::Applicability;
use kubeharden_core::source::{SourceFile, TextRange};

use crate::renderers::{self, Options, Tools};

/// What became of one variant of one root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Rendered,
    /// The tool failed (or could not start); its message.
    Failed(String),
    /// Never run: it would need the network, or its files cannot be read.
    Skipped(String),
}

impl Status {
    /// For a summary: `rendered`, or `render-failed`/`render-skipped` with the reason.
    pub fn summary(&self) -> String {
        match self {
            Status::Rendered => "rendered".into(),
            Status::Failed(why) => format!("render-failed: {why}"),
            Status::Skipped(why) => format!("render-skipped: {why}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub kind: RootKind,
    /// The root's name (its directory, `.` for the top).
    pub root: String,
    pub variant: String,
    pub status: Status,
}

/// A finding about a root that did not render, before it is a [`Finding`].
#[derive(Debug, Clone)]
struct Diagnostic {
    path: String,
    range: TextRange,
    message: String,
    rule: &'static str,
}

/// What rendering one tree gave: the rendered outputs (to lint with the other files), what
/// each variant came to, and what is needed to place their findings.
pub struct Renders {
    pub files: Vec<SourceFile>,
    pub outcomes: Vec<Outcome>,
    sentinels: HashMap<String, provenance::Sentinel>,
    diagnostics: Vec<Diagnostic>,
}

impl Renders {
    /// What the sentinel render of the chart rendered as `path` showed.
    pub fn sentinel(&self, path: &str) -> Option<&provenance::Sentinel> {
        self.sentinels.get(path)
    }
}

/// Render every variant of `roots` (paths relative to `dir`). `problems` are those of the
/// repository's `render:` configuration, reported with the roots that did not render.
pub fn render(
    dir: &Path,
    roots: &[Root],
    problems: &[Problem],
    tools: &Tools,
    options: &Options,
) -> Renders {
    let mut renders = Renders {
        files: Vec::new(),
        outcomes: Vec::new(),
        sentinels: HashMap::new(),
        diagnostics: problems
            .iter()
            .map(|p| Diagnostic {
                path: p.path.clone(),
                range: p.range,
                message: p.message.clone(),
                rule: RENDER_FAILED,
            })
            .collect(),
    };
    for root in roots {
        let first = root
            .blocked
            .first()
            .map(|b| Status::Skipped(b.message.clone()))
            .or_else(|| {
                root.problems
                    .first()
                    .map(|p| Status::Skipped(p.message.clone()))
            });
        for b in &root.blocked {
            renders.diagnostics.push(Diagnostic {
                path: b.path.clone(),
                range: b.range,
                message: b.message.clone(),
                rule: RENDER_SKIPPED,
            });
        }
        for p in &root.problems {
            renders.diagnostics.push(Diagnostic {
                path: p.path.clone(),
                range: p.range,
                message: p.message.clone(),
                rule: RENDER_FAILED,
            });
        }
        if let Some(status) = first {
            for v in &root.variants {
                renders.outcomes.push(Outcome {
                    kind: root.kind,
                    root: root.name().to_string(),
                    variant: v.name.clone(),
                    status: status.clone(),
                });
            }
        }
    }
    for r in renderers::render_all(dir, roots, tools, options) {
        let root = &roots[r.root];
        let variant = &root.variants[r.variant];
        let status = match r.output {
            Ok(output) => {
                let path = provenance::rendered_path(root, variant);
                if let Some(s) = output.sentinel {
                    renders.sentinels.insert(path.clone(), s);
                }
                renders.files.push(SourceFile::new(path, output.text));
                Status::Rendered
            }
            Err(why) => {
                renders.diagnostics.push(Diagnostic {
                    path: root.file.clone(),
                    range: TextRange::empty(0),
                    message: format!("{} ({}) did not render: {why}", root.name(), variant.name),
                    rule: RENDER_FAILED,
                });
                Status::Failed(why)
            }
        };
        renders.outcomes.push(Outcome {
            kind: root.kind,
            root: root.name().to_string(),
            variant: variant.name.clone(),
            status,
        });
    }
    renders
        .outcomes
        .sort_by(|a, b| (&a.root, a.kind, &a.variant).cmp(&(&b.root, b.kind, &b.variant)));
    renders
}

/// Move the findings on this tree's rendered output to the repository files they come from
/// (`read` gives a repository file's text; `display` how its path is shown), and return the
/// findings about its roots that did not render. Findings of other files are left alone.
pub fn place(
    findings: &mut [Finding],
    roots: &[Root],
    renders: &Renders,
    linter: &Linter,
    read: &dyn Fn(&str) -> Option<String>,
    display: &dyn Fn(&str) -> String,
) -> Vec<Finding> {
    let by_path: HashMap<&str, &SourceFile> =
        renders.files.iter().map(|f| (f.path.as_str(), f)).collect();
    for root in roots {
        for variant in &root.variants {
            let name = provenance::rendered_path(root, variant);
            let Some(file) = by_path.get(name.as_str()) else {
                continue;
            };
            // The linter's report is in path order: one variant's findings are adjacent.
            let Some(start) = findings.iter().position(|f| f.path == name) else {
                continue;
            };
            let end = start
                + findings[start..]
                    .iter()
                    .take_while(|f| f.path == name)
                    .count();
            let chunk = &mut findings[start..end];
            let sentinel = renders.sentinels.get(name.as_str());
            provenance::place(chunk, root, variant, file, sentinel, read);
            for f in chunk.iter_mut() {
                f.path = display(&f.path);
            }
        }
    }
    renders
        .diagnostics
        .iter()
        .filter_map(|d| {
            let text = read(&d.path).unwrap_or_default();
            let file = SourceFile::new(display(&d.path), text);
            linter.diagnostic(&file, d.rule, d.range, d.message.clone())
        })
        .collect()
}

/// The confirmed source fixes of `roots` (paths relative to `dir`), rendered as `renders`:
/// one [`Confirmed`](renderers::confirm::Confirmed) per group of roots that share files
/// ([`roots::groups`]), the groups confirmed on every core. Fixes below `min` are not proposed.
/// Different groups' fixes touch different files, so all of them can be written together.
pub fn source_fixes(
    dir: &Path,
    roots: &[Root],
    renders: &Renders,
    linter: &Linter,
    min: Applicability,
    tools: &Tools,
    options: &Options,
) -> Vec<renderers::confirm::Confirmed> {
    let by_path: HashMap<&str, &SourceFile> =
        renders.files.iter().map(|f| (f.path.as_str(), f)).collect();
    let mut jobs: Vec<Vec<(&Root, usize, renderers::Output)>> = Vec::new();
    for group in kubeharden_core::roots::groups(roots) {
        let mut outputs = Vec::new();
        for root in group.into_iter().map(|i| &roots[i]) {
            for (i, variant) in root.variants.iter().enumerate() {
                let name = provenance::rendered_path(root, variant);
                if let Some(file) = by_path.get(name.as_str()) {
                    let output = renderers::Output {
                        text: file.text.clone(),
                        sentinel: renders.sentinel(&name).cloned(),
                    };
                    outputs.push((root, i, output));
                }
            }
        }
        if !outputs.is_empty() {
            jobs.push(outputs);
        }
    }
    kubeharden_core::lint::parallel_map(&jobs, |outputs| {
        let group: Vec<renderers::confirm::Rendered> = outputs
            .iter()
            .map(|(root, variant, first)| renderers::confirm::Rendered {
                root,
                variant: *variant,
                first,
            })
            .collect();
        renderers::confirm::source_fixes(dir, &group, linter, min, tools, options)
    })
}
