//! Kubernetes policy for fixes: which settings a container inherits from its pod (so one pod
//! edit fixes every container), the order of keys in a new `securityContext`, and the
//! enforcement of what Kubernetes refuses (`crate::constraints`), which no plan may write.

use std::collections::BTreeMap;

use crate::constraints::{self, Constraint, Violation, Written};
use crate::rules::Applicability;
use crate::workloads::WorkloadKinds;
use crate::yaml::{Document, NodeId};

use super::need::Need;
use super::overlay::Overlay;
use super::write::Action;

/// Fields a container inherits from the pod's `securityContext`: one pod-level edit fixes every
/// container that does not override it.
pub(crate) const HOISTABLE: &[&[&str]] = &[
    &["securityContext", "runAsNonRoot"],
    &["securityContext", "seccompProfile", "type"],
];

/// Order of keys in a `securityContext` we create, as people usually write them.
pub(crate) const KEY_ORDER: &[&str] = &[
    "runAsNonRoot",
    "runAsUser",
    "runAsGroup",
    "allowPrivilegeEscalation",
    "privileged",
    "readOnlyRootFilesystem",
    "capabilities",
    "drop",
    "seccompProfile",
    "type",
    "appArmorProfile",
];

/// Move inheritable settings that a container lacks to the pod's `securityContext`, unless the
/// pod sets them (badly) itself, in which case the pod's value is fixed by its own finding.
pub(super) fn hoist(docs: &[Document], needs: &mut [Need]) {
    for n in needs.iter_mut() {
        let Action::Set(_) = n.action else { continue };
        if n.no_hoist {
            continue;
        }
        if !HOISTABLE
            .iter()
            .any(|h| h.iter().copied().eq(n.path.iter().map(String::as_str)))
        {
            continue;
        }
        let doc = &docs[n.doc];
        let keys: Vec<&str> = n.path.iter().map(String::as_str).collect();
        // Only containers hoist, to the pod node the linter read the setting from (a pod
        // spec, or where an operator keeps pod settings); the container must not set it itself.
        let Some(pod) = n.pod else { continue };
        if doc.get_path(n.base, &keys).is_some_and(|v| !doc.is_null(v)) {
            continue;
        }
        // Kept whole, so that the need can go back if the pod-level value breaks a
        // constraint for another container.
        let container_level = n.clone();
        n.base = pod;
        n.from = vec![container_level];
    }
}

/// A planned need dropped because it would complete a combination Kubernetes refuses, or
/// because another need asks for a different value at the same place.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// Indices of the findings the need came from.
    pub findings: Vec<usize>,
    /// The container whose settings make the fix impossible.
    pub container: Option<String>,
    pub why: Why,
}

#[derive(Debug, Clone)]
pub enum Why {
    Refused(&'static Constraint),
    /// Rules want different values at one node (a node shared through an anchor, or rules of
    /// one's own): neither is written.
    Conflict {
        path: String,
        values: Vec<String>,
    },
}

impl Refusal {
    /// For people: what was not done and why, and, when the fixes planned are the safe ones
    /// only, the unsafe change that would make it possible.
    pub fn reason(&self, min: Applicability) -> String {
        let place = self
            .container
            .as_deref()
            .map(|c| format!(" in container {c}"))
            .unwrap_or_default();
        let c = match &self.why {
            Why::Refused(c) => c,
            Why::Conflict { path, values } => {
                return format!(
                    "not fixed{place}: rules ask for different values of {path} ({}) at the same node",
                    values.join(", ")
                );
            }
        };
        let mut out = format!(
            "not fixed{place}: {} ({} \"{}\")",
            c.why,
            c.enforcer.name(),
            c.says
        );
        if let Some(companion) = c.companion.filter(|_| min > Applicability::Unsafe) {
            out += &format!("; {companion}");
        }
        out
    }
}

/// Drop every `Set` that another `Set` contradicts at the same node and path (after rebasing,
/// so two containers reaching one anchored node meet there).
pub(super) fn drop_conflicts(needs: &mut Vec<Need>) -> Vec<Refusal> {
    let place = |n: &Need| (n.doc, n.base, n.path.clone());
    let mut values: BTreeMap<(usize, NodeId, Vec<String>), Vec<String>> = BTreeMap::new();
    for n in needs.iter() {
        if let Action::Set(v) = &n.action {
            let seen = values.entry(place(n)).or_default();
            if !seen.contains(&v.to_string()) {
                seen.push(v.to_string());
            }
        }
    }
    for v in values.values_mut() {
        v.sort();
    }
    let mut refusals = Vec::new();
    needs.retain(|n| {
        let conflicting = matches!(n.action, Action::Set(_))
            && values.get(&place(n)).is_some_and(|v| v.len() > 1);
        if conflicting {
            refusals.push(Refusal {
                findings: n.findings.clone(),
                container: None,
                why: Why::Conflict {
                    path: n.path.join("."),
                    values: values[&place(n)].clone(),
                },
            });
        }
        !conflicting
    });
    refusals
}

/// The most rounds of dropping needs: each round drops at least one, and a dropped need can
/// only expose a combination that another need completes.
const MAX_ROUNDS: usize = 16;

/// Never plan what Kubernetes refuses: check every workload as the plan would leave it
/// against the constraint table, and drop each planned need that completes a refused
/// combination which the text does not already have. A need hoisted to the pod goes back to
/// the containers it came from, so that one container's conflict does not cost the others
/// their fix. `rebase` puts needs back in the form the overlay reads.
pub(super) fn enforce(
    docs: &[Document],
    needs: &mut Vec<Need>,
    rebase: impl Fn(&Document, &mut Need),
    kinds: &WorkloadKinds,
) -> Vec<Refusal> {
    let mut refusals = Vec::new();
    let mut doc_indices: Vec<usize> = needs.iter().map(|n| n.doc).collect();
    doc_indices.sort_unstable();
    doc_indices.dedup();
    for d in doc_indices {
        let doc = &docs[d];
        for (workload, containers) in constraints::workloads(doc, kinds) {
            let already: Vec<(&str, Option<usize>)> =
                constraints::check(&Written(doc), &workload, &containers)
                    .iter()
                    .map(|v| (v.constraint.id, v.container))
                    .collect();
            for _ in 0..MAX_ROUNDS {
                let overlay = Overlay {
                    doc,
                    doc_index: d,
                    needs,
                };
                let new: Vec<Violation> = constraints::check(&overlay, &workload, &containers)
                    .into_iter()
                    .filter(|v| !already.contains(&(v.constraint.id, v.container)))
                    .filter(|v| !v.by.is_empty())
                    .collect();
                if new.is_empty() {
                    break;
                }
                let mut culprits: Vec<(usize, &Violation)> = new
                    .iter()
                    .flat_map(|v| v.by.iter().map(move |&i| (i, v)))
                    .collect();
                culprits.sort_by_key(|(i, _)| std::cmp::Reverse(*i));
                culprits.dedup_by_key(|(i, _)| *i);
                for (i, v) in culprits {
                    let need = needs.remove(i);
                    if need.from.is_empty() {
                        refusals.push(Refusal {
                            findings: need.findings,
                            container: v.container.map(|c| containers[c].display_name()),
                            why: Why::Refused(v.constraint),
                        });
                    } else {
                        // Back to the containers, each to be checked on its own.
                        for mut n in need.from {
                            rebase(doc, &mut n);
                            needs.push(n);
                        }
                    }
                }
            }
        }
    }
    refusals
}
