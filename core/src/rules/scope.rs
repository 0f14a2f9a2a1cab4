//! Where a check looks: the nodes a scope visits in a workload (the pod, each container, each
//! volume, port, probe handler, host-path mount or annotation), and the dotted paths below
//! them, `[*]` visiting every item of a sequence.

use crate::k8s::ContainerKind;
use crate::yaml::{Document, Entry, NodeId};

use super::context::Context;
use super::{Check, Scope};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Seg {
    Key(String),
    Each,
}

pub(crate) fn parse_path(path: &str) -> Vec<Seg> {
    let mut segs = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let mut rest = part;
        while let Some(key) = rest.strip_suffix("[*]") {
            rest = key;
        }
        if !rest.is_empty() {
            segs.push(Seg::Key(rest.to_string()));
        }
        for _ in 0..(part.len() - rest.len()) / 3 {
            segs.push(Seg::Each);
        }
    }
    segs
}

/// The end of a path walk: a value, or the deepest node that exists on the way to it.
#[derive(Debug, Clone)]
pub(super) struct Leaf {
    pub value: Option<NodeId>,
    pub entry: Option<Entry>,
    /// Deepest existing entry on the way, for locating a missing value.
    pub deepest: Option<Entry>,
    pub path: Vec<String>,
}

pub(super) fn walk(doc: &Document, base: NodeId, segs: &[Seg]) -> Vec<Leaf> {
    let mut out = Vec::new();
    walk_into(doc, base, segs, None, Vec::new(), &mut out);
    out
}

fn walk_into(
    doc: &Document,
    node: NodeId,
    segs: &[Seg],
    entry: Option<Entry>,
    path: Vec<String>,
    out: &mut Vec<Leaf>,
) {
    let Some((seg, rest)) = segs.split_first() else {
        let value = (!doc.is_null(node)).then_some(node);
        out.push(Leaf {
            value,
            entry,
            deepest: entry,
            path,
        });
        return;
    };
    match seg {
        Seg::Key(key) => {
            let found = doc.entry(node, key).filter(|e| {
                doc.resolve(e.value)
                    .is_some_and(|v| rest.is_empty() || !doc.is_null(v))
            });
            let mut path = path;
            path.push(key.clone());
            match found {
                Some(e) => {
                    let value = doc.resolve(e.value).unwrap_or(e.value);
                    walk_into(doc, value, rest, Some(e), path, out);
                }
                None => {
                    // Missing here: every remaining key is missing too.
                    let mut path = path;
                    path.extend(rest.iter().filter_map(|s| match s {
                        Seg::Key(k) => Some(k.clone()),
                        Seg::Each => None,
                    }));
                    if !rest.contains(&Seg::Each) {
                        out.push(Leaf {
                            value: None,
                            entry: None,
                            deepest: entry,
                            path,
                        });
                    }
                }
            }
        }
        Seg::Each => {
            for (i, &item) in doc.items(node).iter().enumerate() {
                if let Some(item) = doc.resolve(item) {
                    let mut p = path.clone();
                    if let Some(last) = p.last_mut() {
                        last.push_str(&format!("[{i}]"));
                    }
                    walk_into(doc, item, rest, None, p, out);
                }
            }
        }
    }
}

/// Where a scope visits: (node, container index).
pub(super) fn scope_targets(cx: &Context<'_>, check: &Check) -> Vec<(NodeId, Option<usize>)> {
    let doc = cx.doc;
    let kinds: &[ContainerKind] = check.containers.as_deref().unwrap_or(&ContainerKind::ALL);
    let containers = || {
        cx.containers
            .iter()
            .enumerate()
            .filter(|(_, c)| kinds.contains(&c.kind))
    };
    let segs = parse_path(&check.path);
    let pod = pod_base(cx, &segs);
    // Pod volumes: the pod's own and its defaults' (Argo adds a Workflow's volumes to every
    // template's pod).
    let volumes = || -> Vec<NodeId> {
        [cx.workload.pod_spec, cx.workload.pod_defaults]
            .into_iter()
            .flatten()
            .filter_map(|p| doc.get(p, "volumes"))
            .flat_map(|v| doc.items(v).to_vec())
            .filter_map(|i| doc.resolve(i))
            .collect()
    };
    match check.scope {
        Scope::Pod => pod.map(|p| (p, None)).into_iter().collect(),
        Scope::Container => containers().map(|(i, c)| (c.node, Some(i))).collect(),
        Scope::PodAndContainers => pod
            .map(|p| (p, None))
            .into_iter()
            .chain(containers().map(|(i, c)| (c.node, Some(i))))
            .collect(),
        Scope::Volume => volumes().into_iter().map(|v| (v, None)).collect(),
        Scope::ContainerPort => containers()
            .flat_map(|(i, c)| {
                doc.get(c.node, "ports")
                    .map(|p| doc.items(p).to_vec())
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|p| doc.resolve(p))
                    .map(move |p| (p, Some(i)))
            })
            .collect(),
        Scope::ProbeHandler => {
            let mut out = Vec::new();
            for (i, c) in containers() {
                let mut handlers = Vec::new();
                for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                    handlers.extend(doc.get(c.node, probe));
                }
                if let Some(lifecycle) = doc.get(c.node, "lifecycle") {
                    for hook in ["postStart", "preStop"] {
                        handlers.extend(doc.get(lifecycle, hook));
                    }
                }
                for h in handlers {
                    for kind in ["httpGet", "tcpSocket"] {
                        if let Some(handler) = doc.get(h, kind).filter(|&n| doc.is_mapping(n)) {
                            out.push((handler, Some(i)));
                        }
                    }
                }
            }
            out
        }
        Scope::HostPathMount => {
            let host_path_volumes: Vec<String> = volumes()
                .into_iter()
                .filter(|&v| doc.get(v, "hostPath").is_some_and(|h| !doc.is_null(h)))
                .filter_map(|v| {
                    doc.get(v, "name")
                        .and_then(|n| doc.str_value(n))
                        .map(str::to_string)
                })
                .collect();
            let mut out = Vec::new();
            for (i, c) in containers() {
                let Some(mounts) = doc.get(c.node, "volumeMounts") else {
                    continue;
                };
                for &m in doc.items(mounts) {
                    let Some(m) = doc.resolve(m) else { continue };
                    let name = doc.get(m, "name").and_then(|n| doc.str_value(n));
                    if name.is_some_and(|n| host_path_volumes.iter().any(|v| v == n)) {
                        out.push((m, Some(i)));
                    }
                }
            }
            out
        }
        Scope::Annotation => {
            let prefix = check.annotation_prefix.as_deref().unwrap_or_default();
            let mut out = Vec::new();
            // Only the pod's own annotations configure it (a Deployment's do not).
            let annotations = cx
                .workload
                .pod_metadata()
                .and_then(|m| doc.get(m, "annotations"))
                .filter(|&a| doc.is_mapping(a));
            if let Some(map) = annotations {
                for e in doc.entries(map) {
                    let Some(rest) = doc.key_str(e.key).and_then(|k| k.strip_prefix(prefix)) else {
                        continue;
                    };
                    if !check.annotation_per_container {
                        out.push((e.value, None));
                    } else if let Some(i) = cx
                        .containers
                        .iter()
                        .position(|c| c.name.as_deref() == Some(rest))
                    {
                        out.push((e.value, Some(i)));
                    }
                }
            }
            out
        }
    }
}

/// The pod-level node a path is read from: the pod's, or its defaults' when the pod lacks the
/// path's first key.
pub(super) fn pod_base(cx: &Context<'_>, segs: &[Seg]) -> Option<NodeId> {
    match segs.first() {
        Some(Seg::Key(key)) => cx.workload.pod_for(cx.doc, key),
        _ => cx.workload.pod_spec,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse() {
        assert_eq!(
            parse_path("securityContext.sysctls[*].name"),
            vec![
                Seg::Key("securityContext".into()),
                Seg::Key("sysctls".into()),
                Seg::Each,
                Seg::Key("name".into())
            ]
        );
        assert_eq!(parse_path(""), vec![]);
    }
}
