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

pub(crate) fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition text; `jobs` are the current job counts by state.
pub fn render(jobs: &[(String, i64)]) -> String {
    with(|m| {
        let mut out = String::new();
        family(
            &mut out,
            "kubeharden_deliveries_total",
            "counter",
            "Webhook deliveries by event and outcome.",
            m.deliveries.iter().map(|((event, outcome), n)| {
                (
                    vec![("event", event.as_str()), ("outcome", outcome.as_str())],
                    n,
                )
            }),
        );
        family(
            &mut out,
            "kubeharden_jobs",
            "gauge",
            "Jobs by state.",
            jobs.iter()
                .map(|(state, n)| (vec![("state", state.as_str())], n)),
        );
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
        let statuses: Vec<(String, u64)> = m
            .github_requests
            .iter()
            .map(|(status, n)| (status.to_string(), *n))
            .collect();
        family(
            &mut out,
            "kubeharden_github_requests_total",
            "counter",
            "GitHub API answers by status.",
            statuses
                .iter()
                .map(|(s, n)| (vec![("status", s.as_str())], n)),
        );
        if let Some(remaining) = m.ratelimit_remaining {
            family(
                &mut out,
                "kubeharden_github_ratelimit_remaining",
                "gauge",
                "Requests left in the current rate-limit window.",
                [(vec![], remaining)],
            );
        }
        family(
            &mut out,
            "kubeharden_findings_total",
            "counter",
            "Findings reported in reviews, by rule.",
            m.findings
                .iter()
                .map(|(rule, n)| (vec![("rule", rule.as_str())], n)),
        );
        family(
            &mut out,
            "kubeharden_image_scans_total",
            "counter",
            "Image scans by outcome (scanned, cached, failed).",
            m.scans
                .iter()
                .map(|(outcome, n)| (vec![("outcome", outcome.as_str())], n)),
        );
        out
    })
}

/// One metric family: its HELP and TYPE lines, then a sample per set of labels.
pub(crate) fn family<'a, V: std::fmt::Display>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Vec<(&'static str, &'a str)>, V)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
            .collect();
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{}}} {value}", labels.join(","));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_in_the_exposition_format() {
        github_request(200, Some(42));
        scan("cached");
        delivery("ping", "a \"quoted\" outcome");
        let text = render(&[("queued".to_string(), 3)]);
        for line in [
            "# HELP kubeharden_github_ratelimit_remaining Requests left in the current rate-limit window.\n",
            "# TYPE kubeharden_github_ratelimit_remaining gauge\nkubeharden_github_ratelimit_remaining 42\n",
            "# TYPE kubeharden_image_scans_total counter\n",
            "kubeharden_image_scans_total{outcome=\"cached\"} ",
            "kubeharden_jobs{state=\"queued\"} 3\n",
            "kubeharden_deliveries_total{event=\"ping\",outcome=\"a \\\"quoted\\\" outcome\"} 1\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
