//! `kubeharden fix`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Result, bail};

use kubeharden_core::fix::fix_file;
use kubeharden_core::lint::Linter;
use kubeharden_core::rules::Applicability;

use super::inputs::collect_inputs;
use super::{CommonArgs, Setup, setup};

#[derive(clap::Args)]
pub struct FixArgs {
    /// Files or directories (searched for *.yaml and *.yml); `-` reads standard input.
    #[arg(default_value = ".")]
    paths: Vec<String>,
    /// Print a unified diff of the fixes (the default).
    #[arg(long, conflicts_with = "write")]
    diff: bool,
    /// Rewrite the files (for `-`, print the fixed text) instead of printing a diff.
    #[arg(long)]
    write: bool,
    /// Also apply unsafe fixes (ones that can stop a workload from working; see `explain`).
    #[arg(long)]
    unsafe_fixes: bool,
    /// Only these rules (comma-separated ids).
    #[arg(long, value_delimiter = ',')]
    select: Vec<String>,
    /// Not these rules (comma-separated ids).
    #[arg(long, value_delimiter = ',')]
    ignore: Vec<String>,
    /// Pin every tagged image to the digest its registry serves now (asks the registries;
    /// credentials from --registry-auth-file).
    #[arg(long)]
    pin_digests: bool,
    #[command(flatten)]
    inspect: super::InspectArgs,
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    render: super::render::RenderArgs,
}

pub fn run(args: FixArgs) -> Result<ExitCode> {
    let Setup {
        registry,
        config,
        config_root,
        mut settings,
    } = setup(&args.common)?;
    for id in args.select.iter().chain(&args.ignore) {
        if registry.get(id).is_none() {
            bail!("unknown rule `{id}`; `kubeharden rules` lists them");
        }
    }
    if !args.select.is_empty() {
        let all: Vec<String> = registry.iter().map(|r| r.id.clone()).collect();
        settings
            .disable
            .extend(all.into_iter().filter(|id| !args.select.contains(id)));
        settings.enable.extend(args.select.iter().cloned());
    }
    settings.disable.extend(args.ignore.iter().cloned());
    let min = if args.unsafe_fixes {
        Applicability::Unsafe
    } else {
        Applicability::Safe
    };
    let plan = super::render::plan(&args.paths, &args.render, &config.render);
    let (mut files, mut io_errors) = collect_inputs(&args.paths, &config, config_root.as_deref());
    // What a render reads is fixed through the render, where the user edits it.
    files.retain(|f| !plan.consumed.contains(&f.path));
    let renders = super::render::render(&plan, &args.render, settings.kube_version);
    let mut images = kubeharden_core::facts::ImageFacts::default();
    if args.pin_digests {
        settings.enable.insert("image-not-pinned".into());
        settings.disable.remove("image-not-pinned");
        let kinds = registry.workloads_with(&settings.workloads);
        images.digests = pin_digests(
            &files,
            &settings,
            &kinds,
            args.inspect.registry_auth_file.as_deref(),
        )?;
    }
    args.inspect
        .read_into(&files, &settings, &registry, &mut images)?;
    let linter = Linter::new(&registry, settings).with_facts(kubeharden_core::facts::Facts {
        images: std::sync::Arc::new(images),
    });
    let mut out: Vec<u8> = Vec::new();
    let mut remaining = false;
    let mut fixed_count = 0;
    let mut unsafe_left = 0;
    let mut unsafe_applied = std::collections::BTreeSet::new();
    let mut notes = Vec::new();
    let mut image_lines = Vec::new();
    // Each file is reduced to what is printed as soon as it is fixed, so the whole corpus of
    // results is never held at once.
    let outcomes = kubeharden_core::lint::parallel_map(&files, |file| {
        fix_file(&linter, file, min).map(|result| {
            let output = if result.fixed == file.text {
                Output::Unchanged
            } else if !args.write {
                Output::Diff(kubeharden_core::commands::unified_diff(
                    &file.path,
                    &file.text,
                    &result.fixed,
                ))
            } else {
                Output::Fixed(result.fixed.clone())
            };
            FileOutcome {
                output,
                fixed: result.fixed_findings.len(),
                unsafe_left: result
                    .remaining
                    .findings
                    .iter()
                    .filter(|f| f.applicability == Some(Applicability::Unsafe))
                    .count(),
                failed: result.remaining.failed(linter.settings.fail_on),
                unsafe_rules: result.unsafe_rules,
                images: result.images,
                notes: result.notes,
            }
        })
    });
    for (file, outcome) in files.iter().zip(outcomes) {
        let stdin = file.path == "<stdin>";
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                // A filter passes on what it cannot fix, byte for byte.
                if stdin && args.write {
                    out.extend_from_slice(original_bytes(file));
                }
                io_errors.push(e.into());
                continue;
            }
        };
        fixed_count += outcome.fixed;
        unsafe_left += outcome.unsafe_left;
        remaining |= outcome.failed;
        unsafe_applied.extend(outcome.unsafe_rules);
        notes.extend(outcome.notes.iter().map(|n| format!("{}: {n}", file.path)));
        // One line per container on what its image allowed.
        for c in &outcome.images {
            image_lines.push(format!(
                "image: {}:{}: {}, container \"{}\": {}",
                c.path,
                c.line,
                c.object,
                c.container,
                c.decision.summary()
            ));
        }
        match outcome.output {
            // `fix --write -` is a filter: the text goes out whether or not it changed.
            Output::Unchanged if stdin && args.write => out.extend_from_slice(original_bytes(file)),
            Output::Unchanged => {}
            Output::Diff(diff) => out.extend_from_slice(diff.as_bytes()),
            Output::Fixed(text) if stdin => out.extend_from_slice(text.as_bytes()),
            Output::Fixed(text) => {
                if let Err(e) = write_whole(std::path::Path::new(&file.path), text.as_bytes()) {
                    io_errors.push(e.context(format!("cannot write {}", file.path)));
                }
            }
        }
    }
    let roots = fix_roots(&plan, &renders, &args, &linter, min);
    fixed_count += roots.fixed;
    unsafe_left += roots.unsafe_left;
    remaining |= roots.failed;
    out.extend_from_slice(&roots.out);
    notes.extend(roots.notes);
    io_errors.extend(roots.errors);
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(&out);
    let _ = stdout.flush();
    let verb = if args.write { "Fixed" } else { "Would fix" };
    eprintln!(
        "{verb} {fixed_count} finding{}.",
        if fixed_count == 1 { "" } else { "s" }
    );
    for note in notes {
        eprintln!("note: {note}");
    }
    for line in image_lines {
        eprintln!("{line}");
    }
    // Unsafe fixes can stop a workload from working: say how, once per rule.
    for id in &unsafe_applied {
        if let Some(fix) = registry.get(id).and_then(|r| r.fix.as_ref()) {
            eprintln!(
                "warning: [{id}] {}",
                kubeharden_core::source::one_line(&fix.safety)
            );
        }
    }
    if unsafe_left > 0 && !args.unsafe_fixes {
        eprintln!(
            "{unsafe_left} more can be fixed with --unsafe-fixes (read `kubeharden explain RULE` first)."
        );
    }
    for e in &io_errors {
        eprintln!("kubeharden: {e:#}");
    }
    Ok(if !io_errors.is_empty() {
        ExitCode::from(2)
    } else if remaining {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// What fixing the rendered roots printed and counted.
#[derive(Default)]
struct RootsOutcome {
    out: Vec<u8>,
    fixed: usize,
    unsafe_left: usize,
    failed: bool,
    notes: Vec<String>,
    errors: Vec<anyhow::Error>,
}

/// Fix the rendered roots where the user edits: the confirmed source fixes of every group of
/// renders, written together per directory argument (each group's were confirmed together,
/// and groups share no file); a finding with no source fix gets a note saying what the chart
/// or overlay needs.
fn fix_roots(
    plan: &super::render::Plan,
    renders: &super::render::Renders,
    args: &FixArgs,
    linter: &Linter,
    min: Applicability,
) -> RootsOutcome {
    use kubeharden_core::provenance::fix::{SourceFix, apply};
    let mut outcome = RootsOutcome::default();
    let groups = super::render::source_fixes(plan, renders, &args.render, linter, min);
    let mut note = |n: String| {
        if !outcome.notes.contains(&n) {
            outcome.notes.push(n);
        }
    };
    // Per directory argument, the fixes to write, each once.
    let mut by_dir: std::collections::BTreeMap<&std::path::Path, Vec<&SourceFix>> =
        Default::default();
    for v in &groups {
        for n in &v.confirmed.none {
            note(format!(
                "{}: {}: [{}] no fix in the source: {}",
                v.at(&n.finding),
                n.finding.object.as_deref().unwrap_or("render"),
                n.finding.rule,
                n.message
            ));
        }
        for (f, why) in &v.confirmed.dropped {
            if f.applicability < min {
                outcome.unsafe_left += f.resolves.len();
                continue;
            }
            let at = f.resolves.first().map(|r| v.at(r)).unwrap_or_default();
            note(format!(
                "{at}: {} was not confirmed by rendering again: {why}",
                f.description
            ));
        }
        let list = by_dir.entry(v.dir.as_path()).or_default();
        for f in &v.confirmed.fixes {
            if !list.iter().any(|g| g.changes == f.changes) {
                list.push(f);
            }
        }
    }
    let mut written: Vec<&SourceFix> = Vec::new();
    for (dir, fixes) in by_dir {
        let read = |rel: &str| kubeharden::renderers::read_inside(dir, rel);
        let mut chosen: Vec<&SourceFix> = Vec::new();
        for f in fixes {
            let mut with = chosen.clone();
            with.push(f);
            match apply(&with, &read) {
                Ok(_) => chosen.push(f),
                Err(e) => note(format!(
                    "{}: {} was left out: {e}",
                    dir.display(),
                    f.description
                )),
            }
        }
        let files = match apply(&chosen, &read) {
            Ok(files) => files,
            Err(e) => {
                outcome
                    .errors
                    .push(anyhow::anyhow!("{}: {e}", dir.display()));
                continue;
            }
        };
        for (rel, text) in &files {
            let shown = super::render::display(dir, rel);
            let old = read(rel);
            if args.write {
                let path = dir.join(rel);
                let done = match old {
                    Some(_) => write_whole(&path, text.as_bytes()),
                    None => write_new(dir, &path, text.as_bytes()),
                };
                if let Err(e) = done {
                    outcome
                        .errors
                        .push(e.context(format!("cannot write {shown}")));
                }
            } else {
                let diff = kubeharden_core::commands::unified_diff(
                    &shown,
                    old.as_deref().unwrap_or(""),
                    text,
                );
                outcome.out.extend_from_slice(diff.as_bytes());
            }
        }
        written.extend(chosen);
    }
    // Every variant's findings that a written fix resolves are fixed, in each variant.
    let resolved: std::collections::HashSet<_> = groups
        .iter()
        .flat_map(|v| &v.confirmed.fixes)
        .filter(|f| written.iter().any(|w| w.changes == f.changes))
        .flat_map(|f| f.resolves.iter().cloned())
        .collect();
    outcome.fixed = resolved.len();
    // What stays: the renders' findings that no written fix resolves.
    let mut report = linter.lint_files(&renders.files);
    super::render::place(&mut report, plan, renders, linter, &[]);
    report.findings.retain(|f| {
        kubeharden_core::provenance::fix::RenderedFinding::of(f)
            .is_none_or(|k| !resolved.contains(&k))
    });
    outcome.failed = report.failed(linter.settings.fail_on);
    outcome
}

/// Create a file a fix adds (a new overlay patch) inside `dir`, never through a link out.
fn write_new(dir: &std::path::Path, path: &std::path::Path, content: &[u8]) -> Result<()> {
    use anyhow::Context;
    let parent = path.parent().context("the path names no file")?;
    std::fs::create_dir_all(parent).context("cannot create its directory")?;
    let top = dir.canonicalize().context("cannot resolve the directory")?;
    if !parent
        .canonicalize()
        .context("cannot resolve its directory")?
        .starts_with(&top)
    {
        anyhow::bail!("its directory lies outside {}", dir.display());
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .context("cannot create it")?;
    f.write_all(content)?;
    f.sync_all()?;
    Ok(())
}

/// The bytes a file was read from.
fn original_bytes(file: &kubeharden_core::source::SourceFile) -> &[u8] {
    match &file.not_utf8 {
        Some(bad) => &bad.bytes,
        None => file.text.as_bytes(),
    }
}

/// Replace a file's content all at once: the new text goes to a file beside it (with the
/// original's permissions), is synced, then renamed over it, so a crash or a full disk leaves
/// the old file or the new one, never a truncated one. A symlink is followed, not replaced.
fn write_whole(path: &std::path::Path, content: &[u8]) -> Result<()> {
    use anyhow::Context;
    let target = std::fs::canonicalize(path).context("cannot resolve the path")?;
    let dir = target.parent().context("the file has no directory")?;
    let name = target
        .file_name()
        .context("the path names no file")?
        .to_string_lossy();
    let temp = dir.join(format!(".{name}.kubeharden-{}", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&temp)?;
        f.set_permissions(std::fs::metadata(&target)?.permissions())?;
        f.write_all(content)?;
        f.sync_all()?;
        std::fs::rename(&temp, &target)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written.context("the write failed; the file is unchanged")
}

/// The digests registries serve now for the files' tagged images.
#[cfg(feature = "images")]
fn pin_digests(
    files: &[kubeharden_core::source::SourceFile],
    settings: &kubeharden_core::lint::Settings,
    kinds: &kubeharden_core::workloads::WorkloadKinds,
    auth_file: Option<&std::path::Path>,
) -> Result<std::collections::BTreeMap<String, String>> {
    let (digests, problems) = super::images::local_digests(files, settings, kinds, auth_file)?;
    // A registry that cannot answer leaves its images unpinned, and says so.
    for p in problems {
        eprintln!("kubeharden: {p}");
    }
    Ok(digests)
}

#[cfg(not(feature = "images"))]
fn pin_digests(
    _: &[kubeharden_core::source::SourceFile],
    _: &kubeharden_core::lint::Settings,
    _: &kubeharden_core::workloads::WorkloadKinds,
    _: Option<&std::path::Path>,
) -> Result<std::collections::BTreeMap<String, String>> {
    Err(super::not_built(
        "images",
        "registry and scanner access (`--pin-digests`)",
    ))
}

enum Output {
    Unchanged,
    Diff(String),
    Fixed(String),
}

struct FileOutcome {
    output: Output,
    fixed: usize,
    unsafe_left: usize,
    failed: bool,
    unsafe_rules: std::collections::BTreeSet<String>,
    notes: Vec<String>,
    images: Vec<kubeharden_core::decision::ContainerImage>,
}
