//! Linting: from source text to findings.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use crate::decision::{self, ContainerImage, ImageDecision, UserVerdict};
use crate::facts::Facts;
use crate::image::ImagePolicy;
use crate::k8s::{self, Contents, KubeVersion, ObjectInfo, Workload};
use crate::parsed::{Parsed, Stamp};
use crate::rules::eval::{self, Context, Hit};
use crate::rules::{Applicability, ExemptWhen, ImageFit, Profile, Registry, Rule, Severity};
use crate::source::{LineCol, SourceFile, TextRange};
use crate::workloads::{KindEntry, WorkloadKinds};
use crate::yaml::{self, Document, Limits, YamlErrorKind};

mod exemptions;

use exemptions::Covered;

/// What to lint for, after the configuration file and the command line are merged.
#[derive(Debug, Clone)]
pub struct Settings {
    pub profile: Profile,
    pub kube_version: KubeVersion,
    /// Rules turned on beyond the profile's defaults.
    pub enable: BTreeSet<String>,
    pub disable: BTreeSet<String>,
    pub severity: BTreeMap<String, Severity>,
    pub fail_on: Severity,
    pub limits: Limits,
    pub images: ImagePolicy,
    /// Kinds that run pods beyond the registry's (from the repository configuration); they
    /// take precedence.
    pub workloads: Vec<KindEntry>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            profile: Profile::Nsa,
            kube_version: KubeVersion::NEWEST,
            enable: BTreeSet::new(),
            disable: BTreeSet::new(),
            severity: BTreeMap::new(),
            fail_on: Severity::Warning,
            limits: Limits::default(),
            images: ImagePolicy::default(),
            workloads: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Finding {
    pub rule: String,
    pub severity: Severity,
    pub path: String,
    #[serde(skip)]
    pub range: TextRange,
    pub start: LineCol,
    pub end: LineCol,
    pub message: String,
    pub object: Option<ObjectInfo>,
    /// Which of the object's pods, when it can run several (`spec.workerGroupSpecs[0].template.spec`).
    pub pod: Option<String>,
    pub container: Option<String>,
    pub fixable: bool,
    /// 0-based index of the YAML document in its file.
    pub document: usize,
    /// How far its fix can be trusted, when it has one.
    #[serde(skip)]
    pub applicability: Option<Applicability>,
    /// Rule-specific detail the fixer needs; not part of any output format.
    #[serde(skip)]
    pub hit: Option<Hit>,
    /// Set when the finding was found in a chart's or kustomization's rendered output.
    pub render: Option<RenderSite>,
}

/// Where in a render a finding was found; its `path` and lines name the repository file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RenderSite {
    /// The chart's or kustomization's directory (`.` for the top).
    pub root: String,
    /// `values.yaml`, `ci/x-values.yaml`, the Argo CD Application's file, or the kustomization.
    pub variant: String,
    /// The line in the rendered output, which is in no file: for messages only.
    pub rendered_line: usize,
    /// The field's path in the rendered object, e.g. `spec.template.spec.containers[0]`.
    pub field: Option<String>,
    /// The other roots and variants whose renders have this same finding at this same place
    /// (a base that several overlays render), as `(root, variant)`: reported once.
    pub also: Vec<(String, String)>,
}

impl Finding {
    /// What the finding is about, for people: the object, which of its pods when it runs
    /// several, and the container (`RayCluster ml/train, pod spec.workerGroupSpecs[0].template.spec,
    /// container "worker"`).
    pub fn subject(&self) -> Option<String> {
        let object = self.object.as_ref()?;
        let mut s = object.to_string();
        if let Some(p) = &self.pod {
            s.push_str(&format!(", pod {p}"));
        }
        if let Some(c) = &self.container {
            s.push_str(&format!(", container \"{c}\""));
        }
        Some(s)
    }
}

/// Why something was not linted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Skip {
    HelmTemplate,
    NotKubernetes,
}

#[derive(Debug, Clone)]
pub struct Note {
    pub path: String,
    pub line: usize,
    pub reason: Skip,
}

/// A ServiceAccount: (namespace, name).
pub type ServiceAccountRef = (Option<String>, String);

#[derive(Debug, Default)]
pub struct FileResult {
    pub findings: Vec<Finding>,
    pub notes: Vec<Note>,
    pub documents: usize,
    pub workloads: usize,
    /// Workloads per kind (an object may run several pods: a RayCluster's head and workers).
    pub workloads_by_kind: BTreeMap<String, usize>,
    /// Findings that hold unless a ServiceAccount seen anywhere in the change turns off token
    /// automounting.
    pending: Vec<(Finding, ServiceAccountRef)>,
    /// Findings that hold only if such a ServiceAccount is found.
    conditional: Vec<(Finding, ServiceAccountRef)>,
    /// ServiceAccounts with `automountServiceAccountToken: false`.
    quiet_service_accounts: Vec<ServiceAccountRef>,
    /// What each container's image allows, when images were inspected.
    pub containers: Vec<ContainerImage>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// ServiceAccounts in the change that turn token automounting off.
    pub quiet_service_accounts: Vec<ServiceAccountRef>,
    pub notes: Vec<Note>,
    /// What each container's image allows, when images were inspected (empty otherwise).
    pub containers: Vec<ContainerImage>,
    pub files: usize,
    pub documents: usize,
    pub workloads: usize,
    pub workloads_by_kind: BTreeMap<String, usize>,
}

impl Report {
    pub fn failed(&self, threshold: Severity) -> bool {
        self.findings.iter().any(|f| f.severity >= threshold)
    }
}

pub struct Linter<'r> {
    pub registry: &'r Registry,
    pub settings: Settings,
    /// What the shell fetched for this run (digests, scan reports).
    pub facts: Facts,
    active: Vec<&'r Rule>,
    /// Where each kind's pods are: the registry's, then the configuration's. Shared, because
    /// cloning the workload data costs more than the rest of a linter's setup.
    kinds: Arc<WorkloadKinds>,
    /// ServiceAccounts known from elsewhere in the change that turn token automounting off
    /// (so fixing one file of a pull request agrees with linting all of it).
    known_quiet: HashSet<ServiceAccountRef>,
}

/// Diagnostics the engine reports itself; they have rule files for their docs only.
pub const INVALID_YAML: &str = "invalid-yaml";
pub const YAML_LIMIT: &str = "yaml-limit";
pub const DUPLICATE_KEY: &str = "duplicate-key";
pub const INVALID_FIELD: &str = "invalid-field";
pub const UNUSED_EXEMPTION: &str = "unused-exemption";
pub const INVALID_EXEMPTION: &str = "invalid-exemption";
/// Reported by the shell's renderers, on the chart's or kustomization's file.
pub const RENDER_FAILED: &str = "render-failed";
pub const RENDER_SKIPPED: &str = "render-skipped";

const IGNORE_ANNOTATION: &str = "kubeharden.dev/ignore";
const REASON_ANNOTATION: &str = "kubeharden.dev/ignore-reason";

impl<'r> Linter<'r> {
    pub fn new(registry: &'r Registry, settings: Settings) -> Self {
        let kinds = Arc::new(registry.workloads_with(&settings.workloads));
        Self::with_kinds(registry, settings, kinds)
    }

    /// [`Linter::new`] with the workload kinds built already, which must be
    /// `registry.workloads_with(&settings.workloads)`: a server that lints request after
    /// request under one configuration builds them once instead of per request.
    pub fn with_kinds(
        registry: &'r Registry,
        settings: Settings,
        kinds: Arc<WorkloadKinds>,
    ) -> Self {
        let active = registry
            .iter()
            .filter(|r| r.profile <= settings.profile)
            .filter(|r| r.enabled_by_default || settings.enable.contains(&r.id))
            .filter(|r| !settings.disable.contains(&r.id))
            .filter(|r| r.since.is_none_or(|s| settings.kube_version >= s))
            .collect();
        Self {
            registry,
            settings,
            facts: Facts::default(),
            active,
            kinds,
            known_quiet: HashSet::new(),
        }
    }

    /// The same linter, knowing these facts.
    pub fn with_facts(mut self, facts: Facts) -> Self {
        self.facts = facts;
        self
    }

    /// Lint a whole change at once; also the linter that fixes each of its files on its own
    /// while knowing what the whole change holds (its token-less ServiceAccounts), which the
    /// review and the commit of fixes both need so that they agree.
    pub fn lint_change(&self, files: &[Parsed]) -> (Report, Linter<'r>) {
        let report = self.lint_parsed_files(files);
        let per_file = Linter::with_kinds(self.registry, self.settings.clone(), self.kinds.clone())
            .with_facts(self.facts.clone())
            .with_quiet_service_accounts(report.quiet_service_accounts.iter().cloned());
        (report, per_file)
    }

    /// The same linter, also knowing these quiet ServiceAccounts.
    pub fn with_quiet_service_accounts(
        mut self,
        accounts: impl IntoIterator<Item = ServiceAccountRef>,
    ) -> Self {
        self.known_quiet.extend(accounts);
        self
    }

    pub fn active_rules(&self) -> &[&'r Rule] {
        &self.active
    }

    /// Where each kind's pods are, as this linter sees them.
    pub fn workload_kinds(&self) -> &WorkloadKinds {
        &self.kinds
    }

    fn is_active(&self, id: &str) -> bool {
        self.active.iter().any(|r| r.id == id)
    }

    fn severity(&self, rule: &Rule) -> Severity {
        self.settings
            .severity
            .get(&rule.id)
            .copied()
            .unwrap_or(rule.severity)
    }

    /// Lint many files (in parallel) and resolve what depends on the whole change.
    pub fn lint_files(&self, files: &[SourceFile]) -> Report {
        let results = parallel_map(files, |f| {
            self.lint_parsed(&Parsed::new(f.clone(), &self.settings.limits))
        });
        self.resolve(files.len(), results)
    }

    /// [`Linter::lint_files`] on files parsed already: their findings' node ids belong to
    /// these parses, for the planner to use.
    pub fn lint_parsed_files(&self, files: &[Parsed]) -> Report {
        let results = parallel_map(files, |f| self.lint_parsed(f));
        self.resolve(files.len(), results)
    }

    /// The report of a change from each file's result: what depends on the whole change (its
    /// token-less ServiceAccounts) is decided here.
    fn resolve(&self, file_count: usize, results: Vec<FileResult>) -> Report {
        let mut quiet: HashSet<ServiceAccountRef> = results
            .iter()
            .flat_map(|r| r.quiet_service_accounts.iter().cloned())
            .collect();
        quiet.extend(self.known_quiet.iter().cloned());
        let mut report = Report {
            files: file_count,
            quiet_service_accounts: quiet.iter().cloned().collect(),
            ..Report::default()
        };
        for r in results {
            report.documents += r.documents;
            report.workloads += r.workloads;
            for (kind, n) in &r.workloads_by_kind {
                *report.workloads_by_kind.entry(kind.clone()).or_default() += n;
            }
            report.findings.extend(r.findings);
            report.notes.extend(r.notes);
            report.containers.extend(r.containers);
            report.findings.extend(
                r.pending
                    .into_iter()
                    .filter(|(_, sa)| !quiet.contains(sa))
                    .map(|(f, _)| f),
            );
            report.findings.extend(
                r.conditional
                    .into_iter()
                    .filter(|(_, sa)| quiet.contains(sa))
                    .map(|(f, _)| f),
            );
        }
        report.findings.sort_by(|a, b| {
            (&a.path, a.start, &a.rule, &a.message).cmp(&(&b.path, b.start, &b.rule, &b.message))
        });
        report
    }

    /// Lint one file on its own.
    pub fn lint_file(&self, file: &SourceFile) -> FileResult {
        self.lint_parsed(&Parsed::new(file.clone(), &self.settings.limits))
    }

    /// Lint one parsed file on its own.
    pub fn lint_parsed(&self, parsed: &Parsed) -> FileResult {
        let mut out = FileResult::default();
        let file = parsed.file();
        let stream = parsed.stream();
        parsed.reset_budgets();
        // A Helm chart template is not YAML until rendered. Only a file that fails to parse (or
        // lives in a chart's templates/) counts as one: a `{{ }}` in a valid manifest's
        // annotation must not switch linting off.
        if looks_like_helm_template(&file.text, stream) {
            out.notes.push(Note {
                path: file.path.clone(),
                line: 1,
                reason: Skip::HelmTemplate,
            });
            return out;
        }
        if let Some(bad) = &file.not_utf8 {
            let at = bad.offset.min(file.text.len());
            let end = file.text[at..]
                .chars()
                .next()
                .map_or(at, |c| at + c.len_utf8());
            self.push_meta(
                &mut out.findings,
                file,
                INVALID_YAML,
                TextRange::new(at, end),
                format!(
                    "the byte 0x{:02X} at byte {} is not UTF-8, which Kubernetes requires; the file was linted with it read as U+FFFD, and no fix will rewrite it",
                    bad.byte, bad.offset
                ),
                None,
                0,
            );
        }
        for error in &stream.errors {
            let rule = match error.kind {
                YamlErrorKind::Syntax => INVALID_YAML,
                _ => YAML_LIMIT,
            };
            self.push_meta(
                &mut out.findings,
                file,
                rule,
                error.range,
                error.message.clone(),
                None,
                0,
            );
        }
        out.documents = stream.documents.len();
        for (index, doc) in stream.documents.iter().enumerate() {
            self.lint_document(file, parsed.stamp(), doc, index, &mut out);
        }
        out
    }

    /// A finding of one of the engine's own diagnostics (such as [`RENDER_FAILED`]) at `range`
    /// of `file`; `None` when the settings turn that rule off.
    pub fn diagnostic(
        &self,
        file: &SourceFile,
        rule: &str,
        range: TextRange,
        message: String,
    ) -> Option<Finding> {
        let mut one = Vec::new();
        self.push_meta(&mut one, file, rule, range, message, None, 0);
        one.pop()
    }

    #[allow(clippy::too_many_arguments)]
    fn push_meta(
        &self,
        findings: &mut Vec<Finding>,
        file: &SourceFile,
        rule: &str,
        range: TextRange,
        message: String,
        object: Option<&ObjectInfo>,
        document: usize,
    ) {
        let Some(rule) = self.registry.get(rule).filter(|r| self.is_active(&r.id)) else {
            return;
        };
        findings.push(Finding {
            rule: rule.id.clone(),
            severity: self.severity(rule),
            path: file.path.clone(),
            range,
            start: file.line_col(range.start()),
            end: file.line_col(range.end()),
            message,
            object: object.cloned(),
            pod: None,
            container: None,
            fixable: false,
            applicability: None,
            document,
            hit: None,
            render: None,
        });
    }

    fn lint_document(
        &self,
        file: &SourceFile,
        stamp: Stamp,
        doc: &Document,
        index: usize,
        out: &mut FileResult,
    ) {
        for dup in &doc.duplicate_keys {
            let key = doc.key_str(dup.again).unwrap_or_default();
            let first = file.line_col(doc.node(dup.first).range.start());
            self.push_meta(
                &mut out.findings,
                file,
                DUPLICATE_KEY,
                doc.node(dup.again).range,
                format!(
                    "key `{key}` repeats the one on line {}; Kubernetes keeps this last value and `kubectl --validate=strict` rejects the object",
                    first.line
                ),
                None,
                index,
            );
        }
        let objects = match k8s::objects(doc) {
            Contents::Empty => return,
            Contents::NotKubernetes => {
                let line = doc
                    .root()
                    .map_or(1, |r| file.line_col(doc.node(r).range.start()).line);
                out.notes.push(Note {
                    path: file.path.clone(),
                    line,
                    reason: Skip::NotKubernetes,
                });
                return;
            }
            Contents::Objects(objects) => objects,
        };
        let start = out.findings.len();
        for object in &objects {
            if object.info.kind == "ServiceAccount"
                && let Some(name) = &object.info.name
                && doc
                    .get(object.node, "automountServiceAccountToken")
                    .and_then(|n| doc.scalar(n))
                    .map(|s| s.resolved())
                    == Some(yaml::Plain::Bool(false))
            {
                out.quiet_service_accounts
                    .push((object.info.namespace.clone(), name.clone()));
            }
            // A kustomize patch of a Deployment is still a workload, even when it carries no
            // pod spec to lint.
            let located = self.kinds.locate(doc, object);
            let count = match located.workloads.len() {
                0 if located.known => 1,
                n => n,
            };
            if count > 0 {
                out.workloads += count;
                *out.workloads_by_kind
                    .entry(object.info.kind.clone())
                    .or_default() += count;
            }
            for workload in &located.workloads {
                self.lint_workload(file, stamp, doc, index, workload, out);
            }
        }
        if doc.budget_exhausted() {
            // Answers read through an exhausted alias budget are incomplete: report the limit
            // instead of findings that may be wrong.
            out.findings.truncate(start);
            out.pending.retain(|(f, _)| f.document != index);
            let range = doc.root().map_or(doc.range, |r| doc.node(r).range);
            let range = TextRange::new(range.start(), range.start());
            self.push_meta(
                &mut out.findings,
                file,
                YAML_LIMIT,
                range,
                "aliases in this document expand beyond the alias budget; it was not linted".into(),
                None,
                index,
            );
        }
    }

    fn lint_workload(
        &self,
        file: &SourceFile,
        stamp: Stamp,
        doc: &Document,
        index: usize,
        w: &Workload,
        out: &mut FileResult,
    ) {
        let info = &w.object.info;
        let mut invalid = Vec::new();
        if let Some(spec) = w.pod_spec.filter(|_| w.is_pod_spec)
            && let Err(e) = yaml::de::from_node::<k8s_openapi::api::core::v1::PodSpec>(doc, spec)
            && !e.message.starts_with("missing field")
        {
            let at = e.node.map(|n| doc.path_of(n)).unwrap_or_default();
            self.push_meta(
                &mut invalid,
                file,
                INVALID_FIELD,
                e.range.unwrap_or(doc.node(spec).range),
                format!("{at}: {}", e.message),
                Some(info),
                index,
            );
        }
        let containers = w.containers(doc);
        let cx = Context {
            text: &file.text,
            stamp,
            doc,
            workload: w,
            containers: &containers,
            version: self.settings.kube_version,
            images: &self.settings.images,
            facts: &self.facts,
        };
        let decisions: Vec<Option<ImageDecision>> = containers
            .iter()
            .map(|c| decision::decide(doc, w.pod_spec, c.node, &self.facts.images))
            .collect();
        let hoist_blocked = containers.iter().zip(&decisions).any(|(c, d)| {
            d.as_ref().is_some_and(|d| d.refuses_inherited_non_root())
                && doc
                    .get_path(c.node, &["securityContext", "runAsNonRoot"])
                    .is_none_or(|v| doc.is_null(v))
        });
        let decisions: Vec<Option<std::sync::Arc<ImageDecision>>> = decisions
            .into_iter()
            .map(|d| d.map(std::sync::Arc::new))
            .collect();
        for (c, d) in containers.iter().zip(&decisions) {
            if let Some(d) = d {
                let at = doc
                    .get(c.node, "image")
                    .map_or(doc.node(c.node).range, |n| doc.node(n).range);
                out.containers.push(ContainerImage {
                    path: file.path.clone(),
                    document: index,
                    line: file.line_col(at.start()).line,
                    object: info.clone(),
                    container: c.display_name(),
                    decision: (**d).clone(),
                });
            }
        }
        let windows = w.is_windows(doc);
        let user_namespace = w.host_users_false(doc);
        let mut findings: Vec<Finding> = Vec::new();
        let mut pending: Vec<(Finding, ServiceAccountRef)> = Vec::new();
        for rule in &self.active {
            let exempt = rule.exemptions.iter().any(|e| {
                e.since.is_none_or(|s| self.settings.kube_version >= s)
                    && e.profiles
                        .as_ref()
                        .is_none_or(|p| p.contains(&self.settings.profile))
                    && match e.when {
                        ExemptWhen::Windows => windows,
                        ExemptWhen::HostUsersFalse => user_namespace,
                    }
            });
            if exempt {
                continue;
            }
            for check in &rule.checks {
                for mut hit in eval::evaluate(&cx, check) {
                    if hit.target.image_fit.is_some()
                        && let Some(Some(d)) =
                            hit.container.map(|i| decisions.get(i).cloned().flatten())
                    {
                        hit.target.image = Some(decision::Fitting {
                            decision: d,
                            pod_spec: w.pod_spec,
                            hoist_blocked,
                        });
                    }
                    if w.no_fix.iter().any(|p| *p == hit.target.path.join(".")) {
                        hit.target.action = None;
                    }
                    let mut applicability = hit.target.action.as_ref().and(
                        check
                            .applicability
                            .or(rule.fix.as_ref().map(|f| f.applicability)),
                    );
                    // What the image lets the fix do: the one place that says it.
                    if let (Some(ImageFit::RunAsNonRoot), Some(f)) =
                        (hit.target.image_fit, &hit.target.image)
                    {
                        match f.decision.user {
                            UserVerdict::NonRoot { .. } | UserVerdict::Named { .. } => {
                                applicability = applicability.map(|_| Applicability::Safe);
                            }
                            UserVerdict::Unverifiable { .. } => applicability = None,
                            UserVerdict::Root { .. } | UserVerdict::NotChecked { .. } => {}
                        }
                    }
                    let finding = Finding {
                        rule: rule.id.clone(),
                        severity: hit.severity.unwrap_or_else(|| self.severity(rule)),
                        path: file.path.clone(),
                        range: hit.range,
                        start: file.line_col(hit.range.start()),
                        end: file.line_col(hit.range.end()),
                        message: hit.message.clone(),
                        object: Some(info.clone()),
                        pod: w.label.clone(),
                        container: hit.container.map(|i| containers[i].display_name()),
                        fixable: rule.fix.is_some() && applicability.is_some(),
                        applicability,
                        document: index,
                        hit: None,
                        render: None,
                    };
                    let finding = Finding {
                        hit: Some(hit),
                        ..finding
                    };
                    match finding
                        .hit
                        .as_ref()
                        .and_then(|h| h.unless_service_account.clone())
                    {
                        Some(sa) => pending.push((finding, sa)),
                        None => findings.push(finding),
                    }
                }
            }
        }
        let mut exemptions = self.exemptions(doc, w);
        let mut exempted = |f: &Finding, pending_on: Option<&ServiceAccountRef>| {
            let mut hit = false;
            for e in exemptions.iter_mut().filter(|e| e.covers(&f.rule)) {
                hit = true;
                match pending_on {
                    None => {
                        e.used.insert(f.rule.clone());
                    }
                    Some(sa) => {
                        e.pending = Some(sa.clone());
                        e.pending_rules.insert(f.rule.clone());
                    }
                }
            }
            hit
        };
        findings.retain(|f| !exempted(f, None));
        pending.retain(|(f, sa)| !exempted(f, Some(sa)));
        let mut conditional = Vec::new();
        for e in &exemptions {
            for problem in &e.problems {
                self.push_meta(
                    &mut findings,
                    file,
                    INVALID_EXEMPTION,
                    e.range,
                    problem.clone(),
                    Some(info),
                    index,
                );
            }
            // What a pending finding suppressed may yet vanish when the pod's ServiceAccount turns
            // the token off, so the verdict can depend on the whole change: one message for when
            // it does (`if_quiet`) and one for when it does not (`otherwise`).
            let whole = |idle: bool| {
                idle.then(|| format!("{} suppresses nothing here; remove it", e.label))
            };
            let (otherwise, if_quiet) = match &e.rules {
                // One Polaris or kube-linter check maps to several rules: used when any is.
                Covered::All => (
                    whole(e.used.is_empty() && e.pending_rules.is_empty()),
                    whole(e.used.is_empty()),
                ),
                Covered::Some(ids) if !e.per_rule => {
                    let relevant = ids.iter().any(|id| self.is_active(id));
                    (
                        whole(relevant && e.used.is_empty() && e.pending_rules.is_empty()),
                        whole(relevant && e.used.is_empty()),
                    )
                }
                Covered::Some(ids) => {
                    let idle = |count_pending: bool| -> Option<String> {
                        let idle: Vec<&str> = ids
                            .iter()
                            .filter(|id| self.is_active(id) && !e.used.contains(*id))
                            .filter(|id| count_pending || !e.pending_rules.contains(*id))
                            .map(String::as_str)
                            .collect();
                        if idle.is_empty() {
                            None
                        } else if idle.len() == ids.len() {
                            Some(format!("{} suppresses nothing here; remove it", e.label))
                        } else {
                            Some(format!(
                                "`{IGNORE_ANNOTATION}` names `{}`, which suppresses nothing here",
                                idle.join("`, `")
                            ))
                        }
                    };
                    (idle(false), idle(true))
                }
            };
            let report = |message: Option<String>| {
                let mut one = Vec::new();
                if let Some(message) = message {
                    self.push_meta(
                        &mut one,
                        file,
                        UNUSED_EXEMPTION,
                        e.range,
                        message,
                        Some(info),
                        index,
                    );
                }
                one
            };
            match &e.pending {
                None => findings.extend(report(otherwise)),
                Some(sa) => {
                    pending.extend(report(otherwise).into_iter().map(|f| (f, sa.clone())));
                    conditional.extend(report(if_quiet).into_iter().map(|f| (f, sa.clone())));
                }
            }
        }
        findings.splice(0..0, invalid);
        let label = |f: &mut Finding| f.pod = w.label.clone();
        findings.iter_mut().for_each(label);
        pending.iter_mut().for_each(|(f, _)| label(f));
        conditional.iter_mut().for_each(|(f, _)| label(f));
        out.conditional.extend(conditional);
        out.findings.extend(findings);
        out.pending.extend(pending);
    }
}

/// Helm chart templates are not YAML until rendered; linting them would only produce noise.
/// A file is one when `{{` appears as YAML syntax (a broken document, or braces parsed as flow
/// mappings), not inside a scalar or a comment: a `{{ }}` in an annotation's value must not
/// switch linting off.
pub fn looks_like_helm_template(text: &str, stream: &yaml::Stream) -> bool {
    let inside = |ranges: &[TextRange], at: usize| {
        let i = ranges.partition_point(|r| r.end() <= at);
        ranges.get(i).is_some_and(|r| r.contains(at))
    };
    text.match_indices("{{")
        .any(|(at, _)| !inside(&stream.scalars, at) && !inside(&stream.comments, at))
}

/// Map over items on every core, keeping their order.
pub fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    // Asking for the cores reads cgroup files (open, read, stat): for one small object, as the
    // admission webhook lints per request, that was 4% of the request's work.
    if items.len() <= 1 {
        return items.iter().map(f).collect();
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    parallel_map_on(cores, items, f)
}

/// [`parallel_map`] on at most `threads` threads.
pub fn parallel_map_on<T: Sync, R: Send>(
    threads: usize,
    items: &[T],
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let threads = threads.max(1).min(items.len().max(1));
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<(usize, R)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut local = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        local.push((i, f(item)));
                    }
                    local
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}
