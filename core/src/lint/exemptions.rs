//! Exemption annotations on a workload: KubeHarden's own (`kubeharden.dev/ignore` with a
//! reason), and those users already write for Polaris and kube-linter, mapped to our rules.

use std::collections::BTreeSet;

use crate::k8s::Workload;
use crate::rules::Tool;
use crate::source::TextRange;
use crate::yaml::Document;

use super::{IGNORE_ANNOTATION, Linter, REASON_ANNOTATION, ServiceAccountRef};

impl Linter<'_> {
    pub(super) fn exemptions(&self, doc: &Document, w: &Workload) -> Vec<Exemption> {
        let mut out = Vec::new();
        for map in w.annotation_maps(doc) {
            let entries = doc.entries(map);
            let value_of = |key: &str| {
                entries
                    .iter()
                    .find(|e| doc.key_str(e.key) == Some(key))
                    .and_then(|e| doc.str_value(e.value))
            };
            for e in &entries {
                let Some(key) = doc.key_str(e.key) else {
                    continue;
                };
                let value = doc.str_value(e.value).unwrap_or_default().trim();
                let range = doc.node(e.key).range.cover(doc.node(e.value).range);
                let truthy = value.eq_ignore_ascii_case("true");
                let mapped = |tool: Tool, check: &str| -> Vec<String> {
                    self.registry
                        .mapped(tool, check)
                        .map(|r| r.id.clone())
                        .collect()
                };
                let exemption = if key == IGNORE_ANNOTATION {
                    let mut problems = Vec::new();
                    let mut ids = BTreeSet::new();
                    for id in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        if self.registry.get(id).is_some() {
                            ids.insert(id.to_string());
                        } else {
                            problems.push(format!(
                                "`{IGNORE_ANNOTATION}` names `{id}`, which is not a KubeHarden rule"
                            ));
                        }
                    }
                    if ids.is_empty() && problems.is_empty() {
                        problems.push(format!("`{IGNORE_ANNOTATION}` names no rule"));
                    }
                    if value_of(REASON_ANNOTATION).is_none_or(|r| r.trim().is_empty()) {
                        problems.push(format!(
                            "`{IGNORE_ANNOTATION}` needs a `{REASON_ANNOTATION}` annotation saying why"
                        ));
                    }
                    Some(Exemption {
                        per_rule: true,
                        ..Exemption::new(
                            range,
                            Covered::Some(ids),
                            format!("`{IGNORE_ANNOTATION}: {value}`"),
                            problems,
                        )
                    })
                } else if key == "polaris.fairwinds.com/exempt" && truthy {
                    Some(Exemption::new(
                        range,
                        Covered::All,
                        format!("`{key}`"),
                        Vec::new(),
                    ))
                } else if let Some(check) = key
                    .strip_prefix("polaris.fairwinds.com/")
                    .and_then(|k| k.strip_suffix("-exempt"))
                    && truthy
                {
                    let ids = mapped(Tool::Polaris, check);
                    (!ids.is_empty()).then(|| {
                        Exemption::new(
                            range,
                            Covered::Some(ids.into_iter().collect()),
                            format!("`{key}`"),
                            Vec::new(),
                        )
                    })
                } else if key == "kube-linter.io/ignore-all" {
                    Some(Exemption::new(
                        range,
                        Covered::All,
                        format!("`{key}`"),
                        Vec::new(),
                    ))
                } else if let Some(check) = key.strip_prefix("ignore-check.kube-linter.io/") {
                    let ids = mapped(Tool::KubeLinter, check);
                    (!ids.is_empty()).then(|| {
                        Exemption::new(
                            range,
                            Covered::Some(ids.into_iter().collect()),
                            format!("`{key}`"),
                            Vec::new(),
                        )
                    })
                } else {
                    None
                };
                out.extend(exemption);
            }
        }
        out
    }
}

pub(super) enum Covered {
    All,
    Some(BTreeSet<String>),
}

pub(super) struct Exemption {
    pub(super) range: TextRange,
    pub(super) rules: Covered,
    pub(super) label: String,
    pub(super) problems: Vec<String>,
    /// Each named rule is its own exemption (`kubeharden.dev/ignore: a,b`).
    pub(super) per_rule: bool,
    /// Rules whose findings it suppressed.
    pub(super) used: BTreeSet<String>,
    /// It suppressed findings of these rules that hold unless this ServiceAccount turns the
    /// token off.
    pub(super) pending: Option<ServiceAccountRef>,
    pub(super) pending_rules: BTreeSet<String>,
}

impl Exemption {
    fn new(range: TextRange, rules: Covered, label: String, problems: Vec<String>) -> Self {
        Self {
            range,
            rules,
            label,
            problems,
            per_rule: false,
            used: BTreeSet::new(),
            pending: None,
            pending_rules: BTreeSet::new(),
        }
    }

    pub(super) fn covers(&self, rule: &str) -> bool {
        match &self.rules {
            Covered::All => true,
            Covered::Some(ids) => ids.contains(rule),
        }
    }
}
