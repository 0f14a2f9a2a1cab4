//! The combinations of pod settings that Kubernetes itself refuses: the API server's validation
//! (k8s.io/kubernetes pkg/apis/core/validation) rejects the object, or the kubelet refuses to
//! start the container. A fix must never complete one of them, so they are kept here, as one
//! table, and checked against every planned and every fixed object (`fix::policy` and
//! `fix::fix_parsed`), whatever rule the fix came from.
//!
//! The table is data: each entry names the fields it reads, so the planner can tell which of
//! its planned changes completes a combination, and drop exactly those.

use crate::k8s::{self, Container, Contents, Workload};
use crate::workloads::WorkloadKinds;
use crate::yaml::{Document, NodeId, Plain};

/// Who refuses the combination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcer {
    /// The object is rejected when it is created or updated.
    ApiServer,
    /// The object is accepted, but the container never starts (`CreateContainerConfigError`).
    Kubelet,
}

impl Enforcer {
    pub fn name(self) -> &'static str {
        match self {
            Enforcer::ApiServer => "the API server rejects",
            Enforcer::Kubelet => "the kubelet refuses to start",
        }
    }
}

/// A combination Kubernetes refuses: every condition holds.
#[derive(Debug)]
pub struct Constraint {
    pub id: &'static str,
    pub enforcer: Enforcer,
    /// What Kubernetes says when it refuses, as its source words it.
    pub says: &'static str,
    pub when: &'static [Cond],
    /// For a note: what a fix that would complete the combination is left undone for.
    pub why: &'static str,
    /// The change that would make the fix possible, when there is one (an unsafe fix of
    /// another rule, applied with `--unsafe-fixes`).
    pub companion: Option<&'static str>,
}

#[derive(Debug)]
pub struct Cond(pub Field, pub Test);

/// Where a condition looks.
#[derive(Debug)]
pub enum Field {
    /// A path below the container.
    Container(&'static [&'static str]),
    /// A path below `securityContext`: the container's value, or the pod's when the container
    /// leaves it unset (how the kubelet computes the effective security context).
    Effective(&'static [&'static str]),
    /// A path below the pod spec.
    Pod(&'static [&'static str]),
    /// A key of any of the container's `volumeMounts`.
    AnyMount(&'static str),
}

#[derive(Debug)]
pub enum Test {
    Is(Want),
    /// Anything else, unset included.
    IsNot(Want),
    /// A list holding this exact string.
    Has(&'static str),
    Present,
}

#[derive(Debug, Clone, Copy)]
pub enum Want {
    Bool(bool),
    Int(i64),
    Str(&'static str),
}

const SC: &str = "securityContext";

pub const CONSTRAINTS: &[Constraint] = &[
    Constraint {
        id: "no-escalation-with-privileged",
        enforcer: Enforcer::ApiServer,
        says: "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
        when: &[
            Cond(
                Field::Container(&[SC, "allowPrivilegeEscalation"]),
                Test::Is(Want::Bool(false)),
            ),
            Cond(
                Field::Container(&[SC, "privileged"]),
                Test::Is(Want::Bool(true)),
            ),
        ],
        why: "allowPrivilegeEscalation: false cannot stand beside privileged: true",
        companion: Some("the unsafe fix of privileged-container (privileged: false) comes first"),
    },
    Constraint {
        id: "no-escalation-with-cap-sys-admin",
        enforcer: Enforcer::ApiServer,
        // The validation compares the exact string: `SYS_ADMIN` is accepted.
        says: "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN",
        when: &[
            Cond(
                Field::Container(&[SC, "allowPrivilegeEscalation"]),
                Test::Is(Want::Bool(false)),
            ),
            Cond(
                Field::Container(&[SC, "capabilities", "add"]),
                Test::Has("CAP_SYS_ADMIN"),
            ),
        ],
        why: "allowPrivilegeEscalation: false cannot stand beside an added CAP_SYS_ADMIN",
        companion: Some(
            "the unsafe fix of capabilities-beyond-baseline (removing CAP_SYS_ADMIN) comes first",
        ),
    },
    Constraint {
        id: "bidirectional-mount-needs-privileged",
        enforcer: Enforcer::ApiServer,
        says: "Bidirectional mount propagation is available only to privileged containers",
        when: &[
            Cond(
                Field::AnyMount("mountPropagation"),
                Test::Is(Want::Str("Bidirectional")),
            ),
            Cond(
                Field::Container(&[SC, "privileged"]),
                Test::IsNot(Want::Bool(true)),
            ),
        ],
        why: "the container mounts a volume with mountPropagation: Bidirectional, which needs \
              privileged: true",
        companion: None,
    },
    Constraint {
        id: "non-root-with-uid-zero",
        enforcer: Enforcer::Kubelet,
        says: "container's runAsUser breaks non-root policy",
        when: &[
            Cond(
                Field::Effective(&["runAsNonRoot"]),
                Test::Is(Want::Bool(true)),
            ),
            Cond(Field::Effective(&["runAsUser"]), Test::Is(Want::Int(0))),
        ],
        why: "runAsUser: 0 applies to the container, and runAsNonRoot: true beside it stops it \
              from starting; set a non-zero runAsUser the image supports first",
        companion: None,
    },
    Constraint {
        id: "seccomp-localhost-profile-needs-localhost",
        enforcer: Enforcer::ApiServer,
        says: "can only be set when seccomp type is Localhost",
        when: &[
            Cond(
                Field::Container(&[SC, "seccompProfile", "localhostProfile"]),
                Test::Present,
            ),
            Cond(
                Field::Container(&[SC, "seccompProfile", "type"]),
                Test::IsNot(Want::Str("Localhost")),
            ),
        ],
        why: "seccompProfile.localhostProfile is set, which needs type Localhost",
        companion: None,
    },
    Constraint {
        id: "pod-seccomp-localhost-profile-needs-localhost",
        enforcer: Enforcer::ApiServer,
        says: "can only be set when seccomp type is Localhost",
        when: &[
            Cond(
                Field::Pod(&[SC, "seccompProfile", "localhostProfile"]),
                Test::Present,
            ),
            Cond(
                Field::Pod(&[SC, "seccompProfile", "type"]),
                Test::IsNot(Want::Str("Localhost")),
            ),
        ],
        why: "the pod's seccompProfile.localhostProfile is set, which needs type Localhost",
        companion: None,
    },
];

/// A value as Kubernetes reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Unset,
    Bool(bool),
    Int(i64),
    Str(String),
    List(Vec<String>),
    /// A mapping, a float, anything no condition compares.
    Other,
}

/// A value and the planned changes it comes from (indices the view gives them; none for a
/// value as written).
#[derive(Debug, Clone)]
pub struct Looked {
    pub value: Value,
    pub by: Vec<usize>,
}

impl Looked {
    pub fn written(value: Value) -> Self {
        Looked {
            value,
            by: Vec::new(),
        }
    }
}

/// How a document reads: as written, or as a plan would leave it.
pub trait View {
    fn doc(&self) -> &Document;
    /// The value at `path` below `node`.
    fn value(&self, node: NodeId, path: &[&str]) -> Looked;
}

/// The document as written.
pub struct Written<'a>(pub &'a Document);

impl View for Written<'_> {
    fn doc(&self) -> &Document {
        self.0
    }

    fn value(&self, node: NodeId, path: &[&str]) -> Looked {
        let doc = self.0;
        Looked::written(match doc.get_path(node, path) {
            Some(v) => value_of(doc, v),
            None => Value::Unset,
        })
    }
}

/// A node's value as the conditions compare it.
pub fn value_of(doc: &Document, node: NodeId) -> Value {
    let Some(node) = doc.resolve(node) else {
        return Value::Unset;
    };
    if let Some(s) = doc.scalar(node) {
        return match s.resolved() {
            Plain::Null => Value::Unset,
            Plain::Bool(b) => Value::Bool(b),
            Plain::Int(i) => Value::Int(i),
            Plain::Float(_) => Value::Other,
            Plain::Str(s) => Value::Str(s.to_string()),
        };
    }
    if doc.is_sequence(node) {
        return Value::List(
            doc.items(node)
                .iter()
                .filter_map(|&i| doc.str_value(i).map(str::to_string))
                .collect(),
        );
    }
    Value::Other
}

/// One refused combination found.
#[derive(Debug, Clone)]
pub struct Violation {
    pub constraint: &'static Constraint,
    /// The container it concerns, as an index into the workload's containers; `None` for a
    /// combination of pod-level fields.
    pub container: Option<usize>,
    /// The planned changes that the combination's values come from.
    pub by: Vec<usize>,
}

fn holds(test: &Test, value: &Value) -> bool {
    let is = |want: &Want| match (want, value) {
        (Want::Bool(w), Value::Bool(v)) => w == v,
        (Want::Int(w), Value::Int(v)) => w == v,
        (Want::Str(w), Value::Str(v)) => w == v,
        _ => false,
    };
    match test {
        Test::Is(w) => is(w),
        Test::IsNot(w) => !is(w),
        Test::Has(item) => matches!(value, Value::List(items) if items.iter().any(|i| i == item)),
        Test::Present => *value != Value::Unset,
    }
}

/// Whether a condition holds for a container (or the pod), and the changes it rests on.
fn check_cond(
    view: &impl View,
    workload: &Workload,
    container: Option<&Container>,
    cond: &Cond,
) -> Option<Vec<usize>> {
    let Cond(field, test) = cond;
    // The pod-level node a path starts from: the pod's own, or its defaults' (an Argo
    // Workflow's spec); none where the operator spells pod fields otherwise.
    let pod_value = |path: &[&str]| match workload.pod_for(view.doc(), path[0]) {
        Some(pod) => view.value(pod, path),
        None => Looked::written(Value::Unset),
    };
    let looked = match (field, container) {
        (Field::Pod(path), _) => pod_value(path),
        (Field::Container(path), Some(c)) => view.value(c.node, path),
        (Field::Effective(path), Some(c)) => {
            let full: Vec<&str> = std::iter::once(SC).chain(path.iter().copied()).collect();
            let own = view.value(c.node, &full);
            if own.value == Value::Unset {
                // The container's own unset value takes part too: a plan that sets it decides.
                let mut pod = pod_value(&full);
                pod.by.extend(own.by);
                pod
            } else {
                own
            }
        }
        (Field::AnyMount(key), Some(c)) => {
            let doc = view.doc();
            let mounts = doc
                .get(c.node, "volumeMounts")
                .map(|m| doc.items(m).to_vec());
            return mounts.unwrap_or_default().into_iter().find_map(|m| {
                let looked = view.value(m, &[key]);
                holds(test, &looked.value).then_some(looked.by)
            });
        }
        (_, None) => return None,
    };
    holds(test, &looked.value).then_some(looked.by)
}

fn pod_level(c: &Constraint) -> bool {
    c.when.iter().all(|Cond(f, _)| matches!(f, Field::Pod(_)))
}

/// Every refused combination in one workload, as `view` reads it.
pub fn check(view: &impl View, workload: &Workload, containers: &[Container]) -> Vec<Violation> {
    let mut out = Vec::new();
    for constraint in CONSTRAINTS {
        let subjects: Vec<Option<usize>> = if pod_level(constraint) {
            vec![None]
        } else {
            (0..containers.len()).map(Some).collect()
        };
        for subject in subjects {
            let container = subject.map(|i| &containers[i]);
            let mut by = Vec::new();
            let all = constraint.when.iter().all(|cond| {
                check_cond(view, workload, container, cond)
                    .map(|b| by.extend(b))
                    .is_some()
            });
            if all {
                by.sort_unstable();
                by.dedup();
                out.push(Violation {
                    constraint,
                    container: subject,
                    by,
                });
            }
        }
    }
    out
}

/// The workloads of a document with their containers, wherever `kinds` says pods live.
pub fn workloads(doc: &Document, kinds: &WorkloadKinds) -> Vec<(Workload, Vec<Container>)> {
    let Contents::Objects(objects) = k8s::objects(doc) else {
        return Vec::new();
    };
    objects
        .iter()
        .flat_map(|o| kinds.locate(doc, o).workloads)
        .map(|w| {
            let containers = w.containers.clone();
            (w, containers)
        })
        .collect()
}

/// A refused combination in a written document, named so that it can be compared across
/// texts (node ids and offsets change as a fix inserts lines).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Found {
    pub constraint: &'static str,
    /// `Kind/name` of the object.
    pub object: String,
    pub container: Option<String>,
    /// Where the object is in the text it was found in.
    pub object_range: (usize, usize),
}

/// `Kind/name`: how a workload is recognised in another version of its text.
pub fn object_key(w: &Workload) -> String {
    let key = format!(
        "{}/{}",
        w.object.info.kind,
        w.object.info.name.as_deref().unwrap_or("")
    );
    // An object with several pods (a RayCluster's head and worker groups) names which one.
    match &w.label {
        Some(label) => format!("{key} {label}"),
        None => key,
    }
}

/// Every refused combination in a document as written.
pub fn found_in(doc: &Document, kinds: &WorkloadKinds) -> Vec<Found> {
    let mut out = Vec::new();
    for (w, containers) in workloads(doc, kinds) {
        let object = object_key(&w);
        let range = doc.node(w.object.node).range;
        for v in check(&Written(doc), &w, &containers) {
            out.push(Found {
                constraint: v.constraint.id,
                object: object.clone(),
                container: v.container.map(|i| containers[i].display_name()),
                object_range: (range.start(), range.end()),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::{self, Limits};

    fn found(text: &str) -> Vec<(&'static str, Option<String>)> {
        let stream = yaml::parse(text, &Limits::default());
        let kinds = WorkloadKinds::builtin().unwrap();
        stream
            .documents
            .iter()
            .flat_map(|d| found_in(d, &kinds))
            .map(|f| (f.constraint, f.container))
            .collect()
    }

    #[test]
    fn each_refused_combination_is_found() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  securityContext: {runAsUser: 0}\n  containers:\n  - name: a\n    securityContext: {privileged: true, allowPrivilegeEscalation: false}\n  - name: b\n    securityContext:\n      allowPrivilegeEscalation: false\n      capabilities: {add: [CAP_SYS_ADMIN]}\n  - name: c\n    securityContext: {allowPrivilegeEscalation: false, capabilities: {add: [SYS_ADMIN]}, runAsNonRoot: true}\n    volumeMounts: [{name: v, mountPath: /v, mountPropagation: Bidirectional}]\n  - name: d\n    securityContext: {runAsNonRoot: true, runAsUser: 1000, privileged: true}\n    volumeMounts: [{name: v, mountPath: /v, mountPropagation: Bidirectional}]\n";
        assert_eq!(
            found(text),
            [
                ("no-escalation-with-privileged", Some("a".into())),
                ("no-escalation-with-cap-sys-admin", Some("b".into())),
                ("bidirectional-mount-needs-privileged", Some("c".into())),
                ("non-root-with-uid-zero", Some("c".into())),
            ]
        );
    }

    #[test]
    fn a_container_uid_overrides_the_pods() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  securityContext: {runAsUser: 0, runAsNonRoot: true}\n  containers:\n  - name: own\n    securityContext: {runAsUser: 10001}\n  - name: inherits\n";
        assert_eq!(
            found(text),
            [("non-root-with-uid-zero", Some("inherits".into()))]
        );
    }
}
