//! The webhook's metrics: decisions by path (mode or mutate), profile, namespace and outcome;
//! findings by rule; requests refused before a decision; a latency histogram. Held per server
//! (tests run several in one process), rendered in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use crate::metrics::{family, label};

/// Upper bounds of the latency histogram, in seconds: fine below the 5 ms target, and up to
/// the 10 s that is the API server's default webhook timeout.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

type DecisionKey = (String, String, String, String);
type RuleKey = (String, String, String, String);

#[derive(Default)]
struct Inner {
    /// (path, profile, namespace, outcome) → count.
    decisions: BTreeMap<DecisionKey, u64>,
    /// (path, profile, namespace, rule) → findings.
    findings: BTreeMap<RuleKey, u64>,
    rejected: BTreeMap<String, u64>,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
pub struct Metrics(Mutex<Inner>);

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn decision(
        &self,
        path: &str,
        profile: &str,
        namespace: &str,
        outcome: &str,
        rules: &BTreeMap<String, usize>,
        seconds: f64,
    ) {
        self.with(|m| {
            let key = |last: &str| {
                (
                    path.to_string(),
                    profile.to_string(),
                    namespace.to_string(),
                    last.to_string(),
                )
            };
            *m.decisions.entry(key(outcome)).or_default() += 1;
            for (rule, n) in rules {
                *m.findings.entry(key(rule)).or_default() += *n as u64;
            }
            for (i, bound) in BUCKETS.iter().enumerate() {
                if seconds <= *bound {
                    m.buckets[i] += 1;
                }
            }
            m.count += 1;
            m.sum += seconds;
        });
    }

    /// A request refused before any decision (`malformed`; over the body limit is axum's 413).
    pub fn rejected(&self, reason: &str) {
        self.with(|m| *m.rejected.entry(reason.to_string()).or_default() += 1);
    }

    pub fn render(&self) -> String {
        self.with(|m| {
            let mut out = String::new();
            let labelled = |(path, profile, namespace, last): &(String, String, String, String),
                            name: &'static str| {
                vec![
                    ("path", path.clone()),
                    ("profile", profile.clone()),
                    ("namespace", namespace.clone()),
                    (name, last.clone()),
                ]
            };
            let decisions: Vec<_> = m
                .decisions
                .iter()
                .map(|(k, n)| (labelled(k, "outcome"), *n))
                .collect();
            family(
                &mut out,
                "kubeharden_admission_decisions_total",
                "counter",
                "Admission reviews by path (enforce, warn, audit, mutate), profile, namespace and outcome.",
                decisions
                    .iter()
                    .map(|(l, n)| (l.iter().map(|(k, v)| (*k, v.as_str())).collect(), n)),
            );
            let findings: Vec<_> = m
                .findings
                .iter()
                .map(|(k, n)| (labelled(k, "rule"), *n))
                .collect();
            family(
                &mut out,
                "kubeharden_admission_findings_total",
                "counter",
                "Findings in admission reviews by path, profile, namespace and rule.",
                findings
                    .iter()
                    .map(|(l, n)| (l.iter().map(|(k, v)| (*k, v.as_str())).collect(), n)),
            );
            family(
                &mut out,
                "kubeharden_admission_rejected_total",
                "counter",
                "Requests answered with an HTTP error before any decision, by reason.",
                m.rejected
                    .iter()
                    .map(|(r, n)| (vec![("reason", r.as_str())], n)),
            );
            let name = "kubeharden_admission_duration_seconds";
            let _ = writeln!(out, "# HELP {name} Time from request to decision.");
            let _ = writeln!(out, "# TYPE {name} histogram");
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{le=\"{}\"}} {}",
                    label(&bound.to_string()),
                    m.buckets[i]
                );
            }
            let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", m.count);
            let _ = writeln!(out, "{name}_sum {}", m.sum);
            let _ = writeln!(out, "{name}_count {}", m.count);
            out
        })
    }
}
