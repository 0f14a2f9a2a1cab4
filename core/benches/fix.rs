//! Fix throughput on the real-world corpus: `KUBEHARDEN_CORPUS=../shared/corpus cargo bench
//! --bench fix`. Every file is fixed with unsafe fixes included (the most work), to the point
//! where nothing changes any more. Reports wall time, MB/s and peak resident memory (VmHWM).
//! Target on a 2-core machine: the whole corpus in under 2 s and under 150 MB.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;

use common::{peak_rss_mb, yaml_files};
use std::time::Instant;

use kubeharden_core::fix::fix_file;
use kubeharden_core::lint::{Linter, Settings};
use kubeharden_core::rules::{Applicability, Registry};
use kubeharden_core::source::SourceFile;

fn main() {
    let Some(dir) = std::env::var_os("KUBEHARDEN_CORPUS").map(PathBuf::from) else {
        eprintln!(
            "set KUBEHARDEN_CORPUS to the corpus directory (../shared/corpus) to run the benchmark"
        );
        return;
    };
    let mut paths = Vec::new();
    yaml_files(&dir, &mut paths);
    paths.sort();
    let registry = Registry::builtin().unwrap();
    let linter = Linter::new(&registry, Settings::default());
    let rounds = 3;
    let mut best = f64::MAX;
    let (mut bytes, mut changed, mut fixed) = (0, 0, 0);
    for _ in 0..rounds {
        let start = Instant::now();
        // Files are fixed on two threads, as the CLI's lint does; each thread reads its own.
        let next = std::sync::atomic::AtomicUsize::new(0);
        let totals = std::thread::scope(|s| {
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        let (mut bytes, mut changed, mut fixed) = (0, 0, 0);
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(p) = paths.get(i) else { break };
                            let file = SourceFile::new(
                                p.display().to_string(),
                                std::fs::read_to_string(p).unwrap(),
                            );
                            bytes += file.text.len();
                            let r = fix_file(&linter, &file, Applicability::Unsafe).unwrap();
                            changed += usize::from(r.fixed != file.text);
                            fixed += r.fixed_findings.len();
                        }
                        (bytes, changed, fixed)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap())
                .fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2))
        });
        (bytes, changed, fixed) = totals;
        best = best.min(start.elapsed().as_secs_f64());
    }
    let mb = bytes as f64 / 1e6;
    println!(
        "fix whole corpus: {} files ({changed} changed, {fixed} findings fixed), {mb:.1} MB: best of {rounds} {best:.3} s, {:.1} MB/s",
        paths.len(),
        mb / best
    );
    if let Some(peak) = peak_rss_mb() {
        println!("peak resident memory: {peak:.1} MB");
    }
}
