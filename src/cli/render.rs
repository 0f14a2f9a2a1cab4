//! Rendering for `lint` (and later `fix` and `review`): the charts and kustomizations found in
//! the directories a command is pointed at are rendered with the real tools and linted through
//! their output; the files a render reads are not linted on their own.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::ValueEnum;

use kubeharden::render_job;
use kubeharden::renderers::confirm::Confirmed;
use kubeharden::renderers::{Options, Tools, read_inside};
use kubeharden_core::config::{self, ByteSize};
use kubeharden_core::lint::{Linter, Report};
use kubeharden_core::provenance;
use kubeharden_core::provenance::fix::RenderedFinding;
use kubeharden_core::roots::{self, Problem, Repo, Root};
use kubeharden_core::rules::Applicability;
use kubeharden_core::source::SourceFile;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RenderMode {
    /// Render every chart and kustomization found in a directory argument.
    Auto,
    /// Lint files one by one, as written (Helm templates are skipped).
    Never,
}

#[derive(Clone, clap::Args)]
pub struct RenderArgs {
    /// Render Helm charts and Kustomize roots before linting (auto), or lint files as written.
    #[arg(long, value_enum, default_value = "auto")]
    pub render: RenderMode,
    /// The helm program (default: `helm` on PATH).
    #[arg(long, value_name = "PATH")]
    pub helm: Option<PathBuf>,
    /// The kustomize program, or kubectl for `kubectl kustomize` (default: `kustomize` on
    /// PATH, else `kubectl`).
    #[arg(long, value_name = "PATH")]
    pub kustomize: Option<PathBuf>,
    /// Seconds one render may take before it is stopped and reported as render-failed.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    pub render_timeout: f64,
    /// The largest output one render may print, e.g. 64MiB (the default).
    #[arg(long, value_name = "SIZE")]
    pub render_max_output: Option<ByteSize>,
}

/// One directory argument's roots.
struct Tree {
    /// The argument as given, for display paths.
    dir: PathBuf,
    roots: Vec<Root>,
    /// What is wrong with the configuration's `render:` section, as it applies here.
    problems: Vec<Problem>,
}

/// The roots of the directory arguments, and the display paths of the files they read.
pub struct Plan {
    trees: Vec<Tree>,
    pub consumed: BTreeSet<String>,
    /// `render.enable-helm`.
    kustomize_helm: bool,
}

impl Plan {
    /// Keep only the roots `keep` accepts (those a change reaches, for a review); what they
    /// read is all that is consumed.
    pub fn retain_roots(&mut self, keep: impl Fn(&Root) -> bool) {
        self.consumed.clear();
        for tree in &mut self.trees {
            tree.roots.retain(&keep);
            for root in &tree.roots {
                self.consumed
                    .extend(root.loads.iter().map(|f| display(&tree.dir, f)));
            }
        }
    }
}

/// How a repository-relative path of a tree is shown: as the directory walk shows it.
pub fn display(dir: &Path, rel: &str) -> String {
    let p = dir.join(rel);
    p.strip_prefix("./").unwrap_or(&p).display().to_string()
}

/// The roots of each directory argument, as the configuration's `render:` adjusts them (its
/// paths are relative to the directory linted, as they are to a repository's top).
pub fn plan(paths: &[String], args: &RenderArgs, config: &config::Render) -> Plan {
    let mut plan = Plan {
        trees: Vec::new(),
        consumed: BTreeSet::new(),
        kustomize_helm: config.enable_helm,
    };
    if args.render == RenderMode::Never {
        return plan;
    }
    for p in paths.iter().filter(|p| *p != "-") {
        let dir = Path::new(p);
        if !dir.is_dir() {
            continue;
        }
        let mut files = Vec::new();
        list(dir, dir, &mut files);
        let read = |rel: &str| read_inside(dir, rel);
        // Findings about the configuration name it as the tree shows it.
        let mut config = config.clone();
        if let (Ok(file), Ok(top)) = (Path::new(&config.file).canonicalize(), dir.canonicalize())
            && let Ok(rel) = file.strip_prefix(&top)
        {
            config.file = rel.to_string_lossy().replace('\\', "/");
        }
        let (found, problems) = roots::discover_with(&Repo::new(files, &read), &config);
        for root in &found {
            plan.consumed
                .extend(root.loads.iter().map(|f| display(dir, f)));
        }
        plan.trees.push(Tree {
            dir: dir.to_path_buf(),
            roots: found,
            problems,
        });
    }
    plan
}

/// Every file under `dir`, relative to `top`; hidden directories are left out and symbolic
/// links listed as files (so that a render refuses the ones that leave the tree).
fn list(top: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        match entry.file_type() {
            Ok(t) if t.is_dir() => {
                if !hidden {
                    list(top, &path, out);
                }
            }
            Ok(_) => {
                if let Ok(rel) = path.strip_prefix(top) {
                    out.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
            Err(_) => {}
        }
    }
}

/// What rendering added to a lint: each tree's rendered outputs (to lint with the other
/// files) and what is needed to place their findings.
pub struct Renders {
    pub files: Vec<SourceFile>,
    trees: Vec<render_job::Renders>,
}

impl Renders {
    /// What each root and variant came to.
    pub fn outcomes(&self) -> impl Iterator<Item = &render_job::Outcome> {
        self.trees.iter().flat_map(|t| &t.outcomes)
    }
}

fn tools_options(
    plan: &Plan,
    args: &RenderArgs,
    kube_version: kubeharden_core::k8s::KubeVersion,
) -> (Tools, Options) {
    let tools = Tools::find(args.helm.as_deref(), args.kustomize.as_deref());
    let options = Options {
        timeout: Duration::from_secs_f64(args.render_timeout.max(0.001)),
        max_output: args
            .render_max_output
            .map_or(Options::default().max_output, |s| s.0),
        kube_version,
        kustomize_helm: plan.kustomize_helm,
        ..Options::default()
    };
    (tools, options)
}

pub fn render(
    plan: &Plan,
    args: &RenderArgs,
    kube_version: kubeharden_core::k8s::KubeVersion,
) -> Renders {
    let (tools, options) = tools_options(plan, args, kube_version);
    let trees: Vec<render_job::Renders> = plan
        .trees
        .iter()
        .map(|tree| render_job::render(&tree.dir, &tree.roots, &tree.problems, &tools, &options))
        .collect();
    Renders {
        files: trees.iter().flat_map(|t| t.files.iter().cloned()).collect(),
        trees,
    }
}

/// The confirmed source fixes of one group of renders that share files.
pub struct GroupFixes {
    /// The directory argument the roots were found in.
    pub dir: PathBuf,
    pub confirmed: Confirmed,
}

impl GroupFixes {
    /// How a rendered finding's root and variant are shown: `charts/web (values.yaml)`.
    pub fn at(&self, f: &RenderedFinding) -> String {
        format!("{} ({})", display(&self.dir, &f.root), f.variant)
    }
}

/// Propose source fixes for every group of rendered variants that share files and confirm
/// them by rendering again ([`render_job::source_fixes`]); fixes below `min` are not proposed.
pub fn source_fixes(
    plan: &Plan,
    renders: &Renders,
    args: &RenderArgs,
    linter: &Linter,
    min: Applicability,
) -> Vec<GroupFixes> {
    let (tools, options) = tools_options(plan, args, linter.settings.kube_version);
    plan.trees
        .iter()
        .zip(&renders.trees)
        .flat_map(|(tree, rendered)| {
            render_job::source_fixes(
                &tree.dir,
                &tree.roots,
                rendered,
                linter,
                min,
                &tools,
                &options,
            )
            .into_iter()
            .map(|confirmed| GroupFixes {
                dir: tree.dir.clone(),
                confirmed,
            })
        })
        .collect()
}

/// Move the findings on rendered output to the repository files they come from, and add the
/// findings about roots that did not render; a finding that a confirmed source fix resolves
/// is fixable, at that fix's applicability.
pub fn place(
    report: &mut Report,
    plan: &Plan,
    renders: &Renders,
    linter: &Linter,
    fixes: &[GroupFixes],
) {
    for (tree, rendered) in plan.trees.iter().zip(&renders.trees) {
        let read = |rel: &str| read_inside(&tree.dir, rel);
        let show = |rel: &str| display(&tree.dir, rel);
        let failed = render_job::place(
            &mut report.findings,
            &tree.roots,
            rendered,
            linter,
            &read,
            &show,
        );
        report.findings.extend(failed);
    }
    let resolved: std::collections::HashMap<RenderedFinding, Applicability> = fixes
        .iter()
        .flat_map(|v| &v.confirmed.fixes)
        .flat_map(|f| f.resolves.iter().map(|r| (r.clone(), f.applicability)))
        .collect();
    for f in &mut report.findings {
        if let Some(a) = RenderedFinding::of(f).and_then(|k| resolved.get(&k)) {
            f.fixable = true;
            f.applicability = Some(*a);
        }
    }
    report.findings.sort_by(|a, b| {
        (&a.path, a.start, &a.rule, &a.message).cmp(&(&b.path, b.start, &b.rule, &b.message))
    });
    provenance::merge_renders(&mut report.findings);
}
