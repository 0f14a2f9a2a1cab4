//! Lint throughput on the real-world corpus: `KUBEHARDEN_CORPUS=../shared/corpus cargo bench`.
//!
//! Reports wall time, MB/s and the process's peak resident memory (VmHWM) for the whole corpus
//! and for `all-workloads.yaml`. Targets on a 2-core machine: the whole corpus in under 1 s and
//! under 100 MB.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;

use common::{peak_rss_mb, yaml_files};
use std::time::Instant;

use kubeharden_core::lint::{Linter, Settings};
use kubeharden_core::rules::Registry;
use kubeharden_core::source::SourceFile;

fn run(name: &str, paths: &[PathBuf], rounds: usize) {
    let registry = Registry::builtin().unwrap();
    let linter = Linter::new(&registry, Settings::default());
    let mut best = f64::MAX;
    let mut bytes = 0;
    let mut findings = 0;
    for _ in 0..rounds {
        let start = Instant::now();
        // Reading is part of the job, as it is for the CLI.
        let sources: Vec<SourceFile> = paths
            .iter()
            .map(|p| SourceFile::new(p.display().to_string(), std::fs::read_to_string(p).unwrap()))
            .collect();
        bytes = sources.iter().map(|s| s.text.len()).sum::<usize>();
        let report = linter.lint_files(&sources);
        findings = report.findings.len();
        best = best.min(start.elapsed().as_secs_f64());
    }
    let mb = bytes as f64 / 1e6;
    println!(
        "{name}: {} files, {mb:.1} MB, {findings} findings: best of {rounds} {:.3} s, {:.1} MB/s",
        paths.len(),
        best,
        mb / best
    );
}

fn main() {
    let Some(dir) = std::env::var_os("KUBEHARDEN_CORPUS").map(PathBuf::from) else {
        eprintln!(
            "set KUBEHARDEN_CORPUS to the corpus directory (../shared/corpus) to run the benchmark"
        );
        return;
    };
    let mut files = Vec::new();
    yaml_files(&dir, &mut files);
    files.sort();
    run("all-workloads.yaml", &[dir.join("all-workloads.yaml")], 10);
    run("whole corpus", &files, 5);
    if let Some(peak) = peak_rss_mb() {
        println!("peak resident memory: {peak:.1} MB");
    }
}
