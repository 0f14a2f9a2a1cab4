//! What an image's configuration lets a fix do, decided once per container: whether
//! `runAsNonRoot: true` is safe (the image runs as a non-zero UID), needs the image's IDs
//! written beside it (a named user), or would stop the pod (root, or a name nobody can check);
//! which paths need an `emptyDir` under a read-only root file system; which ports a non-root
//! process cannot bind under `drop: [ALL]`. The linter reads it for a finding's
//! applicability, the planner for the edits, the outputs for what they tell people: one
//! decision, so they never disagree.

use crate::facts::{ExposedPort, Id, ImageConfig, ImageFacts, Inspection, UserSpec};
use crate::yaml::{Document, NodeId, Plain};

/// The UID and GID suggested for an image that runs as root: distroless' `nonroot`, a common
/// unprivileged ID with no meaning on the node.
pub const NONROOT_ID: u32 = 65532;

/// Who the container runs as, and so what `runAsNonRoot: true` would do to it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum UserVerdict {
    /// The configuration could not be read: the fix stays as it is without an image.
    NotChecked { why: String },
    /// A non-zero UID the kubelet can verify: `runAsNonRoot: true` is safe.
    NonRoot { uid: u32, why: String },
    /// A user name whose IDs the image's own files give: `runAsUser`/`runAsGroup` with those
    /// IDs make `runAsNonRoot: true` verifiable, and so safe.
    Named {
        name: String,
        uid: u32,
        gid: Option<u32>,
    },
    /// A name no ID was found for: the kubelet refuses `runAsNonRoot: true` ("image has
    /// non-numeric user … cannot verify user is non-root").
    Unverifiable { name: String, problem: String },
    /// Root: `runAsNonRoot: true` alone stops the pod.
    Root { why: String },
}

/// The decision for one container.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImageDecision {
    /// The image as written.
    pub image: String,
    pub platform: String,
    /// What was read, when it was.
    pub config: Option<ImageConfig>,
    pub user: UserVerdict,
    /// Paths that need an `emptyDir` when the root file system turns read-only: the image's
    /// `Volumes` and `/tmp`, less what the container mounts already.
    pub writable: Vec<String>,
    /// Ports below 1024 the image exposes that its non-root process cannot bind under
    /// `drop: [ALL]` without `NET_BIND_SERVICE`.
    pub low_ports: Vec<ExposedPort>,
}

/// The platform a pod's images are resolved for: its `kubernetes.io/arch` (and
/// `kubernetes.io/os`) node selector, else the default.
pub fn platform_of(doc: &Document, pod_spec: Option<NodeId>, default: &str) -> String {
    let selector = |key: &str| {
        doc.get_path(pod_spec?, &["nodeSelector", key])
            .and_then(|n| doc.str_value(n))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let (default_os, default_arch) = default.split_once('/').unwrap_or(("linux", default));
    let os = selector("kubernetes.io/os").unwrap_or_else(|| default_os.to_string());
    match selector("kubernetes.io/arch").or_else(|| selector("beta.kubernetes.io/arch")) {
        Some(arch) => format!("{os}/{arch}"),
        // The default's variant (`linux/arm/v7`) stays with it.
        None if os == default_os => default.to_string(),
        None => format!("{os}/{default_arch}"),
    }
}

/// A container's effective `securityContext.runAsUser`: its own, else the pod's.
fn run_as_user(doc: &Document, pod_spec: Option<NodeId>, container: NodeId) -> Option<i64> {
    let read = |base: NodeId| {
        doc.get_path(base, &["securityContext", "runAsUser"])
            .and_then(|n| doc.scalar(n))
            .and_then(|s| match s.resolved() {
                Plain::Int(i) => Some(i),
                _ => None,
            })
    };
    read(container).or_else(|| pod_spec.and_then(read))
}

/// Mount paths of a container, without trailing slashes.
fn mount_paths(doc: &Document, container: NodeId) -> Vec<String> {
    doc.get(container, "volumeMounts")
        .map(|m| doc.items(m).to_vec())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|item| doc.resolve(item))
        .filter_map(|item| doc.get(item, "mountPath"))
        .filter_map(|p| doc.str_value(p))
        .map(clean_path)
        .collect()
}

fn clean_path(p: &str) -> String {
    let t = p.trim().trim_end_matches('/');
    if t.is_empty() { "/".into() } else { t.into() }
}

/// Whether `path` lies at or below `mount`.
fn covered(path: &str, mount: &str) -> bool {
    path == mount || mount == "/" || path.starts_with(&format!("{mount}/"))
}

fn adds_net_bind(doc: &Document, container: NodeId) -> bool {
    doc.get_path(container, &["securityContext", "capabilities", "add"])
        .map(|a| doc.items(a).to_vec())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| doc.str_value(i))
        .any(|c| {
            let c = c.trim().to_ascii_uppercase();
            c == "NET_BIND_SERVICE" || c == "CAP_NET_BIND_SERVICE"
        })
}

/// Decide for one container; `None` when its image was not looked at (inspection off, or no
/// image), so everything stays as it is without image facts.
pub fn decide(
    doc: &Document,
    pod_spec: Option<NodeId>,
    container: NodeId,
    facts: &ImageFacts,
) -> Option<ImageDecision> {
    if facts.configs.is_empty() {
        return None;
    }
    let image = doc.get(container, "image").and_then(|n| doc.str_value(n))?;
    let platform = platform_of(doc, pod_spec, &facts.default_platform);
    let inspection = facts.config(image, &platform)?;
    let config = match inspection {
        Inspection::Read(c) => c,
        Inspection::NotChecked(why) => {
            return Some(ImageDecision {
                image: image.to_string(),
                platform,
                config: None,
                user: UserVerdict::NotChecked { why: why.clone() },
                writable: Vec::new(),
                low_ports: Vec::new(),
            });
        }
    };
    let user = match run_as_user(doc, pod_spec, container) {
        // What the manifest sets wins over the image's USER, for the kubelet too.
        Some(0) => UserVerdict::Root {
            why: "the manifest sets runAsUser: 0".into(),
        },
        Some(uid) if uid > 0 && uid <= i64::from(u32::MAX) => UserVerdict::NonRoot {
            uid: uid as u32,
            why: format!("the manifest sets runAsUser: {uid}"),
        },
        _ => image_user(config),
    };
    let mounts = mount_paths(doc, container);
    let mut writable: Vec<String> = Vec::new();
    for path in config
        .volumes
        .iter()
        .map(|v| clean_path(v))
        .chain(["/tmp".to_string()])
    {
        if path != "/" && !mounts.iter().any(|m| covered(&path, m)) && !writable.contains(&path) {
            writable.push(path);
        }
    }
    let non_root = matches!(
        user,
        UserVerdict::NonRoot { .. } | UserVerdict::Named { .. }
    );
    let low_ports = if non_root && !adds_net_bind(doc, container) {
        let mut ports: Vec<ExposedPort> = config
            .exposed_ports
            .iter()
            .filter(|p| p.port < 1024)
            .cloned()
            .collect();
        ports.sort();
        ports.dedup();
        ports
    } else {
        Vec::new()
    };
    Some(ImageDecision {
        image: image.to_string(),
        platform,
        config: Some(config.clone()),
        user,
        writable,
        low_ports,
    })
}

/// The verdict on the image's own `USER`.
fn image_user(config: &ImageConfig) -> UserVerdict {
    let raw = config.user.as_deref().unwrap_or("").trim();
    let Some(spec) = UserSpec::parse(Some(raw)) else {
        return UserVerdict::Root {
            why: "the image sets no USER, so it runs as root".into(),
        };
    };
    match &spec.user {
        Id::Num(0) => UserVerdict::Root {
            why: format!("the image's USER is {raw}, which is root"),
        },
        Id::Name(name) if name == "root" => UserVerdict::Root {
            why: format!("the image's USER is {raw}"),
        },
        Id::Num(uid) if !spec.has_names() => UserVerdict::NonRoot {
            uid: *uid,
            why: format!("the image runs as UID {uid}"),
        },
        // The kubelet checks the user only; a named group still wants its ID written.
        _ => {
            let ids = config.names.clone().unwrap_or_default();
            match ids.uid {
                Some(0) => UserVerdict::Root {
                    why: format!("the image's USER {raw} is UID 0 in its /etc/passwd"),
                },
                Some(uid) if ids.problem.is_none() || matches!(spec.user, Id::Num(_)) => {
                    UserVerdict::Named {
                        name: raw.to_string(),
                        uid,
                        gid: ids.gid,
                    }
                }
                _ => UserVerdict::Unverifiable {
                    name: raw.to_string(),
                    problem: ids.problem.unwrap_or_else(|| match config.names {
                        None => "its /etc/passwd was not read".into(),
                        Some(_) => "no ID was found for it".into(),
                    }),
                },
            }
        }
    }
}

impl ImageDecision {
    /// Whether `runAsNonRoot: true` can be committed without checking the image by hand.
    pub fn run_as_non_root_is_safe(&self) -> bool {
        matches!(
            self.user,
            UserVerdict::NonRoot { .. } | UserVerdict::Named { .. }
        )
    }

    /// One line on what was learned about the image and what it means for the fixes.
    pub fn summary(&self) -> String {
        self.render(&|s| format!("`{s}`"), &|s| s.to_string())
    }

    /// [`ImageDecision::summary`] as Markdown: what the registry or the manifest said is
    /// quoted as code or escaped, never read as Markdown.
    pub fn markdown(&self) -> String {
        self.render(&crate::markdown::code, &crate::markdown::escape)
    }

    fn render(&self, code: &dyn Fn(&str) -> String, text: &dyn Fn(&str) -> String) -> String {
        let config = match (&self.user, &self.config) {
            (UserVerdict::NotChecked { why }, _) => {
                return format!(
                    "Image {} ({}) was not checked: {}; the fixes are made without it.",
                    code(&self.image),
                    text(&self.platform),
                    text(why)
                );
            }
            (_, None) => {
                return format!(
                    "Image {} ({}) was not checked; the fixes are made without it.",
                    code(&self.image),
                    text(&self.platform)
                );
            }
            (_, Some(c)) => c,
        };
        let mut from = vec![text(&config.platform)];
        if let Some(d) = &config.digest {
            from.push(code(&short_digest(d)));
        }
        if let Some(s) = config.source {
            from.push(format!("read from {}", s.describe()));
        }
        let mut parts = vec![match &self.user {
            UserVerdict::NonRoot { why, .. } => {
                format!("{}, so `runAsNonRoot: true` is safe", text(why))
            }
            UserVerdict::Named { name, uid, gid } => format!(
                "its USER {} is UID {uid}{} in the image's own files, so the fix sets runAsUser{} and `runAsNonRoot: true` is safe",
                code(name),
                gid.map(|g| format!(" and GID {g}")).unwrap_or_default(),
                if gid.is_some() {
                    "/runAsGroup to them"
                } else {
                    " to it"
                },
            ),
            UserVerdict::Unverifiable { name, problem } => format!(
                "its USER {} is a name the kubelet cannot verify as non-root and {}, so no `runAsNonRoot: true` is suggested: set runAsUser (and runAsGroup) to the user's numeric IDs, then runAsNonRoot",
                code(name),
                text(problem)
            ),
            // Why the only offer is an unsafe one, and why that ID: a reviewer deciding
            // whether to apply it needs both, and what would make it unnecessary.
            UserVerdict::Root { why } => format!(
                "{}: `runAsNonRoot: true` alone would stop the pod (the kubelet refuses to start a container whose user is root), so it is offered only as an unsafe fix that also sets runAsUser/runAsGroup {NONROOT_ID}, the unprivileged ID distroless images use; unsafe because the image was built for root and that user may not be able to read or write its files; a USER with a non-zero UID in the image makes the fix safe",
                text(why)
            ),
            UserVerdict::NotChecked { why } => text(why),
        }];
        let list = |items: &mut dyn Iterator<Item = String>| {
            items.map(|i| code(&i)).collect::<Vec<_>>().join(", ")
        };
        if !config.volumes.is_empty() {
            parts.push(format!(
                "it declares the volumes {}",
                list(&mut config.volumes.iter().cloned())
            ));
        }
        if !self.writable.is_empty() {
            parts.push(format!(
                "a read-only root file system needs an emptyDir at {}, which the readOnlyRootFilesystem fix adds",
                list(&mut self.writable.iter().cloned())
            ));
        }
        if !self.low_ports.is_empty() {
            parts.push(format!(
                "it exposes {}, below 1024, which a non-root process under `drop: [ALL]` can bind only with NET_BIND_SERVICE added back (an unsafe fix) or by listening on a port above 1023",
                list(&mut self.low_ports.iter().map(|p| p.to_string()))
            ));
        }
        format!(
            "Image {} ({}): {}.",
            code(&self.image),
            from.join(", "),
            parts.join("; ")
        )
    }
}

fn short_digest(d: &str) -> String {
    match d.split_once(':') {
        Some((alg, hex)) if hex.len() > 12 => format!("{alg}:{}", &hex[..12]),
        _ => d.to_string(),
    }
}

/// A container's decision where a fix is planned: with the pod spec that holds its volumes,
/// and whether a container of the pod forbids `runAsNonRoot` on the pod.
#[derive(Debug, Clone)]
pub struct Fitting {
    pub decision: std::sync::Arc<ImageDecision>,
    pub pod_spec: Option<NodeId>,
    /// A container of the same pod that does not set `runAsNonRoot` itself would be stopped by
    /// one on the pod (its image runs as root or as an unverifiable name).
    pub hoist_blocked: bool,
}

impl ImageDecision {
    /// Whether a `runAsNonRoot: true` inherited from the pod would stop this container.
    pub fn refuses_inherited_non_root(&self) -> bool {
        matches!(
            self.user,
            UserVerdict::Root { .. } | UserVerdict::Unverifiable { .. }
        )
    }
}

/// One container and what its image allows, for the outputs (`lint --format json`, `fix`,
/// review comments).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ContainerImage {
    pub path: String,
    pub document: usize,
    /// The line of its `image`.
    pub line: usize,
    pub object: crate::k8s::ObjectInfo,
    pub container: String,
    pub decision: ImageDecision,
}

/// Each container image of the files with the platform its pod runs it on: what image
/// inspection has to read, sorted and without repeats.
pub fn images_to_inspect(
    files: &[crate::source::SourceFile],
    limits: &crate::yaml::Limits,
    kinds: &crate::workloads::WorkloadKinds,
    default_platform: &str,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for file in files {
        let stream = crate::yaml::parse(&file.text, limits);
        for doc in &stream.documents {
            out.extend(images_in(doc, kinds, default_platform));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The container images of one document with the platform each pod runs them on.
pub fn images_in(
    doc: &Document,
    kinds: &crate::workloads::WorkloadKinds,
    default_platform: &str,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let crate::k8s::Contents::Objects(objects) = crate::k8s::objects(doc) else {
        return out;
    };
    for object in &objects {
        for w in &kinds.locate(doc, object).workloads {
            let platform = platform_of(doc, w.pod_spec, default_platform);
            for c in &w.containers {
                if let Some(image) = doc.get(c.node, "image").and_then(|n| doc.str_value(n)) {
                    out.push((image.to_string(), platform.clone()));
                }
            }
        }
    }
    out
}
