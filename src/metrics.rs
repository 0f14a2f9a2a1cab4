//! Prometheus metrics in the text exposition format, kept in process (a handful of counters,
//! gauges and one histogram do not need a metrics library).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Upper bounds of the job-duration histogram, in seconds.
const BUCKETS: [f64; 9] = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

#[derive(Default)]
struct Inner {
    deliveries: BTreeMap<(String, String), u64>,
    github_requests: BTreeMap<u16, u64>,
    ratelimit_remaining: Option<i64>,
    findings: BTreeMap<String, u64>,
    scans: BTreeMap<String, u64>,
    job_buckets: [u64; BUCKETS.len()],
    job_count: u64,
    job_sum: f64,
}

static METRICS: Mutex<Option<Inner>> = Mutex::new(None);

fn with<R>(f: impl FnOnce(&mut Inner) -> R) -> R {
    let mut guard = METRICS.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(Inner::default))
}

/// A webhook delivery and what became of it (queued, duplicate, ignored, unauthorized, …).
pub fn delivery(event: &str, outcome: &str) {
    with(|m| {
        *m.deliveries
            .entry((event.to_string(), outcome.to_string()))
            .or_default() += 1
    });
}

/// A GitHub API answer, with the rate-limit budget it reported, if any.
pub fn github_request(status: u16, ratelimit_remaining: Option<i64>) {
    with(|m| {
        *m.github_requests.entry(status).or_default() += 1;
        if ratelimit_remaining.is_some() {
            m.ratelimit_remaining = ratelimit_remaining;
        }
    });
}

pub fn findings(rule: &str, count: usize) {
    with(|m| *m.findings.entry(rule.to_string()).or_default() += count as u64);
}

/// An image scan: `scanned`, `cached` or `failed`.
pub fn scan(outcome: &str) {
    with(|m| *m.scans.entry(outcome.to_string()).or_default() += 1);
}

pub fn job_finished(seconds: f64) {
    with(|m| {
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                m.job_buckets[i] += 1;
            }
        }
        m.job_count += 1;
        m.job_sum += seconds;
    });
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition text; `jobs` are the current job counts by state.
pub fn render(jobs: &[(String, i64)]) -> String {
    with(|m| {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP kubeharden_deliveries_total Webhook deliveries by event and outcome."
        );
        let _ = writeln!(out, "# TYPE kubeharden_deliveries_total counter");
        for ((event, outcome), n) in &m.deliveries {
            let _ = writeln!(
                out,
                "kubeharden_deliveries_total{{event=\"{}\",outcome=\"{}\"}} {n}",
                label(event),
                label(outcome)
            );
        }
        let _ = writeln!(out, "# HELP kubeharden_jobs Jobs by state.");
        let _ = writeln!(out, "# TYPE kubeharden_jobs gauge");
        for (state, n) in jobs {
            let _ = writeln!(out, "kubeharden_jobs{{state=\"{}\"}} {n}", label(state));
        }
        let _ = writeln!(
            out,
            "# HELP kubeharden_job_duration_seconds Time a review job took."
        );
        let _ = writeln!(out, "# TYPE kubeharden_job_duration_seconds histogram");
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "kubeharden_job_duration_seconds_bucket{{le=\"{bound}\"}} {}",
                m.job_buckets[i]
            );
        }
        let _ = writeln!(
            out,
            "kubeharden_job_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            m.job_count
        );
        let _ = writeln!(out, "kubeharden_job_duration_seconds_sum {}", m.job_sum);
        let _ = writeln!(out, "kubeharden_job_duration_seconds_count {}", m.job_count);
        let _ = writeln!(
            out,
            "# HELP kubeharden_github_requests_total GitHub API answers by status."
        );
        let _ = writeln!(out, "# TYPE kubeharden_github_requests_total counter");
        for (status, n) in &m.github_requests {
            let _ = writeln!(
                out,
                "kubeharden_github_requests_total{{status=\"{status}\"}} {n}"
            );
        }
        if let Some(remaining) = m.ratelimit_remaining {
            let _ = writeln!(
                out,
                "# HELP kubeharden_github_ratelimit_remaining Requests left in the current rate-limit window."
            );
            let _ = writeln!(out, "# TYPE kubeharden_github_ratelimit_remaining gauge");
            let _ = writeln!(out, "kubeharden_github_ratelimit_remaining {remaining}");
        }
        let _ = writeln!(
            out,
            "# HELP kubeharden_findings_total Findings reported in reviews, by rule."
        );
        let _ = writeln!(out, "# TYPE kubeharden_findings_total counter");
        for (rule, n) in &m.findings {
            let _ = writeln!(
                out,
                "kubeharden_findings_total{{rule=\"{}\"}} {n}",
                label(rule)
            );
        }
        let _ = writeln!(
            out,
            "# HELP kubeharden_image_scans_total Image scans by outcome (scanned, cached, failed)."
        );
        let _ = writeln!(out, "# TYPE kubeharden_image_scans_total counter");
        for (outcome, n) in &m.scans {
            let _ = writeln!(
                out,
                "kubeharden_image_scans_total{{outcome=\"{}\"}} {n}",
                label(outcome)
            );
        }
        out
    })
}
