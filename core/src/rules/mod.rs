//! Rules are data: every rule is a YAML file in `rules/`, compiled into the binary and
//! overridable with `--rules DIR`. Rust provides a small set of check primitives (scopes, paths
//! and conditions); a rule combines them. Changing an allow-list or adding another instance of an
//! existing check needs no Rust change.

mod context;
pub mod eval;
mod scope;

pub(crate) use scope::{Seg, parse_path};

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::k8s::{ContainerKind, KubeVersion};
use crate::source::{SourceFile, TextRange};
use crate::workloads::{WorkloadError, WorkloadKinds, parse_file as parse_workload_file};
use crate::yaml::{self, de::from_node};

/// The rule files shipped with KubeHarden, embedded at build time.
const BUILTIN: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/builtin_rules.rs"));

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Note,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Note => "note",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "note" => Ok(Severity::Note),
            "warning" => Ok(Severity::Warning),
            "error" => Ok(Severity::Error),
            _ => Err(format!(
                "unknown severity `{s}`; expected note, warning or error"
            )),
        }
    }
}

/// Profiles nest: baseline ⊂ restricted ⊂ nsa.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Baseline,
    Restricted,
    Nsa,
}

impl Profile {
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Baseline => "baseline",
            Profile::Restricted => "restricted",
            Profile::Nsa => "nsa",
        }
    }
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "baseline" => Ok(Profile::Baseline),
            "restricted" => Ok(Profile::Restricted),
            "nsa" => Ok(Profile::Nsa),
            _ => Err(format!(
                "unknown profile `{s}`; expected baseline, restricted or nsa"
            )),
        }
    }
}

/// How far a fix can be trusted, ordered as in ruff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Applicability {
    DisplayOnly,
    Unsafe,
    Safe,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Mappings {
    #[serde(default)]
    pub polaris: Vec<String>,
    #[serde(default)]
    pub kube_linter: Vec<String>,
    #[serde(default)]
    pub checkov: Vec<String>,
    #[serde(default)]
    pub kubescape: Vec<String>,
    #[serde(default)]
    pub trivy: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExemptWhen {
    /// `spec.os.name: windows`.
    Windows,
    /// `spec.hostUsers: false` (the pod runs in a user namespace).
    HostUsersFalse,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Exemption {
    pub when: ExemptWhen,
    pub since: Option<KubeVersion>,
    /// Profiles in which the exemption holds; all when absent.
    pub profiles: Option<Vec<Profile>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FixInfo {
    pub applicability: Applicability,
    /// Why the fix might break a workload, shown to the user with the suggestion.
    pub safety: String,
}

/// Where a check looks, relative to each workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// The pod spec.
    Pod,
    /// Every container (filtered by `containers`).
    Container,
    /// The pod spec, then every container.
    PodAndContainers,
    /// Every entry of `volumes`.
    Volume,
    /// Every entry of every container's `ports`.
    ContainerPort,
    /// Every `httpGet`/`tcpSocket` handler of every container's probes and lifecycle hooks.
    ProbeHandler,
    /// Every `volumeMounts` entry that mounts a `hostPath` volume.
    HostPathMount,
    /// Every annotation (object and pod template) whose key starts with `annotation-prefix`;
    /// the path is empty and the condition applies to the value.
    Annotation,
}

/// An allow- or deny-list entry, optionally limited to a Kubernetes version range.
/// A `*` in a value stands for any run of characters (`localhost/*`, `/run/*docker.sock`).
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub value: String,
    pub since: Option<KubeVersion>,
}

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Plain(Literal),
            Versioned {
                value: String,
                since: Option<KubeVersion>,
            },
        }
        Ok(match Repr::deserialize(d)? {
            Repr::Plain(value) => Item {
                value: value.to_string(),
                since: None,
            },
            Repr::Versioned { value, since } => Item { value, since },
        })
    }
}

/// A scalar to compare with, as Kubernetes reads it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Literal {
    Bool(bool),
    Int(i64),
    Str(String),
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Int(i) => write!(f, "{i}"),
            Literal::Str(s) => write!(f, "{s}"),
        }
    }
}

/// What makes a value a finding. `missing` means absent or null.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Condition {
    /// Present and equal.
    Equals(Literal),
    /// Present and different.
    NotEquals(Literal),
    /// Missing or different.
    MustEqual(Literal),
    /// Present and in the list.
    In(Vec<Item>),
    /// Present and not in the list.
    NotIn(Vec<Item>),
    /// Missing or not in the list.
    MustBeIn(Vec<Item>),
    /// A sequence: one finding per item in the list.
    AnyIn(Vec<Item>),
    /// A sequence: one finding per item not in the list.
    AnyNotIn(Vec<Item>),
    /// Missing, or a sequence without this item.
    MustContain(Item),
    /// Present (not null).
    Present,
    /// Missing.
    Missing,
    /// A mapping: one finding per key not in the list (`name` is never reported).
    KeysNotIn(Vec<Item>),
    /// An image reference without a digest whose tag is absent or mutable.
    MutableImageTag(MutableTag),
    /// Container `env` entries with literal secrets.
    SecretEnv(SecretEnv),
    /// `automountServiceAccountToken` not false on the pod, unless the pod's ServiceAccount in
    /// the same change turns it off.
    ServiceAccountToken,
    /// An image reference the distribution grammar does not accept.
    InvalidImageReference,
    /// An image reference without a digest (fixable when the registry's digest is known).
    ImageNotPinned,
    /// An image from outside the configured registries.
    RegistryNotAllowed,
    /// Vulnerabilities in the scanner's report for the image.
    ImageVulnerable,
    /// The scanner could not scan the image.
    ImageScanFailed,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MutableTag {
    /// Tags that move (besides no tag at all).
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SecretEnv {
    /// Words that make a variable name look secret, matched against the name's words.
    pub name_words: Vec<String>,
    /// Name suffixes that look secret even when glued to other words (`APIKEY`).
    #[serde(default)]
    pub name_suffixes: Vec<String>,
    /// Words that mark the variable as something else than the secret (`PASSWORD_FILE`).
    #[serde(default)]
    pub name_ignore_words: Vec<String>,
    /// Substrings of a value that reveal key material whatever the name.
    pub value_markers: Vec<String>,
}

/// How values are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Normalize {
    /// Exact, case-sensitive (how the pod-security-admission code compares).
    Exact,
    /// Linux capabilities as container runtimes read them: upper case, without `CAP_`.
    Capability,
    /// File system paths without trailing slashes.
    Path,
}

/// What a rule wants done where it fires; the fixer plans edits from these.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FixAction {
    /// Set the checked field to this value (creating missing mappings).
    Set(Literal),
    /// Remove the checked key.
    RemoveKey,
    /// Remove the offending sequence items.
    RemoveItems,
    /// Add this item to the checked sequence (creating it when missing).
    AddItem(String),
    /// Append `@<digest>` to the image reference (when its digest is known).
    PinDigest,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Check {
    pub scope: Scope,
    /// Container lists a container-based scope visits; all three when absent.
    pub containers: Option<Vec<ContainerKind>>,
    /// Dotted path from the scope's node; `[*]` visits every item of a sequence.
    #[serde(default)]
    pub path: String,
    /// A container's field falls back to the same path in the pod spec.
    #[serde(default)]
    pub inherit: bool,
    pub annotation_prefix: Option<String>,
    /// The annotation key is the prefix followed by the name of one of the pod's containers
    /// (annotations for containers the pod does not have configure nothing).
    #[serde(default)]
    pub annotation_per_container: bool,
    pub condition: Condition,
    #[serde(default = "exact")]
    pub normalize: Normalize,
    pub since: Option<KubeVersion>,
    /// The check applies below this version only.
    pub until: Option<KubeVersion>,
    /// Message template: `{value}` is the offending value, `{path}` the checked path.
    pub message: String,
    pub fix: Option<FixAction>,
    /// Overrides the rule's fix applicability for this check's fix.
    pub applicability: Option<Applicability>,
    /// The fix depends on the container's image (its user, volumes, ports), when its
    /// configuration was read: see `decision`.
    pub image_fit: Option<ImageFit>,
}

/// Which part of an image's configuration a check's fix depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageFit {
    /// `runAsNonRoot: true`: safe for a non-zero UID, withheld for a name nobody can verify,
    /// paired with runAsUser/runAsGroup for a named user or root.
    RunAsNonRoot,
    /// `readOnlyRootFilesystem: true`: comes with emptyDir mounts for the image's volumes and
    /// `/tmp`.
    ReadOnlyRoot,
    /// `capabilities.drop: [ALL]`: says when ports below 1024 need NET_BIND_SERVICE.
    DropAll,
}

fn exact() -> Normalize {
    Normalize::Exact
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Rule {
    pub id: String,
    pub title: String,
    pub profile: Profile,
    pub severity: Severity,
    #[serde(default = "yes")]
    pub enabled_by_default: bool,
    /// The rule exists from this Kubernetes version on.
    pub since: Option<KubeVersion>,
    /// The Pod Security Standards control it implements.
    pub pss_control: Option<String>,
    /// The NSA/CISA Kubernetes Hardening Guidance section it implements.
    pub nsa_section: Option<String>,
    #[serde(default)]
    pub mappings: Mappings,
    #[serde(default)]
    pub exemptions: Vec<Exemption>,
    /// Empty for diagnostics the engine itself reports (invalid YAML and the like).
    #[serde(default)]
    pub checks: Vec<Check>,
    pub fix: Option<FixInfo>,
    /// Markdown in the sections What it does / Why is this bad? / Example / Fix safety / References.
    pub docs: String,
    /// Where the rule came from, for error messages.
    #[serde(skip)]
    pub origin: String,
}

impl Rule {
    /// Whether a fix exists for findings of this rule.
    pub fn is_fixable(&self) -> bool {
        self.fix.is_some() && self.checks.iter().any(|c| c.fix.is_some())
    }

    pub fn docs_url(&self) -> String {
        format!("{DOCS_BASE}/{}.md", self.id)
    }
}

impl Rule {
    /// The rule's page for `docs/rules/<id>.md`: a header of facts, then its documentation.
    pub fn doc_page(&self) -> String {
        let mut page = format!("# {} (`{}`)\n\n", self.title, self.id);
        let fact = |page: &mut String, name: &str, value: &str| {
            page.push_str(&format!("- **{name}:** {value}\n"));
        };
        fact(&mut page, "Profile", self.profile.as_str());
        fact(&mut page, "Default severity", self.severity.as_str());
        if let Some(c) = &self.pss_control {
            fact(&mut page, "Pod Security Standards control", c);
        }
        if let Some(n) = &self.nsa_section {
            fact(&mut page, "NSA/CISA guidance", n);
        }
        if let Some(v) = self.since {
            fact(&mut page, "Applies from Kubernetes", &v.to_string());
        }
        let fix = match (&self.fix, self.is_fixable()) {
            (Some(f), true) => format!("{:?}", f.applicability).to_lowercase(),
            _ => "none".into(),
        };
        fact(&mut page, "Automatic fix", &fix);
        if !self.enabled_by_default {
            fact(
                &mut page,
                "Enabled",
                "only when listed under `rules.enable`",
            );
        }
        page.push('\n');
        page.push_str(self.docs.trim_end());
        page.push_str("\n\n---\n\nGenerated from `rules/");
        page.push_str(&self.id);
        page.push_str(".yaml` by `kubeharden rules --write-docs docs/rules`; edit the rule file, not this page.\n");
        page
    }
}

/// Where the generated rule pages (`docs/rules`) are published.
pub const DOCS_BASE: &str = "https://github.com/kubeharden/kubeharden/blob/main/docs/rules";

/// Doc sections every rule must have, in this order.
pub const DOC_SECTIONS: [&str; 5] = [
    "## What it does",
    "## Why is this bad?",
    "## Example",
    "## Fix safety",
    "## References",
];

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("{origin}:{line}:{column}: {message}")]
    Invalid {
        origin: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{origin}: {message}")]
    Other { origin: String, message: String },
}

/// All known rules, by id, and the kinds whose pods they check.
#[derive(Debug, Clone)]
pub struct Registry {
    rules: BTreeMap<String, Rule>,
    workloads: WorkloadKinds,
}

impl From<WorkloadError> for RuleError {
    fn from(e: WorkloadError) -> Self {
        RuleError::Invalid {
            origin: e.origin,
            line: e.line,
            column: e.column,
            message: e.message,
        }
    }
}

impl Registry {
    /// The rules compiled into the binary.
    pub fn builtin() -> Result<Self, RuleError> {
        let files = BUILTIN
            .iter()
            .map(|(name, text)| (format!("rules/{name}"), *text));
        Ok(Self {
            rules: parse_all(files)?,
            workloads: WorkloadKinds::builtin()?,
        })
    }

    /// Add workload files given as (origin, text) (`--rules DIR`'s `workloads/`): their kinds
    /// take precedence over the built-in ones.
    pub fn extend_workloads<'a>(
        &mut self,
        files: impl IntoIterator<Item = (String, &'a str)>,
    ) -> Result<(), RuleError> {
        for (origin, text) in files {
            self.workloads.extend(parse_workload_file(&origin, text)?);
        }
        Ok(())
    }

    /// Where each kind's pods are.
    pub fn workloads(&self) -> &WorkloadKinds {
        &self.workloads
    }

    /// Where each kind's pods are, with a configuration's kinds taking precedence.
    pub fn workloads_with(&self, extra: &[crate::workloads::KindEntry]) -> WorkloadKinds {
        let mut kinds = self.workloads.clone();
        kinds.extend(extra.iter().cloned());
        kinds
    }

    /// Add or override rules with rule files given as (origin, text): `--rules DIR`, read by
    /// the caller. An id given twice among them is an error.
    pub fn extend<'a>(
        &mut self,
        files: impl IntoIterator<Item = (String, &'a str)>,
    ) -> Result<(), RuleError> {
        self.rules.extend(parse_all(files)?);
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<&Rule> {
        self.rules.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Rule> {
        self.rules.values()
    }

    /// Rules mapped to another tool's check id (for that tool's exemption annotations).
    pub fn mapped<'a>(&'a self, tool: Tool, check: &'a str) -> impl Iterator<Item = &'a Rule> + 'a {
        self.rules.values().filter(move |r| {
            let ids = match tool {
                Tool::Polaris => &r.mappings.polaris,
                Tool::KubeLinter => &r.mappings.kube_linter,
            };
            ids.iter().any(|id| id == check)
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Tool {
    Polaris,
    KubeLinter,
}

/// Parse rule files, rejecting an id that two of them give.
fn parse_all<'a>(
    files: impl IntoIterator<Item = (String, &'a str)>,
) -> Result<BTreeMap<String, Rule>, RuleError> {
    let mut rules: BTreeMap<String, Rule> = BTreeMap::new();
    for (origin, text) in files {
        let rule = parse_rule(&origin, text)?;
        if let Some(prev) = rules.get(&rule.id) {
            return Err(RuleError::Other {
                message: format!("duplicate rule id `{}` (also in {})", rule.id, prev.origin),
                origin,
            });
        }
        rules.insert(rule.id.clone(), rule);
    }
    Ok(rules)
}

/// Parse and validate one rule file.
pub fn parse_rule(origin: &str, text: &str) -> Result<Rule, RuleError> {
    let file = SourceFile::new(origin, text);
    let invalid = |range: TextRange, message: String| {
        let at = file.line_col(range.start());
        RuleError::Invalid {
            origin: origin.to_string(),
            line: at.line,
            column: at.column,
            message,
        }
    };
    let stream = yaml::parse(text, &yaml::Limits::default());
    if let Some(e) = stream.errors.first() {
        return Err(invalid(e.range, e.message.clone()));
    }
    let [doc] = stream.documents.as_slice() else {
        return Err(RuleError::Other {
            origin: origin.into(),
            message: "a rule file holds exactly one YAML document".into(),
        });
    };
    let root = doc.root().ok_or_else(|| RuleError::Other {
        origin: origin.into(),
        message: "the rule file is empty".into(),
    })?;
    let mut rule: Rule =
        from_node(doc, root).map_err(|e| invalid(e.range.unwrap_or_default(), e.message))?;
    rule.origin = origin.to_string();
    let at_root = |message: String| invalid(doc.node(root).range, message);
    if rule.id.is_empty()
        || !rule
            .id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(at_root(format!("rule id `{}` must be kebab-case", rule.id)));
    }
    let mut last = 0;
    for section in DOC_SECTIONS {
        match rule.docs[last..].find(section) {
            Some(i) => last += i + section.len(),
            None => {
                return Err(at_root(format!(
                    "rule `{}`: docs lack the section `{section}` (sections must come in the order {})",
                    rule.id,
                    DOC_SECTIONS.join(", ")
                )));
            }
        }
    }
    for check in &rule.checks {
        if check.scope == Scope::Annotation && check.annotation_prefix.is_none() {
            return Err(at_root(format!(
                "rule `{}`: an annotation check needs `annotation-prefix`",
                rule.id
            )));
        }
        if check.image_fit.is_some() && (check.scope != Scope::Container || check.fix.is_none()) {
            return Err(at_root(format!(
                "rule `{}`: `image-fit` belongs on a container check with a fix",
                rule.id
            )));
        }
        if check.fix.is_some() && rule.fix.is_none() {
            return Err(at_root(format!(
                "rule `{}`: a check has a fix action but the rule has no `fix` (applicability and safety)",
                rule.id
            )));
        }
    }
    Ok(rule)
}
