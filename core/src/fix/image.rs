//! The planner's side of the image decision (`crate::decision`): the edits that make a fix fit
//! the container's image. A named user gets its IDs beside `runAsNonRoot`; a root image gets
//! runAsUser/runAsGroup 65532 (unsafe); a read-only root file system gets an `emptyDir` for
//! each path the image writes; ports below 1024 get NET_BIND_SERVICE (unsafe). Where one
//! container cannot take `runAsNonRoot: true`, no container of its pod hoists it to the pod
//! (the linter decided that too, seeing every container).

use std::collections::{BTreeMap, BTreeSet};

use crate::decision::{NONROOT_ID, UserVerdict};
use crate::rules::{Applicability, ImageFit, Literal};
use crate::yaml::{Document, NodeId};

use super::need::Need;
use super::write::{Action, Field};

/// A pod spec, by document.
type Pod = (usize, NodeId);

/// Shape the needs after the images' decisions (made by the linter, carried on each need);
/// returns the pods whose fixes must be written as one (a container's mount and the pod's
/// volume belong together).
pub(super) fn adjust(docs: &[Document], needs: &mut Vec<Need>) -> BTreeSet<Pod> {
    let mut cross = BTreeSet::new();
    let mut names: BTreeMap<Pod, BTreeSet<String>> = BTreeMap::new();
    let mut added = Vec::new();
    for n in needs.iter_mut() {
        let (Some(fit), Some(fitting)) = (n.fit, n.image.clone()) else {
            continue;
        };
        let d = &fitting.decision;
        let doc = &docs[n.doc];
        let (doc_index, base, pod, rule, findings) =
            (n.doc, n.base, n.pod, n.rule.clone(), n.findings.clone());
        let like = |path: &[&str], action: Action, applicability: Applicability| Need {
            doc: doc_index,
            base,
            pod,
            path: path.iter().map(|s| s.to_string()).collect(),
            action,
            applicability,
            rule: rule.clone(),
            findings: findings.clone(),
            from: Vec::new(),
            fit: None,
            image: None,
            no_hoist: true,
            group: None,
        };
        match fit {
            ImageFit::RunAsNonRoot => {
                n.no_hoist |= fitting.hoist_blocked;
                let ids = match &d.user {
                    UserVerdict::Named { uid, gid, .. } => Some((*uid, *gid, n.applicability)),
                    UserVerdict::Root { .. } => {
                        n.no_hoist = true;
                        Some((NONROOT_ID, Some(NONROOT_ID), Applicability::Unsafe))
                    }
                    _ => None,
                };
                if let Some((uid, gid, applicability)) = ids {
                    let set = |v: u32| Action::Set(Literal::Int(i64::from(v)));
                    added.push(like(
                        &["securityContext", "runAsUser"],
                        set(uid),
                        applicability,
                    ));
                    if let Some(gid) = gid
                        && doc
                            .get_path(n.base, &["securityContext", "runAsGroup"])
                            .is_none()
                    {
                        added.push(like(
                            &["securityContext", "runAsGroup"],
                            set(gid),
                            applicability,
                        ));
                    }
                }
            }
            ImageFit::ReadOnlyRoot if d.config.is_some() && !d.writable.is_empty() => {
                // Without a pod spec to hold volumes, the fix stays as it is without an image.
                let Some(pod_spec) = fitting.pod_spec else {
                    continue;
                };
                let taken = names
                    .entry((n.doc, pod_spec))
                    .or_insert_with(|| volume_names(doc, pod_spec));
                let container = doc
                    .get(n.base, "name")
                    .and_then(|v| doc.str_value(v))
                    .unwrap_or("container");
                for path in &d.writable {
                    let name = fresh_name(taken, container, path);
                    let lit = |s: &str| Field::Lit(Literal::Str(s.to_string()));
                    added.push(like(
                        &["volumeMounts"],
                        Action::AddMap(vec![
                            ("name".into(), lit(&name)),
                            ("mountPath".into(), lit(path)),
                        ]),
                        n.applicability,
                    ));
                    let mut volume = like(
                        &["volumes"],
                        Action::AddMap(vec![
                            ("name".into(), lit(&name)),
                            ("emptyDir".into(), Field::EmptyMap),
                        ]),
                        n.applicability,
                    );
                    volume.base = pod_spec;
                    volume.pod = None;
                    added.push(volume);
                }
                cross.insert((n.doc, pod_spec));
            }
            ImageFit::DropAll if !d.low_ports.is_empty() => {
                added.push(like(
                    &["securityContext", "capabilities", "add"],
                    Action::AddItem("NET_BIND_SERVICE".into()),
                    Applicability::Unsafe,
                ));
            }
            _ => {}
        }
    }
    needs.extend(added);
    cross
}

fn volume_names(doc: &Document, pod: NodeId) -> BTreeSet<String> {
    doc.get(pod, "volumes")
        .map(|l| doc.items(l).to_vec())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| doc.resolve(v))
        .filter_map(|v| doc.get(v, "name"))
        .filter_map(|n| doc.str_value(n))
        .map(str::to_string)
        .collect()
}

/// A DNS label for a new volume: the path (`/var/cache/app` → `var-cache-app`), else with the
/// container's name in front, else numbered; never one the pod has or this plan took.
fn fresh_name(taken: &mut BTreeSet<String>, container: &str, path: &str) -> String {
    let label = |s: &str| -> String {
        let mut out = String::new();
        for c in s.chars() {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() {
                out.push(c);
            } else if !out.ends_with('-') && !out.is_empty() {
                out.push('-');
            }
        }
        let mut out: String = out.trim_end_matches('-').chars().take(63).collect();
        while out.ends_with('-') {
            out.pop();
        }
        if out.is_empty() { "data".into() } else { out }
    };
    let base = label(path);
    let candidates = [base.clone(), label(&format!("{container}-{base}"))];
    let name = candidates
        .into_iter()
        .find(|c| !taken.contains(c))
        .unwrap_or_else(|| {
            (2..)
                .map(|i| label(&format!("{base}-{i}")))
                .find(|c| !taken.contains(c))
                .expect("an unused number")
        });
    taken.insert(name.clone());
    name
}

/// Every need of a pod whose fix carries a volume joins that pod's fix: the pod spec and its
/// containers are then written by one writer, so no two fixes create the same key and a mount
/// never lands without its volume. Runs before needs move to the nodes they change.
pub(super) fn regroup(needs: &mut [Need], cross: &BTreeSet<Pod>) {
    if cross.is_empty() {
        return;
    }
    for n in needs.iter_mut() {
        let pod = [Some(n.base), n.pod]
            .into_iter()
            .flatten()
            .find(|&p| cross.contains(&(n.doc, p)));
        if let Some(pod) = pod {
            n.group = Some(pod);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_names_are_labels_and_unique() {
        let mut taken: BTreeSet<String> = ["tmp".to_string()].into();
        assert_eq!(fresh_name(&mut taken, "web", "/tmp"), "web-tmp");
        assert_eq!(fresh_name(&mut taken, "web", "/tmp"), "tmp-2");
        assert_eq!(
            fresh_name(&mut taken, "web", "/var/cache/App_Data/"),
            "var-cache-app-data"
        );
        assert_eq!(fresh_name(&mut taken, "web", "/"), "data");
    }
}
