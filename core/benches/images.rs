//! Image work that runs on every review with image rules: parsing references, and reading a
//! scanner's report. `cargo bench --bench images`. Targets on a 2-core machine: a million
//! references in under a second; a 40 000-finding (12 MB) Trivy report in under 0.5 s and
//! under 100 MB.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::peak_rss_mb;

fn best_of<T>(rounds: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::MAX;
    let mut last = None;
    for _ in 0..rounds {
        let start = Instant::now();
        last = Some(f());
        best = best.min(start.elapsed().as_secs_f64());
    }
    (best, last.expect("at least one round"))
}

fn main() {
    let json = common::trivy_report(40_000);
    let (secs, report) = best_of(5, || {
        kubeharden_core::vuln::parse_trivy(json.as_bytes()).unwrap()
    });
    println!(
        "parse_trivy: {:.1} MB, {} findings: best of 5 {secs:.3} s, {:.0} MB/s; peak RSS {}",
        json.len() as f64 / 1e6,
        report.vulnerabilities.len(),
        json.len() as f64 / 1e6 / secs,
        peak_rss_mb().map_or("n/a".into(), |m| format!("{m:.0} MB"))
    );
    // After the report, so its peak memory is the report's alone.
    // A mix as manifests hold them: Docker Hub short names, registries with ports, digests.
    let digest = format!("sha256:{}", "a".repeat(64));
    let refs: Vec<String> = (0..1_000_000)
        .map(|i| match i % 5 {
            0 => format!("nginx:1.{}", i % 30),
            1 => format!("ghcr.io/acme/team{}/api:{}.0.1", i % 50, i % 9),
            2 => format!("registry.internal:5000/a/b/c{}@{digest}", i % 7),
            3 => format!("bitnami/redis{}", i % 11),
            _ => format!("quay.io/org/app:v{}-rc.1@{digest}", i % 13),
        })
        .collect();
    let (secs, ok) = best_of(5, || {
        refs.iter()
            .filter(|r| kubeharden_core::image::parse(r).is_ok())
            .count()
    });
    assert_eq!(ok, refs.len());
    println!(
        "image::parse: {} references: best of 5 {secs:.3} s, {:.0} ns each",
        refs.len(),
        secs * 1e9 / refs.len() as f64
    );
}
