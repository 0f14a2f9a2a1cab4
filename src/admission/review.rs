//! `admission.k8s.io/v1` AdmissionReview and the decision: which requests are judged, by the
//! core engine, and what each mode answers.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use kubeharden_core::config::{Config, StaticExemption, StaticExemptions};
use kubeharden_core::facts::Facts;
use kubeharden_core::fix;
use kubeharden_core::k8s::KubeVersion;
use kubeharden_core::lint::{Finding, Linter, Settings};
use kubeharden_core::object::JsonObject;
use kubeharden_core::rules::{Applicability, Profile, Registry};
use kubeharden_core::workloads::WorkloadKinds;

use super::mutate;

pub const API_VERSION: &str = "admission.k8s.io/v1";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReview {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub request: Option<Request>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub uid: String,
    #[serde(default)]
    pub kind: GroupVersionKind,
    #[serde(default)]
    pub sub_resource: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub operation: String,
    #[serde(default)]
    pub user_info: UserInfo,
    #[serde(default)]
    pub object: Option<Value>,
    #[serde(default)]
    pub old_object: Option<Value>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct UserInfo {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewResponse {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub response: Response,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub uid: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub audit_annotations: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub code: u16,
    pub message: String,
}

impl ReviewResponse {
    pub fn new(response: Response) -> Self {
        Self {
            api_version: API_VERSION,
            kind: "AdmissionReview",
            response,
        }
    }
}

/// What a validating path does with findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    Enforce,
    Warn,
    Audit,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Warn => "warn",
            Mode::Audit => "audit",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "enforce" => Some(Mode::Enforce),
            "warn" => Some(Mode::Warn),
            "audit" => Some(Mode::Audit),
            _ => None,
        }
    }
}

/// What a path asks for: validate in a mode, or mutate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Validate(Mode),
    Mutate,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Validate(m) => m.as_str(),
            Action::Mutate => "mutate",
        }
    }
}

/// The server's fixed knowledge: rules, settings from `--config`, static exemptions.
pub struct Judge {
    registry: Registry,
    settings: Settings,
    exemptions: StaticExemptions,
    unsafe_fixes: bool,
    /// The registry's workload kinds and the configuration's, built once: cloning them for
    /// each request's linter was a twentieth of a small request's work.
    kinds: Arc<WorkloadKinds>,
}

/// How many findings a denial lists before it says how many more there are: a pod of 100 000
/// containers must not produce a message of megabytes.
const MAX_LISTED: usize = 50;
/// The API server truncates a warning over 256 characters and drops warnings past 4 KB in all.
const WARNING_CHARS: usize = 256;
const WARNINGS_BYTES: usize = 4096;
/// Audit annotations land in every audit event; keep each short.
const AUDIT_VALUE_CHARS: usize = 1024;

/// The outcome of one request, with what the metrics count.
pub struct Decision {
    pub response: Response,
    /// `allowed`, `denied`, `warned`, `audited`, `exempt`, `skipped`, `patched` or `unchanged`.
    pub outcome: &'static str,
    /// Findings per rule.
    pub rules: BTreeMap<String, usize>,
}

impl Judge {
    /// The judge a configuration file describes (the defaults without one).
    pub fn load(config: Option<&std::path::Path>, registry: Registry) -> anyhow::Result<Judge> {
        use anyhow::Context as _;
        let config = match config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                Config::parse(&path.display().to_string(), &text, &registry)?
            }
            None => Config::default(),
        };
        let mut settings = config.settings();
        if config.max_file_size.is_none() {
            // The object's JSON text, a line per value, is what is parsed: every object the
            // body limit lets in, with room for the line breaks.
            settings.limits.max_bytes = 2 * super::BODY_LIMIT;
        }
        let kinds = Arc::new(registry.workloads_with(&settings.workloads));
        Ok(Judge {
            kinds,
            registry,
            settings,
            exemptions: config.admission.exemptions.clone(),
            unsafe_fixes: config.admission.unsafe_fixes,
        })
    }

    /// The kinds this judge finds pods in: the registry's and the configuration's.
    pub fn workload_kinds(&self) -> &WorkloadKinds {
        &self.kinds
    }

    pub fn decide(
        &self,
        action: Action,
        profile: Profile,
        version: Option<KubeVersion>,
        request: Request,
    ) -> Decision {
        self.decide_with(action, profile, version, request, Facts::default())
    }

    /// Whether this request's object is one the action changes: a mutation judges CREATEs of
    /// the pod's own specification only. What is worth reading images for.
    pub fn mutates(action: Action, request: &Request) -> bool {
        action == Action::Mutate
            && request.operation == "CREATE"
            && request.sub_resource.as_deref().is_none_or(str::is_empty)
            && request.object.is_some()
    }

    /// The container images of the request's object with the platform each pod runs them on.
    pub fn images(&self, request: &Request, default_platform: &str) -> Vec<(String, String)> {
        let Some(object) = &request.object else {
            return Vec::new();
        };
        JsonObject::new(object, &self.settings.limits).images(&self.kinds, default_platform)
    }

    /// As [`Judge::decide`], with what the server learned about the object's images (their
    /// configurations, for the mutation's image decision).
    pub fn decide_with(
        &self,
        action: Action,
        profile: Profile,
        version: Option<KubeVersion>,
        request: Request,
        facts: Facts,
    ) -> Decision {
        let uid = request.uid.clone();
        let allow = |outcome: &'static str| Decision {
            response: Response {
                uid: uid.clone(),
                allowed: true,
                ..Response::default()
            },
            outcome,
            rules: BTreeMap::new(),
        };
        let judged_operation = match action {
            Action::Validate(_) => matches!(request.operation.as_str(), "CREATE" | "UPDATE"),
            // A mutation of an UPDATE would change running workloads behind their owners' backs.
            Action::Mutate => request.operation == "CREATE",
        };
        // Of the subresources only ephemeral containers add code to a pod; status, binding and
        // the like are not the pod's specification.
        let judged_subresource = match request.sub_resource.as_deref() {
            None | Some("") => true,
            Some("ephemeralcontainers") => action != Action::Mutate,
            Some(_) => false,
        };
        let Some(object) = request
            .object
            .as_ref()
            .filter(|_| judged_operation && judged_subresource)
        else {
            return allow("skipped");
        };
        let mut settings = self.settings.clone();
        settings.profile = profile;
        if let Some(v) = version {
            settings.kube_version = v;
        }
        let linter =
            Linter::with_kinds(&self.registry, settings, self.kinds.clone()).with_facts(facts);
        let kinds = linter.workload_kinds();
        let parsed = JsonObject::new(object, &linter.settings.limits);
        let pod_specs = parsed.pod_specs(kinds);
        if pod_specs.is_empty() {
            return allow("skipped");
        }
        if let Some(reason) = self.exemption(&request, &pod_specs) {
            let mut decision = allow("exempt");
            decision
                .response
                .audit_annotations
                .insert("exempt".into(), truncate(&reason, AUDIT_VALUE_CHARS));
            return decision;
        }
        // A workload admitted under older rules can still be scaled, relabelled or deleted.
        if request.operation == "UPDATE"
            && let Some(old) = &request.old_object
            && JsonObject::new(old, &linter.settings.limits).pod_specs(kinds) == pod_specs
        {
            return allow("unchanged");
        }
        match action {
            Action::Validate(mode) => self.validate(mode, &linter, &parsed, uid),
            Action::Mutate => self.mutate(&linter, &parsed, object, uid),
        }
    }

    fn exemption(&self, request: &Request, pod_specs: &[Value]) -> Option<String> {
        let said = |what: &str, e: &StaticExemption| format!("{what} {}: {}", e.name, e.reason);
        let ex = &self.exemptions;
        if let Some(ns) = request.namespace.as_deref()
            && let Some(e) = StaticExemptions::find(&ex.namespaces, ns)
        {
            return Some(said("namespace", e));
        }
        if let Some(e) = StaticExemptions::find(&ex.usernames, &request.user_info.username) {
            return Some(said("username", e));
        }
        for group in &request.user_info.groups {
            if let Some(e) = StaticExemptions::find(&ex.groups, group) {
                return Some(said("group", e));
            }
        }
        // Every pod the object runs must use an exempt runtime class (a `v1/List` may mix).
        let classes: Vec<Option<&str>> = pod_specs
            .iter()
            .map(|p| p.get("runtimeClassName").and_then(Value::as_str))
            .collect();
        let exempt: Vec<&StaticExemption> = classes
            .iter()
            .filter_map(|c| c.and_then(|c| StaticExemptions::find(&ex.runtime_classes, c)))
            .collect();
        if !exempt.is_empty() && exempt.len() == classes.len() {
            return Some(said("runtime class", exempt[0]));
        }
        None
    }

    fn validate(
        &self,
        mode: Mode,
        linter: &Linter<'_>,
        object: &JsonObject,
        uid: String,
    ) -> Decision {
        let report = object.lint(linter);
        let mut rules: BTreeMap<String, usize> = BTreeMap::new();
        for f in &report.findings {
            *rules.entry(f.rule.clone()).or_default() += 1;
        }
        let mut response = Response {
            uid,
            allowed: true,
            ..Response::default()
        };
        if report.findings.is_empty() {
            return Decision {
                response,
                outcome: "allowed",
                rules,
            };
        }
        let lines = self.describe(linter, object, &report.findings);
        let outcome = match mode {
            Mode::Enforce => {
                if report.failed(linter.settings.fail_on) {
                    response.allowed = false;
                    response.status = Some(Status {
                        code: 403,
                        message: denial(&report.findings, &lines),
                    });
                    "denied"
                } else {
                    response.warnings = warnings(&lines);
                    "allowed"
                }
            }
            Mode::Warn => {
                response.warnings = warnings(&lines);
                "warned"
            }
            Mode::Audit => {
                response.audit_annotations = audit(&report.findings, &lines);
                "audited"
            }
        };
        Decision {
            response,
            outcome,
            rules,
        }
    }

    /// One line per finding (the first [`MAX_LISTED`]): rule, container, field, the fix, docs.
    fn describe(
        &self,
        linter: &Linter<'_>,
        object: &JsonObject,
        findings: &[Finding],
    ) -> Vec<String> {
        let listed = &findings[..findings.len().min(MAX_LISTED)];
        let plan = fix::plan(
            object.parsed(),
            listed,
            Applicability::DisplayOnly,
            linter.workload_kinds(),
        );
        listed
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let mut line = format!("{}: {}", f.rule, f.message);
                if let Some(c) = &f.container {
                    line += &format!("; container {c:?}");
                }
                if let Some(field) = object.field(f).filter(|p| !p.is_empty()) {
                    line += &format!("; field {field}");
                }
                if let Some(fix) = plan.fixes.iter().find(|x| x.findings.contains(&i)) {
                    line += &format!("; fix: {}", fix.description);
                } else if let Some(r) = plan.refusals.iter().find(|r| r.findings.contains(&i)) {
                    line += &format!("; {}", r.reason(Applicability::DisplayOnly));
                }
                if let Some(rule) = linter.registry.get(&f.rule) {
                    line += &format!("; {}", rule.docs_url());
                }
                line
            })
            .collect()
    }

    fn mutate(
        &self,
        linter: &Linter<'_>,
        object: &JsonObject,
        value: &Value,
        uid: String,
    ) -> Decision {
        let min = if self.unsafe_fixes {
            Applicability::Unsafe
        } else {
            Applicability::Safe
        };
        let mut response = Response {
            uid,
            allowed: true,
            ..Response::default()
        };
        let fixed = match object.fix(linter, min) {
            Ok(fixed) => fixed,
            Err(e) => {
                // Mutation never blocks: the validating webhook judges what was not fixed.
                response.warnings = vec![truncate(
                    &format!("kubeharden could not fix this object: {e}"),
                    WARNING_CHARS,
                )];
                return Decision {
                    response,
                    outcome: "failed",
                    rules: BTreeMap::new(),
                };
            }
        };
        let ops = mutate::diff(value, &fixed);
        if ops.is_empty() {
            return Decision {
                response,
                outcome: "unchanged",
                rules: BTreeMap::new(),
            };
        }
        let patch = serde_json::to_vec(&ops).unwrap_or_default();
        response.patch_type = Some("JSONPatch");
        response.patch = Some(base64::engine::general_purpose::STANDARD.encode(patch));
        Decision {
            response,
            outcome: "patched",
            rules: BTreeMap::new(),
        }
    }
}

fn denial(findings: &[Finding], lines: &[String]) -> String {
    let mut message = format!(
        "kubeharden denied this object: {} finding{}",
        findings.len(),
        if findings.len() == 1 { "" } else { "s" }
    );
    for line in lines {
        message += "\n- ";
        message += line;
    }
    if findings.len() > lines.len() {
        message += &format!(
            "\n… and {} more; run `kubeharden lint` on the manifest for all of them",
            findings.len() - lines.len()
        );
    }
    message
}

/// Warnings within what the API server passes on whole: each at most 256 characters, all of
/// them within 4 KB, the last saying how many were left out.
fn warnings(lines: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut used = 0;
    let reserve = 80;
    for (i, line) in lines.iter().enumerate() {
        let w = truncate(&format!("kubeharden: {line}"), WARNING_CHARS);
        if used + w.len() + reserve > WARNINGS_BYTES {
            out.push(format!(
                "kubeharden: {} more findings; run `kubeharden lint` on the manifest",
                lines.len() - i
            ));
            return out;
        }
        used += w.len();
        out.push(w);
    }
    out
}

/// One audit annotation per rule: how many findings and the first of them.
fn audit(findings: &[Finding], lines: &[String]) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for (i, f) in findings.iter().enumerate() {
        let entry = out.entry(f.rule.clone()).or_default();
        entry.0 += 1;
        if entry.1.is_empty() {
            entry.1 = lines.get(i).cloned().unwrap_or_else(|| f.message.clone());
        }
    }
    out.into_iter()
        .map(|(rule, (n, first))| {
            let value = if n == 1 {
                first
            } else {
                format!("{n} findings, the first: {first}")
            };
            (rule, truncate(&value, AUDIT_VALUE_CHARS))
        })
        .collect()
}

/// At most `max` characters, with an ellipsis when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_stay_within_the_api_servers_limits() {
        let lines: Vec<String> = (0..100)
            .map(|i| format!("{i} {}", "x".repeat(400)))
            .collect();
        let w = warnings(&lines);
        assert!(w.iter().all(|w| w.chars().count() <= WARNING_CHARS));
        assert!(w.iter().map(String::len).sum::<usize>() <= WARNINGS_BYTES);
        assert!(w.last().unwrap().contains("more findings"), "{w:?}");
    }

    #[test]
    fn truncation_counts_characters_not_bytes() {
        let s = "é".repeat(300);
        let t = truncate(&s, WARNING_CHARS);
        assert_eq!(t.chars().count(), WARNING_CHARS);
        assert!(t.ends_with('…'));
    }
}
