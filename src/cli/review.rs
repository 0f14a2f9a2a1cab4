//! `kubeharden review`: the review the app would post, from a local git checkout.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use kubeharden_core::config::{CONFIG_PATHS, Config};
use kubeharden_core::lint::Linter;
use kubeharden_core::review::{RenderedChange, RootLine};
use kubeharden_core::rules::Applicability;

use super::registry;

#[derive(clap::Args)]
pub struct ReviewArgs {
    /// The branch the pull request merges into (its configuration applies, as in the app).
    #[arg(long)]
    base: String,
    /// The pull request's head.
    #[arg(long, default_value = "HEAD")]
    head: String,
    /// Print the review as JSON (the payload the app would send).
    #[arg(long)]
    json: bool,
    /// Directory of rule files that add to or override the built-in rules.
    #[arg(long)]
    rules: Option<PathBuf>,
    #[command(flatten)]
    inspect: super::InspectArgs,
    #[command(flatten)]
    render: super::render::RenderArgs,
}

fn git(args: &[&str]) -> Result<String> {
    String::from_utf8(git_bytes(args)?)
        .with_context(|| format!("git {} printed something that is not UTF-8", args.join(" ")))
}

/// What git prints, as bytes: a file's content need not be UTF-8.
fn git_bytes(args: &[&str]) -> Result<Vec<u8>> {
    let out = std::process::Command::new("git")
        .args(args)
        .output()
        .context("cannot run git")?;
    if !out.status.success() {
        bail!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// What the app would post for a pull request from `base` to `head`: the same files (added,
/// modified or renamed YAML inside the configured paths), the same hunks (GitHub diffs against
/// the merge base), the base branch's configuration.
pub fn run(args: ReviewArgs) -> Result<ExitCode> {
    let registry = registry(args.rules.as_deref())?;
    let merge_base = git(&["merge-base", &args.base, &args.head])?
        .trim()
        .to_string();
    let config = CONFIG_PATHS
        .iter()
        .find_map(|p| {
            git(&["show", &format!("{}:{p}", args.base)])
                .ok()
                .map(|text| (p, text))
        })
        .map(|(p, text)| Config::parse(p, &text, &registry))
        .transpose()?
        .unwrap_or_default();
    let names = git(&["diff", "--name-status", "-M", "-z", &merge_base, &args.head])?;
    let mut fields = names.split('\0').filter(|s| !s.is_empty());
    let mut files = Vec::new();
    while let Some(status) = fields.next() {
        // Renames and copies name two paths; the second is the new one.
        let path = match status.chars().next() {
            Some('R' | 'C') => fields.nth(1),
            _ => fields.next(),
        };
        let Some(path) = path else { break };
        if !matches!(status.chars().next(), Some('A' | 'M' | 'R' | 'C'))
            || !config.lints_changed(path)
        {
            continue;
        }
        let bytes = git_bytes(&["show", &format!("{}:{path}", args.head)])?;
        // A diff of bytes that are not UTF-8 shows them as they are; its hunk headers are all
        // the review needs.
        let patch = git_bytes(&[
            "diff",
            "-M",
            "--unified=3",
            &merge_base,
            &args.head,
            "--",
            path,
        ])?;
        files.push(kubeharden_core::change::PrFile::from_bytes(
            path,
            bytes,
            Some(String::from_utf8_lossy(&patch).into_owned()),
        ));
    }
    let settings = config.settings();
    let mut images = kubeharden_core::facts::ImageFacts::default();
    if args.inspect.inspect_images {
        let sources: Vec<kubeharden_core::source::SourceFile> = files
            .iter()
            .map(kubeharden_core::change::PrFile::source)
            .collect();
        args.inspect
            .read_into(&sources, &settings, &registry, &mut images)?;
    }
    let linter = Linter::new(&registry, settings).with_facts(kubeharden_core::facts::Facts {
        images: std::sync::Arc::new(images),
    });
    let rendered = match args.render.render {
        super::render::RenderMode::Auto => render_head(&args, &config, &linter, &files)?,
        super::render::RenderMode::Never => RenderedChange::default(),
    };
    let plan = kubeharden_core::review::plan_rendered(&linter, &files, &rendered);
    let mut out = String::new();
    if args.json {
        let value = serde_json::json!({
            "review": {
                "event": "COMMENT",
                "body": plan.body,
                "comments": plan.comments,
            },
            "check_run": {
                "conclusion": plan.conclusion,
                "title": plan.check_title,
                "summary": plan.check_summary,
                "annotations": plan.annotations,
            }
        });
        out = serde_json::to_string_pretty(&value)? + "\n";
    } else {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "Check run \"KubeHarden\": {:?}: {}",
            plan.conclusion, plan.check_title
        );
        if plan.body.is_empty() {
            let _ = writeln!(out, "\nNo review: nothing to say.");
        } else {
            let _ = writeln!(out, "\n=== review ===\n{}", plan.body);
        }
        for c in &plan.comments {
            let lines = match c.start_line {
                Some(s) => format!("{s}-{}", c.line),
                None => c.line.to_string(),
            };
            let _ = writeln!(out, "\n=== comment on {}:{lines} ===\n{}", c.path, c.body);
        }
        let _ = writeln!(out, "\n=== annotations ===");
        for a in &plan.annotations {
            let _ = writeln!(
                out,
                "{}:{}: {:?} {}: {}",
                a.path, a.start_line, a.annotation_level, a.title, a.message
            );
        }
    }
    let _ = std::io::stdout().write_all(out.as_bytes());
    Ok(match plan.conclusion {
        kubeharden_core::review::Conclusion::Success => ExitCode::SUCCESS,
        kubeharden_core::review::Conclusion::Failure => ExitCode::from(1),
    })
}

/// Render the charts and kustomizations of the head that the change reaches, as the app does:
/// the head's files (from git, not the working tree) in a scratch directory, rendered, linted,
/// their findings placed on repository lines, and the confirmed source fixes as suggestions.
fn render_head(
    args: &ReviewArgs,
    config: &Config,
    linter: &Linter,
    files: &[kubeharden_core::change::PrFile],
) -> Result<RenderedChange> {
    let scratch = tempfile::Builder::new()
        .prefix("kubeharden-review-")
        .tempdir()
        .context("cannot create a scratch directory for the head")?;
    let tar = scratch.path().join("head.tar");
    let repo = scratch.path().join("repo");
    std::fs::create_dir(&repo).context("cannot create a scratch directory for the head")?;
    git(&[
        "archive",
        "--format=tar",
        "-o",
        &tar.to_string_lossy(),
        &args.head,
    ])?;
    let out = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(&repo)
        .output()
        .context("cannot run tar")?;
    if !out.status.success() {
        bail!(
            "cannot unpack {}: {}",
            args.head,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // Paths are shown relative to the head's top, as the app shows them; a tool named by a
    // relative path is still the one the user meant.
    let back = std::env::current_dir().context("cannot read the current directory")?;
    let mut render = args.render.clone();
    for tool in [&mut render.helm, &mut render.kustomize] {
        if let Some(p) = tool.as_mut()
            && p.components().count() > 1
            && p.is_relative()
        {
            *p = back.join(&*p);
        }
    }
    let render = &render;
    std::env::set_current_dir(&repo).context("cannot enter the scratch directory")?;
    let result = {
        let changed: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        let mut plan = super::render::plan(&[".".into()], render, &config.render);
        plan.retain_roots(|r| changed.iter().any(|p| r.reached_by(p)));
        let renders = super::render::render(&plan, render, linter.settings.kube_version);
        let mut report = linter.lint_files(&renders.files);
        let fixes =
            super::render::source_fixes(&plan, &renders, render, linter, Applicability::Unsafe);
        super::render::place(&mut report, &plan, &renders, linter, &fixes);
        let confirmed: Vec<_> = fixes
            .iter()
            .flat_map(|g| g.confirmed.fixes.iter().cloned())
            .collect();
        let read = |p: &str| kubeharden::renderers::read_inside(std::path::Path::new("."), p);
        RenderedChange {
            findings: report.findings,
            consumed: plan.consumed.clone(),
            roots: renders
                .outcomes()
                .map(|o| RootLine {
                    root: o.root.clone(),
                    variant: o.variant.clone(),
                    status: o.status.summary(),
                })
                .collect(),
            patches: files
                .iter()
                .filter_map(|f| Some((f.path.clone(), f.patch.clone()?)))
                .collect(),
            files: renders.files.len(),
            workloads: report.workloads,
            note: None,
            suggestions: kubeharden_core::provenance::fix::suggestions(&confirmed, &read),
        }
    };
    std::env::set_current_dir(&back).context("cannot return to the current directory")?;
    Ok(result)
}
