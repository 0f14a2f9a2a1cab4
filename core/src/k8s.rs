//! Kubernetes objects found in parsed documents: which ones carry a pod spec, where it is, and
//! which containers it runs.

use std::fmt;

use crate::yaml::{Document, NodeId};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize, serde::Serialize,
)]
pub enum ContainerKind {
    #[serde(rename = "initContainers")]
    Init,
    #[serde(rename = "containers")]
    App,
    #[serde(rename = "ephemeralContainers")]
    Ephemeral,
}

impl ContainerKind {
    /// In the order the pod-security-admission code visits them.
    pub const ALL: [ContainerKind; 3] = [
        ContainerKind::Init,
        ContainerKind::App,
        ContainerKind::Ephemeral,
    ];

    pub fn field(self) -> &'static str {
        match self {
            ContainerKind::Init => "initContainers",
            ContainerKind::App => "containers",
            ContainerKind::Ephemeral => "ephemeralContainers",
        }
    }
}

/// Who an object is, for messages.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ObjectInfo {
    pub api_version: String,
    pub kind: String,
    pub name: Option<String>,
    pub namespace: Option<String>,
}

impl fmt::Display for ObjectInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if let Some(ns) = &self.namespace {
            write!(f, " {ns}/")?;
        } else {
            f.write_str(" ")?;
        }
        f.write_str(self.name.as_deref().unwrap_or("<unnamed>"))
    }
}

/// One Kubernetes object: a document root, or an item of a `v1/List`.
#[derive(Debug, Clone)]
pub struct Object {
    pub node: NodeId,
    pub info: ObjectInfo,
    pub metadata: Option<NodeId>,
}

/// One pod an object runs: a pod spec, or (for operators whose pods are not written as pod
/// specs) the node that holds its containers.
#[derive(Debug, Clone)]
pub struct Workload {
    pub object: Object,
    /// Metadata of the pods: the pod template's, or a Pod's own.
    pub pod_metadata: Option<NodeId>,
    /// Metadata of the object embedded in `object` that holds this pod (a Katib trial).
    pub inner_metadata: Option<NodeId>,
    /// The node holding pod-level fields (`securityContext`, `volumes`, `hostNetwork`, …);
    /// none where the operator spells them otherwise (a Spark driver, a Tekton Task).
    pub pod_spec: Option<NodeId>,
    /// Where absent pod-level fields fall back to, key by key (an Argo Workflow's `spec` for
    /// each of its templates).
    pub pod_defaults: Option<NodeId>,
    /// `pod_spec` is a Kubernetes PodSpec (and can be checked as one).
    pub is_pod_spec: bool,
    pub containers: Vec<Container>,
    /// Concrete path of the pod spec (or container holder) inside the object.
    pub pod_spec_path: String,
    /// The same path when the object can hold several pods, to say which one a finding is about.
    pub label: Option<String>,
    /// Fields whose findings get no automatic fix here (the operator rejects what it writes).
    pub no_fix: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Container {
    pub kind: ContainerKind,
    pub node: NodeId,
    pub name: Option<String>,
    /// Where it is below its pod (`containers[0]`, `script`), for a container without a name.
    pub label: String,
}

impl Container {
    pub fn display_name(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => self.label.clone(),
        }
    }
}

/// What a document holds.
pub enum Contents {
    /// Empty, or only comments.
    Empty,
    /// YAML that is not a Kubernetes object (no `apiVersion`/`kind`).
    NotKubernetes,
    Objects(Vec<Object>),
}

pub fn objects(doc: &Document) -> Contents {
    let Some(root) = doc.root() else {
        return Contents::Empty;
    };
    let Some(root_obj) = object_at(doc, root) else {
        return Contents::NotKubernetes;
    };
    // `v1/List` and friends (`DeploymentList`, …) hold their objects in `items`.
    if root_obj.info.kind.ends_with("List")
        && let Some(items) = doc.get(root, "items")
    {
        let objects = doc
            .items(items)
            .iter()
            .filter_map(|&item| doc.resolve(item).and_then(|item| object_at(doc, item)))
            .collect();
        return Contents::Objects(objects);
    }
    Contents::Objects(vec![root_obj])
}

pub(crate) fn object_at(doc: &Document, node: NodeId) -> Option<Object> {
    if !doc.is_mapping(node) {
        return None;
    }
    let api_version = doc.str_value(doc.get(node, "apiVersion")?)?.to_string();
    let kind = doc.str_value(doc.get(node, "kind")?)?.to_string();
    let metadata = doc.get(node, "metadata").filter(|&m| doc.is_mapping(m));
    let text = |key: &str| {
        metadata
            .and_then(|m| doc.get(m, key))
            .and_then(|n| doc.str_value(n))
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    Some(Object {
        node,
        info: ObjectInfo {
            api_version,
            kind,
            name: text("name").or_else(|| text("generateName")),
            namespace: text("namespace"),
        },
        metadata,
    })
}

impl Workload {
    pub fn containers(&self, _doc: &Document) -> Vec<Container> {
        self.containers.clone()
    }

    /// The node whose pod-level `key` applies: the pod's own, or its defaults' when the pod
    /// lacks the key (Argo replaces a Workflow's `securityContext` by a template's whole).
    pub fn pod_for(&self, doc: &Document, key: &str) -> Option<NodeId> {
        let pod = self.pod_spec?;
        match self.pod_defaults {
            Some(d) if doc.get(pod, key).is_none_or(|v| doc.is_null(v)) => Some(d),
            _ => Some(pod),
        }
    }

    /// `spec.os.name: windows`: the pod-security-admission code exempts such pods from the
    /// Linux-only restricted controls.
    pub fn is_windows(&self, doc: &Document) -> bool {
        self.pod_for(doc, "os")
            .and_then(|p| doc.get_path(p, &["os", "name"]))
            .and_then(|n| doc.str_value(n))
            == Some("windows")
    }

    /// `hostUsers: false`: the pod runs in a user namespace.
    pub fn host_users_false(&self, doc: &Document) -> bool {
        self.pod_for(doc, "hostUsers")
            .and_then(|p| doc.get(p, "hostUsers"))
            .and_then(|n| doc.scalar(n))
            .map(|s| s.resolved())
            == Some(crate::yaml::Plain::Bool(false))
    }

    /// The metadata of the pods this workload creates: the pod template's, or a Pod's own.
    pub fn pod_metadata(&self) -> Option<NodeId> {
        self.pod_metadata
    }

    /// Annotations of the object and of its pod template, in that order.
    pub fn annotation_maps(&self, doc: &Document) -> Vec<NodeId> {
        let mut maps: Vec<NodeId> = Vec::new();
        for m in [self.object.metadata, self.inner_metadata, self.pod_metadata]
            .into_iter()
            .flatten()
        {
            if !maps.contains(&m) {
                maps.push(m);
            }
        }
        maps.into_iter()
            .filter_map(|m| doc.get(m, "annotations"))
            .filter(|&a| doc.is_mapping(a))
            .collect()
    }
}

/// A Kubernetes minor version such as 1.34.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KubeVersion {
    pub major: u32,
    pub minor: u32,
}

impl KubeVersion {
    /// The newest version whose pod-security rules KubeHarden knows.
    pub const NEWEST: KubeVersion = KubeVersion {
        major: 1,
        minor: 37,
    };

    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl std::str::FromStr for KubeVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim().trim_start_matches('v');
        if t == "latest" {
            return Ok(KubeVersion::NEWEST);
        }
        let mut parts = t.split('.');
        let parse = |p: Option<&str>| p.and_then(|p| p.parse::<u32>().ok());
        match (parse(parts.next()), parse(parts.next())) {
            (Some(major), Some(minor)) if major == 1 => Ok(KubeVersion { major, minor }),
            _ => Err(format!(
                "`{s}` is not a Kubernetes version; expected `1.N` (for example `1.34`) or `latest`"
            )),
        }
    }
}

impl serde::Serialize for KubeVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for KubeVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = KubeVersion;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Kubernetes version such as \"1.34\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<KubeVersion, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<KubeVersion, E> {
                // `1.30` unquoted reads as 1.3 where the text is lost; refuse to guess.
                Err(E::custom(format!(
                    "the number {v} is ambiguous as a Kubernetes version; quote it, e.g. \"1.30\""
                )))
            }
        }
        // Our deserializer hands an identifier the scalar's source text whatever it resolves
        // to (as it does for mapping keys), so an unquoted `1.30` arrives as "1.30" rather than
        // the float 1.3; only buffered (untagged) input reaches visit_f64.
        d.deserialize_identifier(V)
    }
}
