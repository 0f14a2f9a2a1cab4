//! A `ValidatingAdmissionPolicy` (admissionregistration.k8s.io/v1) written from the rule files:
//! the checks of `rules/*.yaml` translated primitive by primitive into CEL, so that a cluster
//! without the webhook still enforces the same rules, read from the same catalog.
//!
//! Each rule of the profile becomes one validation: its checks' scopes (pod, containers,
//! volumes, ports, probe handlers, hostPath mounts, annotations), paths and conditions, its
//! Windows and user-namespace exemptions, its version gates (resolved here, for one Kubernetes
//! version) and the exemption annotations the linter reads (`kubeharden.dev/ignore`, Polaris's,
//! kube-linter's). A rule one of whose primitives has no CEL translation is left out whole, with
//! the reason, rather than enforced in part.
//!
//! The CEL stays within what both Kubernetes' CEL environment and common interpreters provide:
//! the standard macros (`has`, `all`, `exists`, `filter`, `map`), `matches` (RE2 syntax),
//! `startsWith`, `string()`, and the strings extension Kubernetes enables (`split`, `trim`,
//! `lowerAscii`, `substring`).

use std::fmt::Write;

use crate::k8s::{ContainerKind, KubeVersion};
use crate::rules::{
    Check, Condition, ExemptWhen, Item, Literal, Normalize, Profile, Registry, Rule, Scope, Seg,
    parse_path,
};

/// The API group and resource of each pod-bearing kind of Kubernetes' own groups: what the
/// policy and the webhook configurations route. The kinds' pod paths come from
/// `rules/workloads/kubernetes.yaml`.
pub const RESOURCES: [(&str, &str, &str); 9] = [
    ("Pod", "", "pods"),
    ("Deployment", "apps", "deployments"),
    ("StatefulSet", "apps", "statefulsets"),
    ("DaemonSet", "apps", "daemonsets"),
    ("ReplicaSet", "apps", "replicasets"),
    ("ReplicationController", "", "replicationcontrollers"),
    ("Job", "batch", "jobs"),
    ("CronJob", "batch", "cronjobs"),
    ("PodTemplate", "", "podtemplates"),
];

const IGNORE: &str = "kubeharden.dev/ignore";
const IGNORE_REASON: &str = "kubeharden.dev/ignore-reason";
/// The engine's own diagnostic for a malformed `kubeharden.dev/ignore`, which CEL can check.
const INVALID_EXEMPTION: &str = "invalid-exemption";

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(
        "the workload data gives {kind} no single pod template or pod spec at a plain path, which the policy needs"
    )]
    PodPath { kind: String },
}

/// A CEL expression with a name (a variable or a match condition).
#[derive(Debug, Clone, PartialEq)]
pub struct Named {
    pub name: String,
    pub expression: String,
}

/// One rule as a validation: `expression` is true when the object passes the rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Validation {
    pub rule: String,
    pub expression: String,
    pub message: String,
}

/// A rule of the profile that the policy does not implement, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct LeftOut {
    pub rule: String,
    pub profile: Profile,
    pub reason: String,
}

/// The policy of one profile at one Kubernetes version.
#[derive(Debug, Clone)]
pub struct Policy {
    pub profile: Profile,
    pub version: KubeVersion,
    /// The version was asked for (it then names the policy and selects namespaces by label).
    pub pinned: bool,
    /// (kind, API group, resource) matched.
    pub resources: Vec<(String, String, String)>,
    pub match_conditions: Vec<Named>,
    pub variables: Vec<Named>,
    pub validations: Vec<Validation>,
    pub left_out: Vec<LeftOut>,
}

/// How a binding acts on a failed validation, named as the webhook's modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Enforce,
    Warn,
    Audit,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Enforce => "enforce",
            Action::Warn => "warn",
            Action::Audit => "audit",
        }
    }

    fn validation_action(self) -> &'static str {
        match self {
            Action::Enforce => "Deny",
            Action::Warn => "Warn",
            Action::Audit => "Audit",
        }
    }
}

impl std::str::FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "enforce" => Ok(Action::Enforce),
            "warn" => Ok(Action::Warn),
            "audit" => Ok(Action::Audit),
            _ => Err(format!(
                "unknown mode `{s}`; expected enforce, warn or audit"
            )),
        }
    }
}

/// Where one kind keeps its pod: the pod spec and the pod's metadata, as key paths from the
/// object.
struct PodPath {
    kinds: Vec<String>,
    spec: Vec<String>,
    metadata: Vec<String>,
}

fn pod_paths(registry: &Registry) -> Result<Vec<PodPath>, PolicyError> {
    let mut out: Vec<PodPath> = Vec::new();
    for (kind, group, _) in RESOURCES {
        let err = || PolicyError::PodPath { kind: kind.into() };
        let entry = registry.workloads().find(group, kind).ok_or_else(err)?;
        let [location] = entry.pods.as_slice() else {
            return Err(err());
        };
        let keys = |p: &crate::workloads::LocationPath| -> Option<Vec<String>> {
            Some(p.plain_keys()?.into_iter().map(str::to_string).collect())
        };
        let (spec, metadata) = match (&location.template, &location.spec) {
            (Some(t), None) => {
                let base = keys(t).ok_or_else(err)?;
                let with = |k: &str| {
                    let mut p = base.clone();
                    p.push(k.to_string());
                    p
                };
                (with("spec"), with("metadata"))
            }
            (None, Some(s)) => (keys(s).ok_or_else(err)?, vec!["metadata".to_string()]),
            _ => return Err(err()),
        };
        match out
            .iter_mut()
            .find(|p| p.spec == spec && p.metadata == metadata)
        {
            Some(p) => p.kinds.push(kind.to_string()),
            None => out.push(PodPath {
                kinds: vec![kind.to_string()],
                spec,
                metadata,
            }),
        }
    }
    Ok(out)
}

/// A CEL string literal.
fn q(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| q(s)).collect();
    format!("[{}]", quoted.join(", "))
}

/// A literal regex fragment (RE2 and the regex crate agree on these escapes).
fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A list item as a regex: `*` stands for any run of characters.
fn glob(s: &str) -> String {
    s.split('*')
        .map(regex_escape)
        .collect::<Vec<_>>()
        .join(".*")
}

/// `a.b.c` as the boolean "present" test of CEL, and the path's value.
fn path_of(base: &str, keys: &[String]) -> String {
    let mut out = base.to_string();
    for k in keys {
        out.push('.');
        out.push_str(k);
    }
    out
}

/// Every prefix of the path present.
fn has_path(base: &str, keys: &[String]) -> String {
    (1..=keys.len())
        .map(|n| format!("has({})", path_of(base, &keys[..n])))
        .collect::<Vec<_>>()
        .join(" && ")
}

/// The value at a path, or `default` where any key on the way is missing.
fn value_or(base: &str, keys: &[String], default: &str) -> String {
    format!(
        "{} ? {} : {default}",
        has_path(base, keys),
        path_of(base, keys)
    )
}

/// Kind by kind, the expression each kind's paths give.
fn by_kind(paths: &[PodPath], each: impl Fn(&PodPath) -> String) -> String {
    let mut out = String::new();
    for (i, p) in paths.iter().enumerate() {
        if i + 1 == paths.len() {
            let _ = write!(out, "({})", each(p));
        } else {
            let test = match p.kinds.as_slice() {
                [one] => format!("object.kind == {}", q(one)),
                many => format!("object.kind in {}", list(many)),
            };
            let _ = writeln!(out, "{test} ? ({}) :", each(p));
        }
    }
    out
}

/// Whether a value (a CEL expression) matches one of the items, compared as the engine
/// compares: its canonical text (`string()`), normalised.
fn matcher(items: &[Item], how: Normalize, version: KubeVersion, x: &str) -> String {
    let items: Vec<&Item> = items
        .iter()
        .filter(|i| i.since.is_none_or(|s| version >= s))
        .collect();
    if items.is_empty() {
        return "false".into();
    }
    let text = format!("string({x})");
    match how {
        Normalize::Exact => {
            let plain: Vec<String> = items
                .iter()
                .filter(|i| !i.value.contains('*'))
                .map(|i| i.value.clone())
                .collect();
            let wild: Vec<String> = items
                .iter()
                .filter(|i| i.value.contains('*'))
                .map(|i| glob(&i.value))
                .collect();
            let mut parts = Vec::new();
            match plain.as_slice() {
                [] => {}
                [one] => parts.push(format!("{text} == {}", q(one))),
                many => parts.push(format!("{text} in {}", list(many))),
            }
            if !wild.is_empty() {
                parts.push(format!(
                    "{text}.matches({})",
                    q(&format!("^(?:{})$", wild.join("|")))
                ));
            }
            parts.join(" || ")
        }
        // Trailing slashes do not count, on either side; `/` stays `/`.
        Normalize::Path => {
            let alternatives: Vec<String> = items
                .iter()
                .map(|i| {
                    let trimmed = i.value.trim_end_matches('/');
                    if trimmed.is_empty() && i.value.starts_with('/') {
                        "/+".to_string()
                    } else if trimmed.is_empty() {
                        String::new()
                    } else {
                        format!("{}/*", glob(trimmed))
                    }
                })
                .collect();
            format!(
                "{text}.matches({})",
                q(&format!("^(?:{})$", alternatives.join("|")))
            )
        }
        // As container runtimes read capabilities: any case, with or without `CAP_`.
        Normalize::Capability => {
            let alternatives: Vec<String> = items
                .iter()
                .map(|i| {
                    let upper = i.value.trim().to_ascii_uppercase();
                    glob(upper.strip_prefix("CAP_").unwrap_or(&upper))
                })
                .collect();
            format!(
                "{text}.matches({})",
                q(&format!(
                    "(?i)^\\s*(?:CAP_)?(?:{})\\s*$",
                    alternatives.join("|")
                ))
            )
        }
    }
}

fn literal(l: &Literal) -> String {
    match l {
        Literal::Bool(b) => b.to_string(),
        Literal::Int(i) => i.to_string(),
        Literal::Str(s) => q(s),
    }
}

/// What a condition makes of a value that is present (`v`) and of one that is missing: the
/// expression that passes. `None`: the condition has no CEL translation, with the reason.
struct Translated {
    present: Box<dyn Fn(&str) -> String>,
    /// Whether a missing value fails (unless the pod is a fragment).
    missing_fails: bool,
}

fn translate(check: &Check, version: KubeVersion) -> Result<Translated, &'static str> {
    let how = check.normalize;
    let items = |items: &[Item]| items.to_vec();
    let t = |present: Box<dyn Fn(&str) -> String>, missing_fails: bool| {
        Ok(Translated {
            present,
            missing_fails,
        })
    };
    match &check.condition {
        Condition::Equals(l) => {
            let l = literal(l);
            t(Box::new(move |v| format!("{v} != {l}")), false)
        }
        Condition::NotEquals(l) => {
            let l = literal(l);
            t(Box::new(move |v| format!("{v} == {l}")), false)
        }
        Condition::MustEqual(l) => {
            let l = literal(l);
            t(Box::new(move |v| format!("{v} == {l}")), true)
        }
        Condition::In(list) => {
            let list = items(list);
            t(
                Box::new(move |v| format!("!({})", matcher(&list, how, version, v))),
                false,
            )
        }
        Condition::NotIn(list) => {
            let list = items(list);
            t(Box::new(move |v| matcher(&list, how, version, v)), false)
        }
        Condition::MustBeIn(list) => {
            let list = items(list);
            t(Box::new(move |v| matcher(&list, how, version, v)), true)
        }
        Condition::AnyIn(list) => {
            let list = items(list);
            t(
                Box::new(move |v| format!("!{v}.exists(x, {})", matcher(&list, how, version, "x"))),
                false,
            )
        }
        Condition::AnyNotIn(list) => {
            let list = items(list);
            t(
                Box::new(move |v| format!("{v}.all(x, {})", matcher(&list, how, version, "x"))),
                false,
            )
        }
        Condition::MustContain(item) => {
            let list = vec![item.clone()];
            t(
                Box::new(move |v| format!("{v}.exists(x, {})", matcher(&list, how, version, "x"))),
                true,
            )
        }
        Condition::Present => t(Box::new(|_| "false".into()), false),
        Condition::Missing => t(Box::new(|_| "true".into()), true),
        Condition::KeysNotIn(list) => {
            let list = items(list);
            t(
                Box::new(move |v| {
                    format!(
                        "{v}.all(k, k == 'name' || {})",
                        matcher(&list, how, version, "k")
                    )
                }),
                false,
            )
        }
        // One object is all the policy sees, as the webhook: a ServiceAccount elsewhere that
        // turns the token off cannot count, so the pod must say false itself.
        Condition::ServiceAccountToken => t(Box::new(|v| format!("{v} == false")), true),
        Condition::MutableImageTag(_) | Condition::InvalidImageReference => Err(
            "it reads image references by the distribution grammar (Docker Hub's default registry and `library/`, tag and digest syntax, the 255-character name limit), which CEL has no parser for",
        ),
        Condition::ImageNotPinned => Err(
            "it reads image references by the distribution grammar, which CEL has no parser for; and it is off by default",
        ),
        Condition::RegistryNotAllowed => Err(
            "it compares images, normalised by the distribution grammar, with the configuration's allowed registries, which a policy generated without configuration does not have",
        ),
        Condition::ImageVulnerable | Condition::ImageScanFailed => {
            Err("it needs a vulnerability scan of the image, which CEL cannot run")
        }
        Condition::SecretEnv(spec) => {
            let test = secret_env(spec).ok_or(
                "its word lists hold more than lower-case letters, which the word patterns cannot mirror",
            )?;
            t(Box::new(move |v| format!("{v}.all(e, {test})")), false)
        }
    }
}

/// An env entry (`e`) that is no literal secret, as the engine reads it: a literal value that
/// is not empty and not a `$(VAR)` reference is a secret when it holds a marker, or when its
/// name has a secret word and no word that marks it as something else (`PASSWORD_FILE`), or
/// ends in a secret suffix.
fn secret_env(spec: &crate::rules::SecretEnv) -> Option<String> {
    let name = "e.name";
    let words = |list: &[String]| -> Option<String> {
        let pattern = word_pattern(list)?;
        Some(format!("{name}.matches({})", q(&pattern)))
    };
    let mut secret_name = vec![words(&spec.name_words)?];
    for suffix in &spec.name_suffixes {
        secret_name.push(format!(
            "{name}.lowerAscii().endsWith({})",
            q(&suffix.to_ascii_lowercase())
        ));
    }
    let by_name = format!(
        "(has({name}) && !{} && ({}))",
        words(&spec.name_ignore_words)?,
        secret_name.join(" || ")
    );
    let mut secret = spec
        .value_markers
        .iter()
        .map(|m| format!("e.value.contains({})", q(m)))
        .collect::<Vec<_>>();
    secret.push(by_name);
    Some(format!(
        "!has(e.value) || e.value == '' || (e.value.startsWith('$(') && e.value.endsWith(')')) || !({})",
        secret.join(" || ")
    ))
}

/// A regex that finds any of `words` as a word of a name, as the engine splits names: at
/// characters other than ASCII letters and digits, and before an upper-case letter that
/// follows a lower-case letter or a digit (`dbPassword`, `DB_PASSWORD`, `db-password`), each
/// word compared in lower case. A word is thus upper-case letters then lower-case ones, and
/// the pattern spells each way a word can be written so, with the boundaries that end it.
/// `None` when a word is not lower-case ASCII letters.
fn word_pattern(words: &[String]) -> Option<String> {
    if words.is_empty() {
        return Some("$^".into());
    }
    if words
        .iter()
        .any(|w| w.is_empty() || !w.bytes().all(|b| b.is_ascii_lowercase()))
    {
        return None;
    }
    // Upper-case letters from position `i` on, then the rest in lower case; never all upper.
    fn mixed(w: &[u8], i: usize) -> String {
        let lower = String::from_utf8_lossy(&w[i..]).to_string();
        if i + 1 >= w.len() {
            return lower;
        }
        format!(
            "(?:{lower}|{}{})",
            (w[i] as char).to_ascii_uppercase(),
            mixed(w, i + 1)
        )
    }
    let lower: Vec<String> = words.to_vec();
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    let capitalised: Vec<String> = words
        .iter()
        .filter(|w| w.len() > 1)
        .map(|w| {
            let b = w.as_bytes();
            format!("{}{}", (b[0] as char).to_ascii_uppercase(), mixed(b, 1))
        })
        .collect();
    // A word in lower case starts after no letter or digit at all; one that starts upper-case
    // after anything but an upper-case letter. One that ends in lower case ends before
    // anything but a lower-case letter or digit; one in upper case before no letter or digit.
    let mut alternatives = vec![
        format!("(?:^|[^A-Za-z0-9])(?:{})(?:$|[^a-z0-9])", lower.join("|")),
        format!("(?:^|[^A-Z])(?:{})(?:$|[^A-Za-z0-9])", upper.join("|")),
    ];
    if !capitalised.is_empty() {
        alternatives.push(format!(
            "(?:^|[^A-Z])(?:{})(?:$|[^a-z0-9])",
            capitalised.join("|")
        ));
    }
    Some(alternatives.join("|"))
}

/// Walk a path from `base`, with `present` for the value at its end and `missing` where a key
/// is missing (past a `[*]`, a missing key is no value at all, as in the engine).
fn walk(
    base: &str,
    segs: &[Seg],
    present: &dyn Fn(&str) -> String,
    missing: &str,
    depth: usize,
) -> String {
    match segs.split_first() {
        None => present(base),
        Some((Seg::Key(k), rest)) => {
            let next = format!("{base}.{k}");
            let inner = walk(&next, rest, present, missing, depth);
            let missing = if rest.contains(&Seg::Each) {
                "true"
            } else {
                missing
            };
            match missing {
                "true" => format!("(!has({next}) || {inner})"),
                "false" => format!("(has({next}) && {inner})"),
                m => format!("(has({next}) ? {inner} : {m})"),
            }
        }
        Some((Seg::Each, rest)) => {
            let var = format!("i{depth}");
            format!(
                "{base}.all({var}, {})",
                walk(&var, rest, present, missing, depth + 1)
            )
        }
    }
}

fn container_list(kinds: Option<&[ContainerKind]>) -> String {
    let kinds: &[ContainerKind] = kinds.unwrap_or(&ContainerKind::ALL);
    if ContainerKind::ALL.iter().all(|k| kinds.contains(k)) {
        return "variables.allContainers".into();
    }
    let lists: Vec<String> = ContainerKind::ALL
        .iter()
        .filter(|k| kinds.contains(k))
        .map(|k| format!("variables.{}", k.field()))
        .collect();
    match lists.as_slice() {
        [one] => one.clone(),
        _ => format!("({})", lists.join(" + ")),
    }
}

const POD: &str = "variables.podSpec";
const POD_FRAGMENT: &str = "variables.podFragment";
const CONTAINER_FRAGMENT: &str = "!has(c.image)";

/// One check as the CEL that passes where it finds nothing.
fn check_expr(check: &Check, version: KubeVersion) -> Result<String, &'static str> {
    let tr = translate(check, version)?;
    let segs = parse_path(&check.path);
    let present = &*tr.present;
    let missing = |fragment: &str| {
        if tr.missing_fails {
            fragment.to_string()
        } else {
            "true".to_string()
        }
    };
    let containers = container_list(check.containers.as_deref());
    let pod_part = || walk(POD, &segs, present, &missing(POD_FRAGMENT), 0);
    let container_part = || {
        // A container's field falls back to the pod's, which may be missing too.
        let on_missing = if check.inherit {
            walk(POD, &segs, present, &missing(CONTAINER_FRAGMENT), 0)
        } else {
            missing(CONTAINER_FRAGMENT)
        };
        format!(
            "{containers}.all(c, {})",
            walk("c", &segs, present, &on_missing, 0)
        )
    };
    Ok(match check.scope {
        Scope::Pod => pod_part(),
        Scope::Container => container_part(),
        Scope::PodAndContainers => format!("{} &&\n{}", pod_part(), container_part()),
        Scope::Volume => format!(
            "variables.volumes.all(v, {})",
            walk("v", &segs, present, &missing(POD_FRAGMENT), 0)
        ),
        Scope::ContainerPort => format!(
            "{containers}.all(c, !has(c.ports) || c.ports.all(p, {}))",
            walk("p", &segs, present, &missing(CONTAINER_FRAGMENT), 0)
        ),
        Scope::ProbeHandler => {
            let mut handlers = Vec::new();
            for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                handlers.push(vec![probe.to_string()]);
            }
            for hook in ["postStart", "preStop"] {
                handlers.push(vec!["lifecycle".to_string(), hook.to_string()]);
            }
            let mut parts = Vec::new();
            for h in handlers {
                for kind in ["httpGet", "tcpSocket"] {
                    let mut keys = h.clone();
                    keys.push(kind.to_string());
                    let at = path_of("c", &keys);
                    parts.push(format!(
                        "(!({}) || {})",
                        has_path("c", &keys),
                        walk(&at, &segs, present, &missing(CONTAINER_FRAGMENT), 0)
                    ));
                }
            }
            format!("{containers}.all(c, {})", parts.join(" && "))
        }
        Scope::HostPathMount => format!(
            "{containers}.all(c, !has(c.volumeMounts) || c.volumeMounts.all(m, !(has(m.name) && m.name in variables.hostPathVolumes) || {}))",
            walk("m", &segs, present, &missing(CONTAINER_FRAGMENT), 0)
        ),
        Scope::Annotation => {
            let prefix = check.annotation_prefix.as_deref().unwrap_or_default();
            let value = "variables.podAnnotations[k]";
            let per_container = if check.annotation_per_container {
                format!(
                    " || !(k.substring({}) in variables.containerNames)",
                    prefix.chars().count()
                )
            } else {
                String::new()
            };
            format!(
                "variables.podAnnotations.all(k, !k.startsWith({}){per_container} || {})",
                q(prefix),
                walk(value, &segs, present, "true", 0)
            )
        }
    })
}

/// The annotations that exempt the object from a rule, as the linter reads them.
fn exempted(rule: &Rule) -> String {
    let mut tests = vec![format!(
        "({} in m && m[{}].split(',').exists(s, s.trim() == {}))",
        q(IGNORE),
        q(IGNORE),
        q(&rule.id)
    )];
    for check in &rule.mappings.polaris {
        let key = format!("polaris.fairwinds.com/{check}-exempt");
        tests.push(format!(
            "({} in m && m[{}].trim().lowerAscii() == 'true')",
            q(&key),
            q(&key)
        ));
    }
    for check in &rule.mappings.kube_linter {
        tests.push(format!(
            "{} in m",
            q(&format!("ignore-check.kube-linter.io/{check}"))
        ));
    }
    format!(
        "variables.exemptAll || variables.annotationMaps.exists(m, {})",
        tests.join(" || ")
    )
}

/// What lets a pod off a rule (Windows pods, user namespaces), at this profile and version.
fn rule_exemption(rule: &Rule, profile: Profile, version: KubeVersion) -> Option<String> {
    let whens: Vec<&str> = rule
        .exemptions
        .iter()
        .filter(|e| e.since.is_none_or(|s| version >= s))
        .filter(|e| e.profiles.as_ref().is_none_or(|p| p.contains(&profile)))
        .map(|e| match e.when {
            ExemptWhen::Windows => "variables.windows",
            ExemptWhen::HostUsersFalse => "variables.hostUsersFalse",
        })
        .collect();
    (!whens.is_empty()).then(|| whens.join(" || "))
}

/// Why a rule without checks (a diagnostic of the engine) is not in the policy.
fn diagnostic_reason(id: &str) -> &'static str {
    match id {
        "invalid-field" => {
            "a field of the wrong type: the API server's schema validation refuses it before any policy runs"
        }
        "duplicate-key" | "invalid-yaml" | "yaml-limit" => {
            "it is about the YAML text of a file; the API server hands the policy parsed JSON"
        }
        "unused-exemption" => {
            "it says an exemption annotation suppresses nothing, which needs every rule's verdict without the exemption; the policy judges the pod, not its annotations' upkeep"
        }
        "render-failed" | "render-skipped" => {
            "it is about rendering Helm charts and Kustomize roots"
        }
        _ => "a diagnostic of the engine, not a check of the object",
    }
}

fn invalid_exemption(registry: &Registry) -> String {
    let known: Vec<String> = registry.iter().map(|r| r.id.clone()).collect();
    format!(
        "!variables.annotationMaps.exists(m, {ignore} in m && (!({reason} in m) || m[{reason}].trim() == '' || !m[{ignore}].split(',').exists(s, s.trim() != '') || m[{ignore}].split(',').exists(s, s.trim() != '' && !(s.trim() in {known}))))",
        ignore = q(IGNORE),
        reason = q(IGNORE_REASON),
        known = list(&known),
    )
}

fn message(rule: &Rule) -> String {
    let control = match (&rule.pss_control, &rule.nsa_section) {
        (Some(c), _) => format!(" (Pod Security Standards: {c})"),
        (None, Some(n)) => format!(" (NSA/CISA: {n})"),
        (None, None) => String::new(),
    };
    format!(
        "{}: {}{control}; exempt with the annotations {IGNORE}: {} and {IGNORE_REASON}; see {}",
        rule.id,
        rule.title,
        rule.id,
        rule.docs_url()
    )
}

/// The policy for `profile` at `version` (the newest known when `None`).
pub fn generate(
    registry: &Registry,
    profile: Profile,
    version: Option<KubeVersion>,
) -> Result<Policy, PolicyError> {
    let pinned = version.is_some();
    let version = version.unwrap_or(KubeVersion::NEWEST);
    let paths = pod_paths(registry)?;
    let object_at = |keys: &[String]| path_of("object", keys);
    let match_conditions = vec![Named {
        name: "has-pod-spec".into(),
        expression: by_kind(&paths, |p| has_path("object", &p.spec)),
    }];
    let annotations_of = |keys: &[String]| {
        let mut keys = keys.to_vec();
        keys.push("annotations".into());
        value_or("object", &keys, "{}")
    };
    let var = |name: &str, expression: String| Named {
        name: name.into(),
        expression,
    };
    let pod_list = |field: &str| format!("has({POD}.{field}) ? {POD}.{field} : []");
    let variables = vec![
        var("podSpec", by_kind(&paths, |p| object_at(&p.spec))),
        var(
            "podAnnotations",
            by_kind(&paths, |p| annotations_of(&p.metadata)),
        ),
        var(
            "annotationMaps",
            format!(
                "[{}, variables.podAnnotations]",
                annotations_of(&["metadata".to_string()])
            ),
        ),
        var("containers", pod_list("containers")),
        var("initContainers", pod_list("initContainers")),
        var("ephemeralContainers", pod_list("ephemeralContainers")),
        var(
            "allContainers",
            "variables.initContainers + variables.containers + variables.ephemeralContainers"
                .into(),
        ),
        var(
            "containerNames",
            "variables.allContainers.filter(c, has(c.name)).map(c, c.name)".into(),
        ),
        var("volumes", pod_list("volumes")),
        var(
            "hostPathVolumes",
            "variables.volumes.filter(v, has(v.hostPath) && has(v.name)).map(v, v.name)".into(),
        ),
        // A pod whose containers name no image is a patch's fragment to the linter: what it
        // sets is checked, what it leaves out is not. The API server never admits one.
        var(
            "podFragment",
            "variables.allContainers.all(c, !has(c.image))".into(),
        ),
        var(
            "windows",
            format!("has({POD}.os) && has({POD}.os.name) && {POD}.os.name == 'windows'"),
        ),
        var(
            "hostUsersFalse",
            format!("has({POD}.hostUsers) && {POD}.hostUsers == false"),
        ),
        var(
            "exemptAll",
            "variables.annotationMaps.exists(m, ('polaris.fairwinds.com/exempt' in m && m['polaris.fairwinds.com/exempt'].trim().lowerAscii() == 'true') || 'kube-linter.io/ignore-all' in m)".into(),
        ),
    ];
    let mut validations = Vec::new();
    let mut left_out = Vec::new();
    for rule in registry.iter() {
        if rule.profile > profile || rule.since.is_some_and(|s| version < s) {
            continue;
        }
        let leave = |reason: &str| LeftOut {
            rule: rule.id.clone(),
            profile: rule.profile,
            reason: reason.to_string(),
        };
        if rule.id == INVALID_EXEMPTION {
            validations.push(Validation {
                rule: rule.id.clone(),
                expression: invalid_exemption(registry),
                message: format!(
                    "{}: {}: `{IGNORE}` names only KubeHarden rules and comes with a non-empty `{IGNORE_REASON}` beside it; see {}",
                    rule.id,
                    rule.title,
                    rule.docs_url()
                ),
            });
            continue;
        }
        if rule.checks.is_empty() {
            left_out.push(leave(diagnostic_reason(&rule.id)));
            continue;
        }
        if !rule.enabled_by_default {
            left_out.push(leave(
                "it is off by default (`rules.enable` turns it on for the linter)",
            ));
            continue;
        }
        let active: Vec<&Check> = rule
            .checks
            .iter()
            .filter(|c| c.since.is_none_or(|s| version >= s))
            .filter(|c| c.until.is_none_or(|u| version < u))
            .collect();
        let mut parts = Vec::new();
        let mut reason = None;
        for check in &active {
            match check_expr(check, version) {
                Ok(e) => parts.push(e),
                Err(why) => {
                    reason = Some(why);
                    break;
                }
            }
        }
        if let Some(why) = reason {
            left_out.push(leave(why));
            continue;
        }
        if parts.is_empty() {
            continue;
        }
        let mut lets_off = vec![exempted(rule)];
        lets_off.extend(rule_exemption(rule, profile, version));
        let checks = parts
            .iter()
            .map(|p| format!("({p})"))
            .collect::<Vec<_>>()
            .join(" &&\n");
        validations.push(Validation {
            rule: rule.id.clone(),
            expression: format!("{} ||\n{checks}", lets_off.join(" ||\n")),
            message: message(rule),
        });
    }
    Ok(Policy {
        profile,
        version,
        pinned,
        resources: RESOURCES
            .iter()
            .map(|(k, g, r)| (k.to_string(), g.to_string(), r.to_string()))
            .collect(),
        match_conditions,
        variables,
        validations,
        left_out,
    })
}

impl Policy {
    /// The policy's name: `kubeharden-restricted`, `kubeharden-restricted-1-30`.
    pub fn name(&self) -> String {
        let mut name = format!("kubeharden-{}", self.profile.as_str());
        if self.pinned {
            let _ = write!(name, "-{}-{}", self.version.major, self.version.minor);
        }
        name
    }

    /// The policy and its binding as YAML for `kubectl apply -f -`; `command` is how it was
    /// generated, for the header.
    pub fn render(&self, action: Action, command: &str) -> String {
        let mut out = String::new();
        let w = |out: &mut String, s: &str| {
            out.push_str(s);
            out.push('\n');
        };
        w(
            &mut out,
            &format!("# Generated by `{command}`; do not edit."),
        );
        w(
            &mut out,
            &format!(
                "# The {} profile's rules at Kubernetes {} as CEL, from the rule files the linter and the",
                self.profile.as_str(),
                self.version
            ),
        );
        w(
            &mut out,
            "# webhook read, for clusters that enforce without the webhook (Kubernetes 1.30 or later).",
        );
        w(
            &mut out,
            &format!(
                "# Namespaces labelled kubeharden.dev/{}={}{} are judged.",
                action.as_str(),
                self.profile.as_str(),
                if self.pinned {
                    format!(
                        " and kubeharden.dev/{}-version={}",
                        action.as_str(),
                        self.version
                    )
                } else {
                    String::new()
                }
            ),
        );
        if !self.left_out.is_empty() {
            w(
                &mut out,
                "# Rules of the profile this policy leaves out, and why (the webhook judges them):",
            );
            for l in &self.left_out {
                let line = format!("#   - {} ({}): {}", l.rule, l.profile.as_str(), l.reason);
                let mut chunks = wrap(&line, 98).into_iter();
                if let Some(first) = chunks.next() {
                    w(&mut out, &first);
                }
                let rest: Vec<String> = chunks.collect();
                for chunk in wrap(&rest.join(" "), 90) {
                    w(&mut out, &format!("#       {chunk}"));
                }
            }
        }
        let name = self.name();
        w(&mut out, "apiVersion: admissionregistration.k8s.io/v1");
        w(&mut out, "kind: ValidatingAdmissionPolicy");
        w(&mut out, "metadata:");
        w(&mut out, &format!("  name: {name}"));
        w(&mut out, "  labels:");
        w(&mut out, "    app.kubernetes.io/name: kubeharden-admission");
        w(&mut out, "spec:");
        w(&mut out, "  failurePolicy: Fail");
        w(&mut out, "  matchConstraints:");
        w(&mut out, "    resourceRules:");
        let mut groups: Vec<&str> = Vec::new();
        for (_, g, _) in &self.resources {
            if !groups.contains(&g.as_str()) {
                groups.push(g);
            }
        }
        for group in groups {
            let mut resources: Vec<String> = self
                .resources
                .iter()
                .filter(|(_, g, _)| g == group)
                .map(|(_, _, r)| r.clone())
                .collect();
            if group.is_empty() {
                // `kubectl debug` adds containers through this subresource.
                resources.insert(1, "pods/ephemeralcontainers".into());
            }
            w(&mut out, &format!("      - apiGroups: [\"{group}\"]"));
            w(&mut out, "        apiVersions: [\"*\"]");
            w(&mut out, "        operations: [CREATE, UPDATE]");
            w(
                &mut out,
                &format!("        resources: [{}]", resources.join(", ")),
            );
            w(&mut out, "        scope: Namespaced");
        }
        w(&mut out, "  matchConditions:");
        for c in &self.match_conditions {
            w(&mut out, &format!("    - name: {}", c.name));
            block(&mut out, "      expression", &c.expression);
        }
        // An UPDATE that leaves the pod spec as it was (scaling, relabelling) is not judged,
        // so a workload admitted under older rules can still be scaled or deleted.
        w(&mut out, "    - name: pod-spec-changed");
        block(&mut out, "      expression", &self.unchanged_condition());
        w(&mut out, "  variables:");
        for v in &self.variables {
            w(&mut out, &format!("    - name: {}", v.name));
            block(&mut out, "      expression", &v.expression);
        }
        w(&mut out, "  validations:");
        for v in &self.validations {
            w(&mut out, &format!("    - # {}", v.rule));
            block(&mut out, "      expression", &v.expression);
            w(
                &mut out,
                &format!(
                    "      message: {}",
                    serde_json::Value::from(v.message.clone())
                ),
            );
            w(&mut out, "      reason: Forbidden");
        }
        w(&mut out, "---");
        w(&mut out, "apiVersion: admissionregistration.k8s.io/v1");
        w(&mut out, "kind: ValidatingAdmissionPolicyBinding");
        w(&mut out, "metadata:");
        w(&mut out, &format!("  name: {name}-{}", action.as_str()));
        w(&mut out, "  labels:");
        w(&mut out, "    app.kubernetes.io/name: kubeharden-admission");
        w(&mut out, "spec:");
        w(&mut out, &format!("  policyName: {name}"));
        w(
            &mut out,
            &format!("  validationActions: [{}]", action.validation_action()),
        );
        w(&mut out, "  matchResources:");
        w(&mut out, "    namespaceSelector:");
        w(&mut out, "      matchExpressions:");
        let label = format!("kubeharden.dev/{}", action.as_str());
        w(
            &mut out,
            &format!(
                "        - {{key: {label}, operator: In, values: [{}]}}",
                self.profile.as_str()
            ),
        );
        if self.pinned {
            w(
                &mut out,
                &format!(
                    "        - {{key: {label}-version, operator: In, values: [\"{v}\", \"v{v}\"]}}",
                    v = self.version
                ),
            );
        }
        w(
            &mut out,
            "        - {key: kubernetes.io/metadata.name, operator: NotIn, values: [kube-system]}",
        );
        out
    }

    /// The match condition that lets an UPDATE through when the pod spec did not change.
    pub fn unchanged_condition(&self) -> String {
        // The webhook compares the pod specs alone, and so does this.
        let spec = self
            .variables
            .iter()
            .find(|v| v.name == "podSpec")
            .map_or("object.spec", |v| v.expression.as_str());
        let old_spec = spec.replace("object.", "oldObject.");
        let old_has = self.match_conditions[0]
            .expression
            .replace("object.", "oldObject.");
        format!(
            "request.operation != 'UPDATE' || oldObject == null ||\n!({old_has}) ||\n({old_spec}) != ({spec})"
        )
    }
}

/// A YAML block scalar (`|-`) under `key`, indented two more than the key.
fn block(out: &mut String, key: &str, text: &str) {
    let indent = " ".repeat(key.len() - key.trim_start().len() + 2);
    out.push_str(key);
    out.push_str(": |-\n");
    for line in text.lines() {
        out.push_str(&indent);
        out.push_str(line);
        out.push('\n');
    }
}

/// Words of a comment line, wrapped at `width`.
fn wrap(line: &str, width: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for word in line.split(' ') {
        if !cur.is_empty() && cur.len() + 1 + word.len() > width {
            out.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}
