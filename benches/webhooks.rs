//! Webhook acknowledgement latency under load, on loopback, with valid signatures: p50 and p99
//! at 200 and 1000 requests per second (SQLite store, the default), then how many review jobs
//! per second the workers complete against the fake GitHub. `cargo bench --bench webhooks`.
//! Target: p99 under 20 ms at 200 requests/s on a 2-core machine.

#[path = "../tests/app/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{Harness, REPO, deliver_to, pull_request_event};

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: NAME\nspec:\n  containers:\n    - name: c\n      image: nginx:1.27\n";

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn load(h: &Harness, rate: u64, seconds: u64, first_pr: u64) -> (f64, f64, usize) {
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let url = h.url.clone();
        let pr = first_pr + i;
        tasks.push(tokio::spawn(async move {
            let event = pull_request_event("opened", pr, "base", &format!("head{}", pr % 50));
            let sent = Instant::now();
            let status = deliver_to(
                &url,
                "pull_request",
                &event,
                Some(support::SECRET),
                &format!("bench-{pr}"),
            )
            .await;
            (status, sent.elapsed().as_secs_f64() * 1000.0)
        }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    let mut errors = 0;
    for t in tasks {
        let (status, ms) = t.await.unwrap();
        if status != 202 {
            errors += 1;
        }
        latencies.push(ms);
    }
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        errors,
    )
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let h = Harness::start().await;
        h.github.commit(REPO, "base", &[]);
        for i in 0..50 {
            h.github.commit(REPO, &format!("head{i}"), &[("pod.yaml", &POD.replace("NAME", &format!("p{i}")))]);
        }
        for pr in 0..5000u64 {
            h.github.open_pr(REPO, pr, "base", &format!("head{}", pr % 50));
        }
        let (p50, p99, errors) = load(&h, 200, 5, 0).await;
        println!("200 requests/s for 5 s: acknowledgement p50 {p50:.1} ms, p99 {p99:.1} ms, {errors} not 202");
        let (p50, p99, errors) = load(&h, 1000, 3, 1000).await;
        println!("1000 requests/s for 3 s: acknowledgement p50 {p50:.1} ms, p99 {p99:.1} ms, {errors} not 202");
        // Drain what the load queued and time the workers.
        let pending = h.state.store.pending().await.unwrap();
        let start = Instant::now();
        h.wait_all_idle().await;
        let secs = start.elapsed().as_secs_f64();
        let done = h.state.store.counts().await.unwrap();
        println!("drained {pending} queued jobs in {secs:.1} s ({:.0} jobs/s with 2 workers); jobs by state: {done:?}", pending as f64 / secs.max(0.001));
        h.github.take_reviews();
        h.github.take_check_runs();
    });
}
