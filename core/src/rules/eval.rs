//! Evaluating rule checks against one workload.

use crate::k8s::KubeVersion;
use crate::source::TextRange;
use crate::yaml::{Document, Entry, NodeId, NodeKind, Plain};

pub use super::context::Context;
use super::scope::{parse_path, pod_base, scope_targets, walk};
use super::{Check, Condition, FixAction, Item, Literal, Normalize, Scope};

/// One place where a check fired.
#[derive(Debug, Clone)]
pub struct Hit {
    pub range: TextRange,
    pub message: String,
    /// Index into the workload's containers, when the hit is about one.
    pub container: Option<usize>,
    pub target: Target,
    /// The finding holds unless this ServiceAccount (namespace, name), found in the same
    /// change, disables token automounting.
    pub unless_service_account: Option<(Option<String>, String)>,
    /// A severity decided by what was found (a vulnerability report against its threshold).
    pub severity: Option<crate::rules::Severity>,
    /// What the finding is about, as written (the image reference of the image rules).
    pub subject: Option<String>,
    /// The parse the node ids in `target` belong to.
    pub stamp: crate::parsed::Stamp,
}

/// What a fix would act on: the node the scope visited, the path below it, and what was found.
#[derive(Debug, Clone)]
pub struct Target {
    pub base: NodeId,
    /// For a container: the node its pod-level settings for this path live in (where a
    /// setting every container lacks is best fixed once).
    pub pod: Option<NodeId>,
    pub path: Vec<String>,
    /// The value found at the path, if any (for inherited values, the pod's).
    pub value: Option<NodeId>,
    /// The entry (key and value) that holds the value, if any.
    pub entry: Option<Entry>,
    /// The offending sequence item or mapping key, for per-item conditions.
    pub item: Option<NodeId>,
    pub action: Option<FixAction>,
    /// The value came from the pod's securityContext, not the container's own.
    pub inherited: bool,
    /// Text to append to the value (a digest for `pin-digest`).
    pub suffix: Option<String>,
    /// What of the container's image the fix depends on.
    pub image_fit: Option<super::ImageFit>,
    /// The container's image decision, for a check with `image_fit` (set by the linter).
    pub image: Option<crate::decision::Fitting>,
}

/// A scalar as the comparable text Kubernetes would see.
fn canonical(doc: &Document, node: NodeId) -> Option<String> {
    let s = doc.scalar(node)?;
    Some(match s.resolved() {
        Plain::Null => return None,
        Plain::Bool(b) => b.to_string(),
        Plain::Int(i) => i.to_string(),
        Plain::Float(_) | Plain::Str(_) => s.value.clone(),
    })
}

fn matches_literal(doc: &Document, node: NodeId, lit: &Literal) -> bool {
    let Some(s) = doc.scalar(node) else {
        return false;
    };
    match (lit, s.resolved()) {
        (Literal::Bool(a), Plain::Bool(b)) => *a == b,
        (Literal::Int(a), Plain::Int(b)) => *a == b,
        (Literal::Str(a), _) => *a == s.value,
        _ => false,
    }
}

fn normalize(value: &str, how: Normalize) -> String {
    match how {
        Normalize::Exact => value.to_string(),
        Normalize::Capability => {
            let upper = value.trim().to_ascii_uppercase();
            upper
                .strip_prefix("CAP_")
                .map(str::to_string)
                .unwrap_or(upper)
        }
        Normalize::Path => {
            let trimmed = value.trim_end_matches('/');
            if trimmed.is_empty() && value.starts_with('/') {
                "/".to_string()
            } else {
                trimmed.to_string()
            }
        }
    }
}

fn item_matches(value: &str, items: &[Item], how: Normalize, version: KubeVersion) -> bool {
    let value = normalize(value, how);
    items
        .iter()
        .filter(|i| i.since.is_none_or(|s| version >= s))
        .any(|i| {
            if i.value.contains('*') {
                wildcard(&normalize(&i.value, how), &value)
            } else {
                value == normalize(&i.value, how)
            }
        })
}

/// `*` stands for any run of characters, `/` included: `localhost/*` matches every localhost
/// profile, `/run/*containerd.sock` a containerd socket under any run directory.
fn wildcard(pattern: &str, value: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = value.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// The range a finding points at for a value that is present.
fn present_range(doc: &Document, leaf_entry: Option<Entry>, value: NodeId) -> TextRange {
    match leaf_entry {
        Some(e) => {
            let key = doc.node(e.key).range;
            let v = doc.node(e.value).range;
            let multi_line_collection =
                !matches!(doc.node(value).kind, NodeKind::Scalar(_)) && !doc.node(value).is_flow();
            if multi_line_collection {
                key
            } else {
                key.cover(v)
            }
        }
        None => doc.node(value).range,
    }
}

/// The range a finding points at for a value that is missing: the deepest key that exists on
/// the way, else the container's `name`, else the key that holds the scope's node.
fn missing_range(doc: &Document, text: &str, base: NodeId, deepest: Option<Entry>) -> TextRange {
    if let Some(e) = deepest {
        return doc.node(e.key).range;
    }
    if let Some(name) = doc.entry(base, "name") {
        return doc.node(name.key).range.cover(doc.node(name.value).range);
    }
    if let Some(key) = doc.key_of(base) {
        return doc.node(key).range;
    }
    first_line(doc, text, base)
}

fn first_line(doc: &Document, text: &str, node: NodeId) -> TextRange {
    let r = doc.node(node).range;
    let end = text[r.start()..r.end()]
        .find(['\r', '\n'])
        .map_or(r.end(), |i| r.start() + i);
    TextRange::new(r.start(), end)
}

fn render(template: &str, value: Option<&str>, path: &[String]) -> String {
    let value = match value {
        Some("") => "\"\"",
        Some(v) => v,
        None => "",
    };
    template
        .replace("{value}", value)
        .replace("{path}", &path.join("."))
}

pub fn evaluate(cx: &Context<'_>, check: &Check) -> Vec<Hit> {
    if check.since.is_some_and(|s| cx.version < s) || check.until.is_some_and(|u| cx.version >= u) {
        return Vec::new();
    }
    let doc = cx.doc;
    let segs = parse_path(&check.path);
    let mut hits = Vec::new();
    for (base, container) in scope_targets(cx, check) {
        // A container without an image, or a pod spec without containers, is a fragment (a
        // kustomize patch): what it sets can be wrong, what it leaves out means nothing.
        let fragment = match container {
            Some(i) => doc.get(cx.containers[i].node, "image").is_none(),
            None => cx
                .containers
                .iter()
                .all(|c| doc.get(c.node, "image").is_none()),
        };
        for leaf in walk(doc, base, &segs) {
            let (value, entry, inherited) = match (leaf.value, check.inherit && container.is_some())
            {
                (None, true) => {
                    let pod_leaf = pod_base(cx, &segs)
                        .and_then(|pod| walk(doc, pod, &segs).into_iter().next());
                    match pod_leaf.and_then(|l| l.value.map(|v| (v, l.entry))) {
                        Some((v, e)) => (Some(v), e, true),
                        None => (None, None, false),
                    }
                }
                (v, _) => (v, leaf.entry, false),
            };
            let mut hit = |range: TextRange, shown: Option<String>, item: Option<NodeId>| {
                hits.push(Hit {
                    range,
                    message: render(&check.message, shown.as_deref(), &leaf.path),
                    container,
                    target: Target {
                        base,
                        pod: container.and_then(|_| pod_base(cx, &segs)),
                        path: leaf.path.clone(),
                        value,
                        entry,
                        item,
                        action: check.fix.clone(),
                        inherited,
                        suffix: None,
                        image_fit: check.image_fit,
                        image: None,
                    },
                    unless_service_account: None,
                    severity: None,
                    subject: None,
                    stamp: cx.stamp,
                });
            };
            // Inherited values are reported at the container that inherits them.
            let at_value = |v: NodeId| {
                if inherited {
                    missing_range(doc, cx.text, base, leaf.deepest)
                } else {
                    present_range(doc, entry, v)
                }
            };
            let missing_at = missing_range(doc, cx.text, base, leaf.deepest);
            // An annotation without a value is the empty string to the API server.
            let value = match (value, check.scope) {
                (None, Scope::Annotation) => Some(base),
                (v, _) => v,
            };
            let shown = value
                .and_then(|v| canonical(doc, v))
                .or_else(|| (check.scope == Scope::Annotation).then(String::new));
            let in_list = |items: &[Item], v: NodeId| {
                let text = match canonical(doc, v) {
                    Some(s) => s,
                    None if check.scope == Scope::Annotation => String::new(),
                    None => return false,
                };
                item_matches(&text, items, check.normalize, cx.version)
            };
            match &check.condition {
                Condition::Equals(lit) => {
                    if let Some(v) = value.filter(|&v| matches_literal(doc, v, lit)) {
                        hit(at_value(v), shown, None);
                    }
                }
                Condition::NotEquals(lit) => {
                    if let Some(v) = value.filter(|&v| !matches_literal(doc, v, lit)) {
                        hit(at_value(v), shown, None);
                    }
                }
                Condition::MustEqual(lit) => match value {
                    Some(v) if matches_literal(doc, v, lit) => {}
                    Some(v) => hit(at_value(v), shown, None),
                    None if !fragment => hit(missing_at, None, None),
                    None => {}
                },
                Condition::In(items) => {
                    if let Some(v) = value.filter(|&v| in_list(items, v)) {
                        hit(at_value(v), shown, None);
                    }
                }
                Condition::NotIn(items) => {
                    if let Some(v) = value.filter(|&v| !in_list(items, v)) {
                        hit(at_value(v), shown, None);
                    }
                }
                Condition::MustBeIn(items) => match value {
                    Some(v) if in_list(items, v) => {}
                    Some(v) => hit(at_value(v), shown, None),
                    None if !fragment => hit(missing_at, None, None),
                    None => {}
                },
                Condition::AnyIn(items) | Condition::AnyNotIn(items) => {
                    let want_in = matches!(check.condition, Condition::AnyIn(_));
                    if let Some(v) = value {
                        for &item in doc.items(v) {
                            let Some(item) = doc.resolve(item) else {
                                continue;
                            };
                            if canonical(doc, item).is_some() && in_list(items, item) == want_in {
                                let range = if inherited {
                                    missing_at
                                } else {
                                    doc.node(item).range
                                };
                                hit(range, canonical(doc, item), Some(item));
                            }
                        }
                    }
                }
                Condition::MustContain(item) => match value {
                    Some(v)
                        if doc.items(v).iter().any(|&i| {
                            canonical(doc, i).is_some_and(|s| {
                                item_matches(
                                    &s,
                                    std::slice::from_ref(item),
                                    check.normalize,
                                    cx.version,
                                )
                            })
                        }) => {}
                    Some(v) => hit(at_value(v), shown, None),
                    None if !fragment => hit(missing_at, None, None),
                    None => {}
                },
                Condition::Present => {
                    if let Some(v) = value {
                        hit(at_value(v), shown, None);
                    }
                }
                Condition::Missing => {
                    if value.is_none() && !fragment {
                        hit(missing_at, None, None);
                    }
                }
                Condition::KeysNotIn(items) => {
                    if let Some(v) = value {
                        for e in doc.entries(v) {
                            let Some(key) = doc.key_str(e.key) else {
                                continue;
                            };
                            if key != "name"
                                && !item_matches(key, items, check.normalize, cx.version)
                            {
                                let range = doc.node(e.key).range;
                                hit(range, Some(key.to_string()), Some(e.key));
                            }
                        }
                    }
                }
                Condition::MutableImageTag(spec) => {
                    if let Some(v) = value
                        && let Some(image) = doc.str_value(v)
                        && let Some(reason) = mutable_tag(image, &spec.tags)
                    {
                        hit(at_value(v), Some(format!("{image} ({reason})")), None);
                    }
                }
                Condition::InvalidImageReference => {
                    if let Some(v) = value
                        && let Some(image) = doc.str_value(v)
                        && let Err(e) = crate::image::parse(image)
                    {
                        hit(at_value(v), Some(format!("`{image}`: {e}")), None);
                    }
                }
                Condition::ImageNotPinned => {
                    if let Some(v) = value
                        && let Some(image) = doc.str_value(v)
                        && crate::image::parse(image).is_ok_and(|r| r.digest.is_none())
                    {
                        hit(at_value(v), Some(image.to_string()), None);
                        let digest = cx.facts.images.digests.get(image);
                        if let Some(last) = hits.last_mut() {
                            match digest {
                                Some(d) => last.target.suffix = Some(format!("@{d}")),
                                // No digest known: nothing to suggest.
                                None => last.target.action = None,
                            }
                        }
                    }
                }
                Condition::RegistryNotAllowed => {
                    if let Some(v) = value
                        && !cx.images.allowed_registries.is_empty()
                        && let Some(image) = doc.str_value(v)
                        && let Ok(r) = crate::image::parse(image)
                        && !crate::image::allowed(&r, &cx.images.allowed_registries)
                    {
                        hit(
                            at_value(v),
                            Some(format!(
                                "{image} ({}) comes from outside the allowed registries ({})",
                                r.name(),
                                cx.images.allowed_registries.join(", ")
                            )),
                            None,
                        );
                    }
                }
                Condition::ImageVulnerable => {
                    if let Some(v) = value
                        && let Some(image) = doc.str_value(v)
                        && let Some(crate::vuln::ScanOutcome::Report(report)) =
                            cx.facts.images.scans.get(image)
                        && let Some(worst) = report.worst()
                    {
                        hit(
                            at_value(v),
                            Some(vulnerability_summary(image, report)),
                            None,
                        );
                        if let Some(last) = hits.last_mut() {
                            last.subject = Some(image.to_string());
                            last.severity = Some(if worst >= cx.images.fail_on {
                                crate::rules::Severity::Error
                            } else {
                                crate::rules::Severity::Note
                            });
                        }
                    }
                }
                Condition::ImageScanFailed => {
                    if let Some(v) = value
                        && let Some(image) = doc.str_value(v)
                    {
                        match cx.facts.images.scans.get(image) {
                            Some(crate::vuln::ScanOutcome::Failed(why)) => {
                                hit(at_value(v), Some(format!("{image}: {why}")), None);
                            }
                            // A clean report that read nothing is said so, as a note.
                            Some(crate::vuln::ScanOutcome::Report(r)) if !r.packages_found => {
                                hit(
                                    at_value(v),
                                    Some(format!(
                                        "{image}: {} reported no operating-system packages for this image, so its clean result may only mean it had little to read (a scratch, distroless or unknown base)",
                                        r.scanner
                                    )),
                                    None,
                                );
                                if let Some(last) = hits.last_mut() {
                                    last.severity = Some(crate::rules::Severity::Note);
                                }
                            }
                            _ => {}
                        }
                    }
                }
                Condition::SecretEnv(spec) => {
                    if let Some(v) = value {
                        for &item in doc.items(v) {
                            let Some(item) = doc.resolve(item) else {
                                continue;
                            };
                            let name = doc.get(item, "name").and_then(|n| doc.str_value(n));
                            let Some(literal) = doc.get(item, "value") else {
                                continue;
                            };
                            let Some(text) = doc.str_value(literal) else {
                                continue;
                            };
                            if text.is_empty() || text.starts_with("$(") && text.ends_with(')') {
                                continue;
                            }
                            let by_value =
                                spec.value_markers.iter().any(|m| text.contains(m.as_str()));
                            let by_name = name.is_some_and(|n| looks_secret(n, spec));
                            if by_value || by_name {
                                let range = doc
                                    .entry(item, "value")
                                    .map_or(doc.node(item).range, |e| doc.node(e.key).range);
                                hit(range, name.map(str::to_string), Some(item));
                            }
                        }
                    }
                }
                Condition::ServiceAccountToken => {
                    let explicit = value.and_then(|v| doc.scalar(v)).map(|s| s.resolved());
                    match explicit {
                        Some(Plain::Bool(false)) => {}
                        Some(_) => hit(at_value(value.unwrap_or(base)), shown, None),
                        None if !fragment => {
                            let pod = |key| cx.workload.pod_for(doc, key);
                            let sa = pod("serviceAccountName")
                                .and_then(|p| doc.get(p, "serviceAccountName"))
                                .or_else(|| {
                                    pod("serviceAccount").and_then(|p| doc.get(p, "serviceAccount"))
                                })
                                .and_then(|n| doc.str_value(n))
                                .filter(|s| !s.is_empty())
                                .unwrap_or("default")
                                .to_string();
                            hit(missing_at, None, None);
                            if let Some(last) = hits.last_mut() {
                                last.unless_service_account =
                                    Some((cx.workload.object.info.namespace.clone(), sa));
                            }
                        }
                        None => {}
                    }
                }
            }
        }
    }
    hits
}

/// Split an env var name into lower-case words: `DB_PASSWORD`, `dbPassword`, `db-password`.
fn words(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if !c.is_ascii_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        if c.is_ascii_uppercase() && prev_lower && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        cur.push(c.to_ascii_lowercase());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn looks_secret(name: &str, spec: &super::SecretEnv) -> bool {
    let ws = words(name);
    if ws
        .iter()
        .any(|w| spec.name_ignore_words.iter().any(|i| i == w))
    {
        return false;
    }
    let lower = name.to_ascii_lowercase();
    ws.iter().any(|w| spec.name_words.iter().any(|s| s == w))
        || spec
            .name_suffixes
            .iter()
            .any(|s| lower.ends_with(s.as_str()))
}

/// Why an image reference is mutable, if it is: no digest, and no tag or a moving one. An
/// unparsable reference is `image-reference-invalid`'s to report, not this.
pub fn mutable_tag(image: &str, moving: &[String]) -> Option<String> {
    let r = crate::image::parse(image).ok()?;
    if r.digest.is_some() {
        return None;
    }
    match &r.tag {
        None => Some("no tag, so `latest`".to_string()),
        Some(tag) if moving.iter().any(|m| m == tag) => Some(format!("tag `{tag}`")),
        Some(_) => None,
    }
}

/// One line for a vulnerable image: counts by severity, then the worst few.
pub fn vulnerability_summary(image: &str, report: &crate::vuln::ImageReport) -> String {
    let counts = report.counts();
    let parts: Vec<String> = crate::vuln::VulnSeverity::ALL
        .iter()
        .filter_map(|s| counts.get(s).map(|n| format!("{n} {s}")))
        .collect();
    let worst: Vec<String> = report
        .worst_n(3)
        .iter()
        .map(|v| {
            let fixed = v
                .fixed
                .as_deref()
                .map_or_else(|| "no fix yet".to_string(), |f| format!("fixed in {f}"));
            format!("{} in {} {} ({fixed})", v.id, v.package, v.installed)
        })
        .collect();
    format!(
        "{image} has known vulnerabilities ({}, by {}); worst: {}",
        parts.join(", "),
        report.scanner,
        worst.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_tags() {
        let moving = vec!["latest".to_string()];
        assert!(mutable_tag("nginx", &moving).is_some());
        assert!(mutable_tag("nginx:latest", &moving).is_some());
        assert!(mutable_tag("registry:5000/team/app", &moving).is_some());
        assert!(mutable_tag("registry:5000/team/app:1.2", &moving).is_none());
        let digest = format!("sha256:{}", "a".repeat(64));
        assert!(mutable_tag(&format!("nginx@{digest}"), &moving).is_none());
        assert!(mutable_tag(&format!("nginx:latest@{digest}"), &moving).is_none());
        // Unparsable: another rule's finding.
        assert!(mutable_tag("Nginx", &moving).is_none());
    }

    #[test]
    fn env_names_split_into_words() {
        assert_eq!(words("DB_PASSWORD"), ["db", "password"]);
        assert_eq!(words("dbPassword"), ["db", "password"]);
        assert_eq!(words("MONKEY_COUNT"), ["monkey", "count"]);
    }

    #[test]
    fn wildcards_span_any_characters() {
        assert!(wildcard("localhost/*", "localhost/my-profile"));
        assert!(wildcard("localhost/*", "localhost/"));
        assert!(!wildcard("localhost/*", "runtime/default"));
        assert!(wildcard(
            "/run/*containerd.sock",
            "/run/containerd/containerd.sock"
        ));
        assert!(wildcard(
            "/run/*containerd.sock",
            "/run/k3s/containerd/containerd.sock"
        ));
        assert!(wildcard("/run/*containerd.sock", "/run/containerd.sock"));
        assert!(!wildcard("/run/*containerd.sock", "/run/containerd"));
        assert!(!wildcard(
            "/run/*containerd.sock",
            "/var/run/containerd.sock"
        ));
        assert!(
            wildcard("a*b*c", "abc") && wildcard("a*b*c", "axxbyyc") && !wildcard("a*b*c", "acb")
        );
    }

    #[test]
    fn capabilities_normalise() {
        assert_eq!(
            normalize("cap_sys_admin", Normalize::Capability),
            "SYS_ADMIN"
        );
        assert_eq!(normalize("/var/run/", Normalize::Path), "/var/run");
        assert_eq!(normalize("/", Normalize::Path), "/");
    }
}
