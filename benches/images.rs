//! What reading image configurations adds to a review: a pull request of 20 manifests with 20
//! distinct images, reviewed by the app against the fake GitHub, without registry access, with
//! it and every configuration read from the registry (cold), and with it again (the client's
//! cache by manifest digest: the tag's manifest is still asked for, the config blob and layers
//! are not). The registry is Debian's real `docker-registry` on loopback, with the images pushed
//! by the bench: half run as UID 1000 (config blob only), half as a named user whose
//! `/etc/passwd` sits under another layer (config blob and two layers read). Then each image
//! alone, read cold and cached by a client of its own.
//!
//! `cargo bench --features app --bench images` (skips without `docker-registry`).

#[path = "../tests/registry/mod.rs"]
mod registry;
#[path = "../tests/app/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kubeharden::oci::OciClient;
use support::{Harness, REPO, pull_request_event};

const IMAGES: usize = 20;
const ROUNDS: usize = 5;

fn manifest(domain: &str, i: usize) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: app-{i}
spec:
  template:
    spec:
      containers:
        - name: app
          image: {domain}/bench/app-{i}:1
          resources:
            limits: {{cpu: 100m, memory: 64Mi}}
"
    )
}

fn client(domain: &str) -> Arc<OciClient> {
    let mut client = OciClient::new(Default::default(), Duration::from_secs(10)).unwrap();
    client.set_insecure_http_hosts(vec![domain.to_string()]);
    client.guard_network(vec![domain.to_string()]);
    Arc::new(client)
}

/// A harness with the 20-manifest pull request (#2) and a README-only one (#1) whose review
/// warms the installation token without reading any image.
async fn harness(oci: Option<Arc<OciClient>>, domain: &str) -> Harness {
    let h = Harness::start_with_images(None, oci, vec![domain.to_string()]).await;
    let files: Vec<(String, String)> = (0..IMAGES)
        .map(|i| (format!("apps/app-{i:02}.yaml"), manifest(domain, i)))
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    h.github.commit(REPO, "base", &[]);
    h.github.commit(REPO, "head", &refs);
    h.github.commit(REPO, "readme", &[("README.md", "hello\n")]);
    h.github.open_pr(REPO, 1, "base", "readme");
    h.github.open_pr(REPO, 2, "base", "head");
    h.deliver(
        "pull_request",
        &pull_request_event("synchronize", 1, "base", "readme"),
    )
    .await;
    h
}

async fn review(h: &Harness) -> f64 {
    let start = Instant::now();
    h.deliver(
        "pull_request",
        &pull_request_event("synchronize", 2, "base", "head"),
    )
    .await;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    h.github.take_check_runs();
    h.github.take_reviews();
    ms
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let Some(registry) = registry::start_registry().await else {
            return;
        };
        let (base, domain) = (registry.base.clone(), registry.domain.clone());
        let passwd = b"root:x:0:0:root:/root:/bin/sh\napp:x:10001:10001::/home/app:/sbin/nologin\n";
        let content: Vec<u8> = (0..64 * 1024).map(|i| (i * 7 % 251) as u8).collect();
        for i in 0..IMAGES {
            let name = format!("bench/app-{i}");
            if i % 2 == 0 {
                let config = format!(r#"{{"User":"1000","Env":["APP={i}"]}}"#);
                registry::tag(&base, &name, "1", &config, &[registry::layer(&[])]).await;
            } else {
                let config = format!(
                    r#"{{"User":"app","Env":["APP={i}"],"Volumes":{{"/var/cache/app":{{}}}}}}"#
                );
                let layers = [
                    registry::layer(&[("etc/passwd", passwd), ("etc/group", b"app:x:10001:\n")]),
                    registry::layer(&[("srv/app/bundle.bin", &content)]),
                ];
                registry::tag(&base, &name, "1", &config, &layers).await;
            }
        }

        let plain = harness(None, &domain).await;
        let mut without = Vec::new();
        for _ in 0..ROUNDS {
            without.push(review(&plain).await);
        }
        drop(plain);

        let mut cold = Vec::new();
        let mut cached = Vec::new();
        for _ in 0..3 {
            let h = harness(Some(client(&domain)), &domain).await;
            cold.push(review(&h).await);
            for _ in 0..ROUNDS {
                cached.push(review(&h).await);
            }
        }
        let (without, cold, cached) = (median(without), median(cold), median(cached));
        println!(
            "review of {IMAGES} manifests, {IMAGES} distinct images (median):\n  without inspection {without:.0} ms\n  with inspection, cold {cold:.0} ms: +{:.0} ms, {:.1} ms per image\n  with inspection, cached {cached:.0} ms: +{:.0} ms, {:.1} ms per image",
            cold - without,
            (cold - without) / IMAGES as f64,
            cached - without,
            (cached - without) / IMAGES as f64,
        );

        // Each image alone, one after another: what one read costs.
        for (label, named) in [("UID 1000, config blob", false), ("named user, config blob and 2 layers", true)] {
            let mut cold = Vec::new();
            let mut warm = Vec::new();
            for i in (0..IMAGES).filter(|i| (i % 2 == 1) == named) {
                let c = client(&domain);
                let path = format!("bench/app-{i}");
                for round in 0..=ROUNDS {
                    let start = Instant::now();
                    let config = c.image_config(&domain, &path, "1", "linux/amd64").await.unwrap();
                    let ms = start.elapsed().as_secs_f64() * 1000.0;
                    assert_eq!(config.names.is_some(), named);
                    if round == 0 { cold.push(ms) } else { warm.push(ms) }
                }
            }
            println!(
                "one image ({label}): cold {:.2} ms, cached {:.2} ms (median of {} and {})",
                median(cold.clone()),
                median(warm.clone()),
                cold.len(),
                warm.len()
            );
        }
    });
}
