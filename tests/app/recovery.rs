//! Creating requests whose answer is a 5xx: the job looks for what it created and sends again
//! within itself, seconds later, never twice, instead of failing into the queue's retries.

use std::time::Instant;

use crate::support::{Harness, REPO, pull_request_event};
use kubeharden::jobs::JobState;

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n    - name: c\n      image: nginx:1.27\n";

async fn pr(number: u64) -> Harness {
    let h = Harness::start().await;
    h.github.commit(REPO, "base", &[]);
    h.github.commit(REPO, "head", &[("pod.yaml", POD)]);
    h.github.open_pr(REPO, number, "base", "head");
    h
}

/// The one job, done on its first attempt: everything happened within it.
async fn done_in_one_attempt(h: &Harness) {
    let jobs = h.state.store.list(None, 10).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        (jobs[0].state, jobs[0].attempts),
        (JobState::Done, 1),
        "{:?}",
        jobs[0].last_error
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_502s_on_posting_the_review_post_it_once_within_the_job() {
    let h = pr(31).await;
    // Nothing created: the proxy fails the request three times before GitHub sees it.
    h.github
        .fail(http::Method::POST, "/pulls/31/reviews", 502, &[], 3);
    let started = Instant::now();
    h.deliver(
        "pull_request",
        &pull_request_event("opened", 31, "base", "head"),
    )
    .await;
    println!(
        "502 x3 on POST reviews -> review posted in {} ms (test backoff: 40 + 80 + 160 ms; \
         by default 1 + 2 + 4 s)",
        started.elapsed().as_millis()
    );
    assert_eq!(h.github.take_reviews().len(), 1, "exactly one review");
    let posts = h
        .github
        .calls()
        .iter()
        .filter(|c| c.starts_with("POST") && c.contains("/pulls/31/reviews"))
        .count();
    assert_eq!(posts, 4, "three failed sends and one that worked");
    assert_eq!(h.github.take_check_runs()[0].status, "completed");
    done_in_one_attempt(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_502_after_the_review_or_check_run_was_created_is_found_not_sent_again() {
    let h = pr(32).await;
    // GitHub creates each, then a proxy answers 502.
    h.github
        .fail_after(http::Method::POST, "/pulls/32/reviews", 502, 1);
    h.github
        .fail_after(http::Method::POST, "/check-runs", 502, 1);
    h.deliver(
        "pull_request",
        &pull_request_event("opened", 32, "base", "head"),
    )
    .await;
    assert_eq!(h.github.take_reviews().len(), 1, "one review");
    let runs = h.github.take_check_runs();
    assert_eq!(runs.len(), 1, "one check run");
    assert_eq!(runs[0].status, "completed");
    let sends = |path: &str| {
        h.github
            .calls()
            .iter()
            .filter(|c| c.starts_with("POST") && c.ends_with(path))
            .count()
    };
    assert_eq!(sends("/pulls/32/reviews"), 1);
    assert_eq!(sends("/check-runs"), 1);
    done_in_one_attempt(&h).await;
}
