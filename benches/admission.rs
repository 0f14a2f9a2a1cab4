//! Admission webhook latency: validate and mutate p50/p99 over keep-alive HTTPS connections
//! at 500 requests/s, for a typical Deployment and a 50-container pod, server and load in one
//! process on the machine's cores. `cargo bench --bench admission`. Target: p99 under 5 ms.
//!
//! Latency is measured from each request's scheduled send time, so a request that waits for a
//! busy connection counts its wait (no coordinated omission); tokio's timer fires up to about
//! 1 ms late, which those figures include. Each case first runs 200 requests one at a time on
//! one connection: the service time, which says what rate the cores can sustain.
//!
//! Measured 2026-12-02 on the shared 2-core machine (load average about 12 from other work,
//! so well under two cores free), release build:
//!
//! | case | one at a time p50 / p99 | at 500 req/s p50 / p99 |
//! |---|---|---|
//! | Deployment (1.1 KB), validate | 0.35 / 0.63 ms | 1.87 / 8.96 ms |
//! | Deployment, mutate | 0.83 / 5.72 ms | 2.12 / 6.95 ms |
//! | 50-container pod (7.9 KB), validate | 2.10 / 10.5 ms | 98.8 / 352 ms (saturated) |
//! | 50-container pod, mutate | 4.98 / 32.1 ms | 4.6 / 8.8 s (saturated) |
//!
//! The 5 ms p99 target is missed at 500 req/s: a 50-container pod costs 2 ms (validate) and
//! 5 ms (mutate) of CPU, more than 500 req/s leaves on two cores.
//!
//! 2026-12-03, the same machine, load average 8 to 10 from three other builds and tests
//! (so often less than one core free), release build, before and after the linter's workload
//! kinds were built once per server and the linter stopped reading cgroup files per object
//! (`perf record` had both at 4% of a request):
//!
//! | case | before: one at a time / at 500 req/s p50, p99 | after |
//! |---|---|---|
//! | Deployment, validate | 0.65 / 1.50; 2.40 / 20.3 ms | 0.50 / 0.81; 2.04 / 9.40 ms |
//! | Deployment, mutate | 1.56 / 12.0; 2.73 / 97.9 ms | 0.89 / 4.91; 2.32 / 8.65 ms |
//! | 50-container pod, validate | 7.73 / 20.0; saturated | 3.67 / 20.6; saturated |
//! | 50-container pod, mutate | 15.6 / 46.2; saturated | 12.0 / 47.5; saturated |
//!
//! On a machine that busy the figures move by a factor of two between runs, and more: a
//! second run after (load 7 to 9) gave Deployment validate 0.63 / 30.7; 2.60 / 101 ms, mutate
//! 0.81 / 4.01; 4.37 / 95.0 ms, 50-container validate one at a time 3.99 / 20.4 ms. The
//! p99 at 500 req/s follows the other work on the cores, not the webhook; the target is not
//! shown met here and needs a quiet machine to judge. Where a request's CPU goes (`perf`, 50-container mutate dominating):
//! the fix passes (each lints and re-parses the object) 58%, the first parse of the object's
//! JSON text 13%, linting 11%, glibc malloc and free about a fifth of all of it.

#[allow(dead_code)]
#[path = "../tests/admission/support.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Client, TestServer, review};

const RATE: u64 = 500;
const SECONDS: u64 = 5;
const CONNECTIONS: u64 = 8;

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "storefront", "namespace": "shop", "labels": {"app": "storefront"}},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "storefront"}},
            "template": {
                "metadata": {"labels": {"app": "storefront"}},
                "spec": {"containers": [{
                    "name": "web", "image": "ghcr.io/acme/storefront:2.4.1",
                    "ports": [{"containerPort": 8080, "name": "http"}],
                    "env": [{"name": "MODE", "value": "production"}],
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                    "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}}
                }]}
            }
        }
    })
}

fn big_pod() -> Value {
    let containers: Vec<Value> = (0..50)
        .map(|i| {
            json!({
                "name": format!("c{i}"), "image": format!("registry.example.com/app{i}:1.0.{i}"),
                "ports": [{"containerPort": 8000 + i}],
                "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}}
            })
        })
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "wide", "namespace": "shop"},
        "spec": {"containers": containers}
    })
}

/// Service time: requests one after another on one connection, so none waits for another.
async fn serial(server: &TestServer, path: &str, object: &Value) -> (f64, f64) {
    let body = serde_json::to_vec(&review("CREATE", object, None)).unwrap();
    let mut client = server.client().await;
    let mut all = Vec::new();
    for _ in 0..200 {
        let sent = Instant::now();
        let (status, _) = client.request("POST", path, body.clone()).await;
        assert_eq!(status, 200);
        all.push(sent.elapsed().as_secs_f64() * 1000.0);
    }
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (percentile(&all, 0.5), percentile(&all, 0.99))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn load(server: &TestServer, path: &str, object: &Value) -> (f64, f64, f64) {
    let body = serde_json::to_vec(&review("CREATE", object, None)).unwrap();
    let per_connection = RATE / CONNECTIONS;
    let interval = Duration::from_secs_f64(1.0 / per_connection as f64);
    let start = Instant::now() + Duration::from_millis(200);
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let mut client: Client = server.client().await;
        let body = body.clone();
        let path = path.to_string();
        // Connections take turns, so requests arrive evenly at RATE in all.
        let offset = Duration::from_secs_f64(c as f64 / RATE as f64);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for i in 0..per_connection * SECONDS {
                let due = start + offset + interval * i as u32;
                tokio::time::sleep_until(due.into()).await;
                let (status, _) = client.request("POST", &path, body.clone()).await;
                assert_eq!(status, 200);
                latencies.push(due.elapsed().as_secs_f64() * 1000.0);
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        all[all.len() - 1],
    )
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let server = TestServer::start(None).await;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        println!(
            "admission webhook, {RATE} req/s for {SECONDS} s each over {CONNECTIONS} keep-alive HTTPS connections, {cores} cores"
        );
        for (name, object) in [("Deployment", deployment()), ("50-container pod", big_pod())] {
            let size = serde_json::to_vec(&review("CREATE", &object, None)).unwrap().len();
            for path in ["/validate/enforce/nsa", "/mutate/nsa"] {
                let (s50, s99) = serial(&server, path, &object).await;
                println!(
                    "{name:>17} ({size:>6} B) {path:<22} one at a time: p50 {s50:6.2} ms  p99 {s99:6.2} ms"
                );
                let (p50, p99, max) = load(&server, path, &object).await;
                println!(
                    "{name:>17} ({size:>6} B) {path:<22} p50 {p50:6.2} ms  p99 {p99:6.2} ms  max {max:7.2} ms"
                );
            }
        }
    });
}
