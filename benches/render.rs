//! Rendering and linting the shared GitOps trees (`KUBEHARDEN_GITOPS`, default
//! `../shared/gitops`) with the real `helm` and Kustomize on PATH: per root and variant, the
//! time in the child process (scratch copy included) and in lint + provenance; then every
//! chart rendered at once on all cores, as a pull request touching them would be.
//! `cargo bench --bench render`. Target: a pull request touching 10 charts reviewed within 2 s
//! on 2 cores.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kubeharden::renderers::{self, Options, Tools};
use kubeharden_core::lint::{Linter, Settings};
use kubeharden_core::provenance;
use kubeharden_core::roots::{self, Repo, RootKind};
use kubeharden_core::rules::Registry;
use kubeharden_core::source::SourceFile;

fn list(top: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            list(top, &path, out);
        } else {
            out.push(
                path.strip_prefix(top)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
}

fn main() {
    let gitops = std::env::var_os("KUBEHARDEN_GITOPS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/gitops"));
    if !gitops.is_dir() {
        eprintln!(
            "{} is not a directory; set KUBEHARDEN_GITOPS",
            gitops.display()
        );
        return;
    }
    let tools = Tools::find(None, None);
    let options = Options::default();
    let registry = Registry::builtin().unwrap();
    let linter = Linter::new(&registry, Settings::default());
    let mut trees: Vec<PathBuf> = std::fs::read_dir(&gitops)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    trees.sort();
    let (mut child_total, mut lint_total, mut findings_total) = (Duration::ZERO, Duration::ZERO, 0);
    let mut charts = Vec::new();
    println!(
        "{:<70} {:>9} {:>9} {:>8}",
        "root (variant)", "render ms", "lint ms", "findings"
    );
    for tree in &trees {
        let mut files = Vec::new();
        list(tree, tree, &mut files);
        let read = |p: &str| std::fs::read_to_string(tree.join(p)).ok();
        let found = roots::discover(&Repo::new(files, &read));
        for root in &found {
            for (v, variant) in root.variants.iter().enumerate() {
                let started = Instant::now();
                let Ok(output) = renderers::render(tree, root, v, &tools, &options) else {
                    continue;
                };
                let rendered = started.elapsed();
                let started = Instant::now();
                let file = SourceFile::new(provenance::rendered_path(root, variant), output.text);
                let mut report = linter.lint_files(std::slice::from_ref(&file));
                let sentinel = output.sentinel.as_ref();
                provenance::place(&mut report.findings, root, variant, &file, sentinel, &read);
                let linted = started.elapsed();
                child_total += rendered;
                lint_total += linted;
                findings_total += report.findings.len();
                let name = format!(
                    "{}/{} ({})",
                    tree.file_name().unwrap().to_string_lossy(),
                    root.name(),
                    variant.name
                );
                println!(
                    "{name:<70} {:>9.1} {:>9.1} {:>8}",
                    rendered.as_secs_f64() * 1e3,
                    linted.as_secs_f64() * 1e3,
                    report.findings.len()
                );
            }
            if root.kind == RootKind::Helm {
                charts.push((tree.clone(), root.clone()));
            }
        }
    }
    let total = child_total + lint_total;
    println!(
        "total: {:.0} ms, {:.0}% in child processes (render {:.0} ms, lint + provenance {:.0} ms), {findings_total} findings",
        total.as_secs_f64() * 1e3,
        100.0 * child_total.as_secs_f64() / total.as_secs_f64().max(1e-9),
        child_total.as_secs_f64() * 1e3,
        lint_total.as_secs_f64() * 1e3,
    );
    // All charts at once, on every core: the render half of a pull request touching them.
    let started = Instant::now();
    let done = kubeharden_core::lint::parallel_map(&charts, |(tree, root)| {
        renderers::render(tree, root, 0, &tools, &options).is_ok()
    });
    println!(
        "{} charts rendered in parallel on {} cores: {:.0} ms wall ({} ok)",
        charts.len(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        started.elapsed().as_secs_f64() * 1e3,
        done.iter().filter(|ok| **ok).count()
    );
}
