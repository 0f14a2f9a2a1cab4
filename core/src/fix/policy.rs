//! Kubernetes policy for fixes: which settings a container inherits from its pod (so one pod
//! edit fixes every container), the order of keys in a new `securityContext`, and the
//! combinations the API server rejects, which no plan may write.

use crate::rules::Literal;
use crate::yaml::{Document, NodeId, Plain};

use super::need::Need;
use super::write::Action;

/// Fields a container inherits from the pod's `securityContext`: one pod-level edit fixes every
/// container that does not override it.
pub(super) const HOISTABLE: &[&[&str]] = &[
    &["securityContext", "runAsNonRoot"],
    &["securityContext", "seccompProfile", "type"],
];

/// Order of keys in a `securityContext` we create, as people usually write them.
pub(super) const KEY_ORDER: &[&str] = &[
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
        n.base = pod;
    }
}

/// Never write what the API server would reject: `allowPrivilegeEscalation: false` beside
/// `privileged: true` or an added CAP_SYS_ADMIN (unless the same plan removes those).
pub(super) fn guard(docs: &[Document], needs: &mut Vec<Need>) {
    let snapshot = needs.clone();
    needs.retain(|n| {
        if n.path.last().map(String::as_str) != Some("allowPrivilegeEscalation")
            || !matches!(n.action, Action::Set(Literal::Bool(false)))
        {
            return true;
        }
        let doc = &docs[n.doc];
        let privileged = doc
            .get_path(n.base, &["securityContext", "privileged"])
            .and_then(|v| doc.scalar(v))
            .is_some_and(|s| s.resolved() == Plain::Bool(true));
        let unprivileging = snapshot.iter().any(|o| {
            o.doc == n.doc
                && o.base == n.base
                && o.path.last().map(String::as_str) == Some("privileged")
                && matches!(o.action, Action::Set(Literal::Bool(false)))
        });
        let sys_admin: Vec<NodeId> = doc
            .get_path(n.base, &["securityContext", "capabilities", "add"])
            .map(|add| doc.items(add).to_vec())
            .unwrap_or_default()
            .into_iter()
            .filter(|&i| {
                doc.str_value(i).is_some_and(|s| {
                    let s = s.trim().to_ascii_uppercase();
                    s == "SYS_ADMIN" || s == "CAP_SYS_ADMIN"
                })
            })
            .collect();
        let removed = |item: NodeId| {
            snapshot
                .iter()
                .any(|o| o.doc == n.doc && matches!(o.action, Action::RemoveItem(i) if i == item))
        };
        (!privileged || unprivileging) && sys_admin.iter().all(|&i| removed(i))
    });
}
