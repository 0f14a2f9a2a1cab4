//! A signed delivery while N clients upload 24 MB bodies slowly (32 KiB a second, above the
//! default minimum rate, with a signature that only the body refutes): the answer time of the
//! delivery (p50 and worst of 10) and the process's resident memory with the clients connected,
//! against the same with none. The server runs under its default limits, in process.
//! `cargo bench --all-features --bench slow_clients` (`--profile dev` reuses the test build).
//! Target: the answer time does not grow with N, and memory stays within the body budget
//! (64 MiB) plus about a hundred KiB of buffers per client.

#[path = "../tests/app/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use support::{Harness, REPO, deliver_to, pull_request_event};

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n    - name: c\n      image: nginx:1.27\n";

fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

/// A client that declares 24 MB and sends 32 KiB a second until it is cut off or aborted.
async fn slow_client(url: String, chunk: Arc<Vec<u8>>) {
    let addr = url.trim_start_matches("http://").to_string();
    let Ok(mut stream) = tokio::net::TcpStream::connect(&addr).await else {
        return;
    };
    let head = format!(
        "POST /api/github/webhooks HTTP/1.1\r\nHost: {addr}\r\nX-GitHub-Event: pull_request\r\n\
         X-GitHub-Delivery: slow\r\nX-Hub-Signature-256: sha256={}\r\nContent-Length: {}\r\n\r\n",
        "0".repeat(64),
        24 * 1024 * 1024
    );
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    loop {
        if stream.write_all(&chunk).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
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
        h.github.commit(REPO, "head", &[("pod.yaml", POD)]);
        h.github.open_pr(REPO, 1, "base", "head");
        let chunk = Arc::new(vec![b' '; 32 * 1024]);
        // A first delivery warms the token cache, as a running server has.
        h.deliver("pull_request", &pull_request_event("opened", 1, "base", "head"))
            .await;
        let mut round = 0;
        for n in [0usize, 50, 200, 500] {
            let before = rss();
            let clients: Vec<_> = (0..n)
                .map(|_| tokio::spawn(slow_client(h.url.clone(), chunk.clone())))
                .collect();
            // Let every client connect and send a few seconds' worth.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let mut times = Vec::new();
            for _ in 0..10 {
                round += 1;
                let event = pull_request_event("synchronize", 1, "base", "head");
                let sent = Instant::now();
                let status = deliver_to(
                    &h.url,
                    "pull_request",
                    &event,
                    Some(support::SECRET),
                    &format!("bench-{round}"),
                )
                .await;
                times.push(sent.elapsed().as_secs_f64() * 1000.0);
                assert_eq!(status, 202);
                h.state.wait_idle().await;
            }
            let during = rss();
            for c in &clients {
                c.abort();
            }
            times.sort_by(f64::total_cmp);
            println!(
                "{n:>3} slow clients: signed delivery answered in {:.1} ms (p50), {:.1} ms (worst of 10); RSS {} MiB with them connected ({:+} MiB), body buffer peak {} KiB",
                times[times.len() / 2],
                times[times.len() - 1],
                during >> 20,
                (during as i64 - before as i64) >> 20,
                h.state.body_budget.peak() >> 10,
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        h.github.take_reviews();
        h.github.take_check_runs();
    });
}
