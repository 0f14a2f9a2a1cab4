//! The GitHub App against the fake GitHub on loopback: time from webhook delivery to the posted
//! review for pull requests of 1, 10 and 100 manifests, and the GitHub API calls each took.
//! `cargo bench --bench app`. Target: under 1 s for 100 manifests; calls that grow with pages
//! of files, not with findings.

#[path = "../tests/app/support/mod.rs"]
mod support;

use std::time::Instant;

use support::{Harness, REPO, pull_request_event};

const MANIFEST: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: NAME
  namespace: shop
spec:
  template:
    spec:
      containers:
        - name: web
          image: ghcr.io/acme/NAME:2.4.1
        - name: sidecar
          image: envoyproxy/envoy
          ports:
            - containerPort: 9901
              hostPort: 9901
";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for (n, number) in [(1usize, 1u64), (10, 2), (100, 3)] {
            let h = Harness::start().await;
            let files: Vec<(String, String)> = (0..n)
                .map(|i| (format!("apps/app-{i:03}.yaml"), MANIFEST.replace("NAME", &format!("app-{i}"))))
                .collect();
            let refs: Vec<(&str, &str)> = files.iter().map(|(p, c)| (p.as_str(), c.as_str())).collect();
            h.github.commit(REPO, "base", &[]);
            h.github.commit(REPO, "head", &refs);
            h.github.open_pr(REPO, number, "base", "head");
            // A first delivery warms the token cache, as a running server has.
            let mut best = f64::MAX;
            let mut calls = 0;
            for round in 0..4 {
                let before = h.github.calls().len();
                let start = Instant::now();
                h.deliver("pull_request", &pull_request_event("synchronize", number, "base", "head")).await;
                let elapsed = start.elapsed().as_secs_f64();
                if round > 0 {
                    best = best.min(elapsed);
                    calls = h.github.calls().len() - before;
                }
            }
            let findings: usize = h.github.take_check_runs().last().map_or(0, |r| r.annotations.len());
            h.github.take_reviews();
            println!("{n:>3} manifests: webhook to review {:.0} ms (best of 3), {calls} GitHub API calls, {findings} findings", best * 1000.0);
        }
    });
}
