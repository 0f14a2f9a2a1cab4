//! The repository configuration file, `.github/kubeharden.yaml` (or `.kubeharden.yaml`).
//!
//! Parsed with spans like everything else, so every error names the file, line and key. All
//! problems are collected before reporting, as cargo-deny does, so one run shows them all.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;

use crate::k8s::KubeVersion;
use crate::lint::Settings;
use crate::rules::{Profile, Registry, Severity};
use crate::source::{SourceFile, TextRange};
use crate::workloads::{KindEntry, parse_entries};
use crate::yaml::{self, de::from_node};

/// Files KubeHarden reads as manifests.
pub fn is_yaml(path: &str) -> bool {
    path.ends_with(".yaml") || path.ends_with(".yml")
}

/// Where a repository keeps its configuration, in the order they are looked for.
pub const CONFIG_PATHS: [&str; 2] = [".github/kubeharden.yaml", ".kubeharden.yaml"];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Raw {
    profile: Option<Profile>,
    kubernetes_version: Option<KubeVersion>,
    fail_on: Option<Severity>,
    /// Review draft pull requests too (by default they wait until ready for review).
    #[serde(default)]
    review_drafts: bool,
    #[serde(default)]
    rules: RawRules,
    #[serde(default)]
    paths: RawPaths,
    #[serde(default)]
    images: Images,
    #[serde(default)]
    limits: RawLimits,
    /// Kinds that run pods beyond the built-in ones (in-house operators), or that override
    /// where a built-in kind's pods are.
    #[serde(default)]
    workloads: Vec<KindEntry>,
    #[serde(default)]
    admission: Admission,
    #[serde(default)]
    render: RawRender,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRender {
    #[serde(default)]
    skip: Vec<String>,
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    values: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    enable_helm: bool,
}

/// A repository path named in the configuration, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigPath {
    /// Repository-relative, normalised (`./a/b/` is `a/b`; the top is empty).
    pub path: String,
    pub range: TextRange,
}

/// `render:`: which charts and kustomizations are rendered, and how.
#[derive(Debug, Clone, Default)]
pub struct Render {
    /// The configuration file these came from, where findings about them are reported.
    pub file: String,
    /// Root directories not rendered: their files are linted as written.
    pub skip: Vec<ConfigPath>,
    /// Directories rendered as roots though they would not be one (a chart vendored in
    /// another chart's `charts/`).
    pub add: Vec<ConfigPath>,
    /// Per chart directory, values files (relative to the chart) each rendered as one more
    /// variant.
    pub values: Vec<(ConfigPath, Vec<ConfigPath>)>,
    /// Kustomize's `--enable-helm`, for `helmCharts` vendored in the kustomization's
    /// `charts/` (a chart it would download is never fetched).
    pub enable_helm: bool,
}

impl Render {
    pub fn skips(&self, dir: &str) -> bool {
        self.skip.iter().any(|s| s.path == dir)
    }
}

/// What only the admission webhook (`kubeharden admission`) reads: the linting settings above
/// apply to it as they do to the CLI and the app.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Admission {
    /// `/mutate` applies unsafe fixes too (removing host namespaces, `privileged`, …).
    #[serde(default)]
    pub unsafe_fixes: bool,
    /// Requests allowed without linting, as Pod Security Admission's exemptions.
    #[serde(default)]
    pub exemptions: StaticExemptions,
}

/// Who and what the webhook lets through unjudged; each entry says why.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StaticExemptions {
    #[serde(default)]
    pub namespaces: Vec<StaticExemption>,
    #[serde(default)]
    pub usernames: Vec<StaticExemption>,
    #[serde(default)]
    pub groups: Vec<StaticExemption>,
    #[serde(default)]
    pub runtime_classes: Vec<StaticExemption>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticExemption {
    pub name: String,
    pub reason: String,
}

impl StaticExemptions {
    /// The exemption named `name` in `list`, if any.
    pub fn find<'a>(list: &'a [StaticExemption], name: &str) -> Option<&'a StaticExemption> {
        list.iter().find(|e| e.name == name)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawLimits {
    max_file_size: Option<ByteSize>,
}

/// A size in bytes, written as a number of bytes or with a unit (`8MiB`, `512KiB`, `3MB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub usize);

impl ByteSize {
    /// The largest file anyone may ask KubeHarden to parse: beyond it a file is a denial of
    /// service more likely than a manifest, whatever a repository's configuration says.
    pub const CEILING: ByteSize = ByteSize(64 * 1024 * 1024);
}

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (number, unit) = t.split_at(digits);
        let number: usize = number
            .parse()
            .map_err(|_| format!("`{s}` is not a size; write bytes or e.g. `8MiB`"))?;
        let factor: usize = match unit.trim() {
            "" | "B" => 1,
            "K" | "KB" => 1_000,
            "Ki" | "KiB" => 1024,
            "M" | "MB" => 1_000_000,
            "Mi" | "MiB" => 1024 * 1024,
            other => {
                return Err(format!(
                    "unknown size unit `{other}` in `{s}`; use KiB or MiB"
                ));
            }
        };
        let bytes = number
            .checked_mul(factor)
            .filter(|&b| b <= Self::CEILING.0)
            .ok_or_else(|| format!("`{s}` is over the ceiling of 64MiB"))?;
        if bytes == 0 {
            return Err("a size of zero would parse nothing".into());
        }
        Ok(ByteSize(bytes))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as 8MiB, or a number of bytes")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ByteSize, E> {
                v.to_string().parse().map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ByteSize, E> {
                v.to_string().parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Container image checks beyond the manifest itself.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Images {
    /// Scan the images a pull request adds or changes with the server's scanner.
    #[serde(default)]
    pub scan: bool,
    /// Vulnerabilities at or above this severity fail the check (default `high`).
    pub fail_on: Option<crate::vuln::VulnSeverity>,
    /// Registries or registry/path prefixes images may come from; any when empty.
    #[serde(default)]
    pub allowed_registries: Vec<String>,
    /// Report images without a digest and suggest the digest the registry serves for their tag.
    #[serde(default)]
    pub pin_digests: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRules {
    #[serde(default)]
    enable: Vec<String>,
    #[serde(default)]
    disable: Vec<String>,
    #[serde(default)]
    severity: BTreeMap<String, Severity>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawPaths {
    #[serde(default)]
    include: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
}

/// A repository's configuration, validated.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub profile: Option<Profile>,
    pub kubernetes_version: Option<KubeVersion>,
    pub fail_on: Option<Severity>,
    pub review_drafts: bool,
    pub enable: BTreeSet<String>,
    pub disable: BTreeSet<String>,
    pub severity: BTreeMap<String, Severity>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub images: Images,
    /// The largest file parsed (default 2 MiB, at most [`ByteSize::CEILING`]).
    pub max_file_size: Option<ByteSize>,
    /// Kinds that run pods, as `rules/workloads/*.yaml` gives them.
    pub workloads: Vec<KindEntry>,
    pub admission: Admission,
    pub render: Render,
    include_set: Option<GlobSet>,
    exclude_set: Option<GlobSet>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub path: String,
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}:{}: {}", self.path, p.line, p.column, p.message)?;
        }
        Ok(())
    }
}

/// The `render:` section with each path normalised and placed; a path that is absolute or
/// leaves the repository is a problem at its line.
fn render_section(
    file: &str,
    doc: &yaml::Document,
    root: yaml::NodeId,
    raw: RawRender,
    problem: &mut dyn FnMut(TextRange, String),
) -> Render {
    let section = doc.get(root, "render");
    let items = |key: &str| -> Vec<TextRange> {
        section
            .and_then(|s| doc.get(s, key))
            .map(|n| doc.items(n).iter().map(|&i| doc.node(i).range).collect())
            .unwrap_or_default()
    };
    let mut place = |key: &str, base: &str, value: &str, range: TextRange| -> Option<ConfigPath> {
        match crate::roots::join(base, value.trim_end_matches('/')) {
            Some(path) => Some(ConfigPath { path, range }),
            None => {
                problem(
                    range,
                    format!("`render.{key}`: `{value}` is not a path inside the repository"),
                );
                None
            }
        }
    };
    let mut listed = |key: &str, values: Vec<String>| -> Vec<ConfigPath> {
        let ranges = items(key);
        values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| place(key, "", v, ranges.get(i).copied().unwrap_or_default()))
            .collect()
    };
    let skip = listed("skip", raw.skip);
    let add = listed("add", raw.add);
    let mut values = Vec::new();
    let charts = section.and_then(|s| doc.get(s, "values"));
    for (chart, files) in raw.values {
        let entry = charts.and_then(|c| {
            doc.entries(c)
                .iter()
                .find(|e| doc.key_str(e.key) == Some(chart.as_str()))
                .map(|e| (doc.node(e.key).range, e.value))
        });
        let (key_range, value) = entry.map_or((TextRange::default(), None), |(r, v)| (r, Some(v)));
        let ranges: Vec<TextRange> = value
            .map(|v| doc.items(v).iter().map(|&i| doc.node(i).range).collect())
            .unwrap_or_default();
        let Some(dir) = place("values", "", &chart, key_range) else {
            continue;
        };
        let files = files
            .iter()
            .enumerate()
            .filter_map(|(i, f)| {
                place(
                    "values",
                    &dir.path,
                    f,
                    ranges.get(i).copied().unwrap_or(key_range),
                )
            })
            .collect();
        values.push((dir, files));
    }
    Render {
        file: file.to_string(),
        skip,
        add,
        values,
        enable_helm: raw.enable_helm,
    }
}

impl Config {
    /// Parse and validate a configuration file's text.
    pub fn parse(path: &str, text: &str, registry: &Registry) -> Result<Config, ConfigError> {
        let file = SourceFile::new(path, text);
        let mut problems = Vec::new();
        let problem = |range: TextRange, message: String| {
            let at = file.line_col(range.start());
            ConfigProblem {
                line: at.line,
                column: at.column,
                message,
            }
        };
        let fail = |problems: Vec<ConfigProblem>| ConfigError {
            path: path.to_string(),
            problems,
        };
        let stream = yaml::parse(text, &yaml::Limits::default());
        if !stream.errors.is_empty() {
            return Err(fail(
                stream
                    .errors
                    .iter()
                    .map(|e| problem(e.range, e.message.clone()))
                    .collect(),
            ));
        }
        let docs: Vec<_> = stream
            .documents
            .iter()
            .filter(|d| d.root().is_some())
            .collect();
        let doc = match docs.as_slice() {
            [] => return Ok(Config::default()),
            [doc] => *doc,
            [_, second, ..] => {
                return Err(fail(vec![problem(
                    second.range,
                    "the configuration file must hold a single YAML document".into(),
                )]));
            }
        };
        let root = doc.root().expect("filtered on root");
        for dup in &doc.duplicate_keys {
            problems.push(problem(
                doc.node(dup.again).range,
                format!(
                    "key `{}` is given twice",
                    doc.key_str(dup.again).unwrap_or_default()
                ),
            ));
        }
        let raw: Raw = match from_node(doc, root) {
            Ok(raw) => raw,
            Err(e) => {
                let at = e.node.map(|n| doc.path_of(n)).filter(|p| !p.is_empty());
                let message = match at {
                    Some(key) => format!("`{key}`: {}", e.message),
                    None => e.message,
                };
                problems.push(problem(e.range.unwrap_or_default(), message));
                return Err(fail(problems));
            }
        };
        // Rule ids are checked against the registry, each at its own position.
        let rule_sections = ["enable", "disable", "severity"];
        if let Some(rules) = doc.get(root, "rules") {
            for section in rule_sections {
                let Some(node) = doc.get(rules, section) else {
                    continue;
                };
                let ids: Vec<(String, TextRange)> = if section == "severity" {
                    doc.entries(node)
                        .iter()
                        .filter_map(|e| {
                            Some((doc.key_str(e.key)?.to_string(), doc.node(e.key).range))
                        })
                        .collect()
                } else {
                    doc.items(node)
                        .iter()
                        .filter_map(|&i| Some((doc.str_value(i)?.to_string(), doc.node(i).range)))
                        .collect()
                };
                for (id, range) in ids {
                    if registry.get(&id).is_none() {
                        problems.push(problem(
                            range,
                            format!(
                                "`rules.{section}`: unknown rule `{id}` (see `kubeharden rules`)"
                            ),
                        ));
                    }
                }
            }
        }
        // An exemption without a reason is a hole nobody can audit.
        let sections = [
            ("namespaces", &raw.admission.exemptions.namespaces),
            ("usernames", &raw.admission.exemptions.usernames),
            ("groups", &raw.admission.exemptions.groups),
            ("runtime-classes", &raw.admission.exemptions.runtime_classes),
        ];
        for (section, list) in sections {
            let nodes = doc
                .get_path(root, &["admission", "exemptions", section])
                .map(|n| doc.items(n).to_vec())
                .unwrap_or_default();
            for (i, e) in list.iter().enumerate() {
                let range = nodes
                    .get(i)
                    .map_or_else(TextRange::default, |&n| doc.node(n).range);
                if e.name.trim().is_empty() {
                    problems.push(problem(
                        range,
                        format!("`admission.exemptions.{section}[{i}]`: `name` is empty"),
                    ));
                }
                if e.reason.trim().is_empty() {
                    problems.push(problem(
                        range,
                        format!(
                            "`admission.exemptions.{section}[{i}]`: `reason` is empty; say why `{}` is exempt",
                            e.name
                        ),
                    ));
                }
            }
        }
        let mut globs = |section: &str, patterns: &[String]| -> Option<GlobSet> {
            if patterns.is_empty() {
                return None;
            }
            let nodes = doc
                .get(root, "paths")
                .and_then(|p| doc.get(p, section))
                .map(|n| doc.items(n).to_vec())
                .unwrap_or_default();
            let mut builder = GlobSetBuilder::new();
            for (i, pattern) in patterns.iter().enumerate() {
                match Glob::new(pattern) {
                    Ok(g) => {
                        builder.add(g);
                    }
                    Err(e) => {
                        let range = nodes
                            .get(i)
                            .map_or_else(TextRange::default, |&n| doc.node(n).range);
                        problems.push(problem(range, format!("`paths.{section}`: {e}")));
                    }
                }
            }
            builder.build().ok()
        };
        let include_set = globs("include", &raw.paths.include);
        let exclude_set = globs("exclude", &raw.paths.exclude);
        let workloads = match parse_entries(
            doc,
            doc.get(root, "workloads"),
            raw.workloads,
            &|range, message| problem(range, message),
        ) {
            Ok(entries) => entries
                .into_iter()
                .map(|e| KindEntry {
                    origin: path.to_string(),
                    ..e
                })
                .collect(),
            Err(p) => {
                problems.push(*p);
                Vec::new()
            }
        };
        let render = render_section(path, doc, root, raw.render, &mut |range, message| {
            problems.push(problem(range, message))
        });
        if !problems.is_empty() {
            return Err(fail(problems));
        }
        Ok(Config {
            profile: raw.profile,
            kubernetes_version: raw.kubernetes_version,
            fail_on: raw.fail_on,
            review_drafts: raw.review_drafts,
            enable: raw.rules.enable.into_iter().collect(),
            disable: raw.rules.disable.into_iter().collect(),
            severity: raw.rules.severity,
            include: raw.paths.include,
            exclude: raw.paths.exclude,
            images: raw.images,
            max_file_size: raw.limits.max_file_size,
            workloads,
            admission: raw.admission,
            render,
            include_set,
            exclude_set,
        })
    }

    /// Whether a changed file of a pull request is linted: YAML, inside the configured paths.
    pub fn lints_changed(&self, path: &str) -> bool {
        is_yaml(path) && self.selects(Path::new(path))
    }

    /// Whether a repository-relative path is linted.
    pub fn selects(&self, path: &Path) -> bool {
        let path = path.strip_prefix("./").unwrap_or(path);
        self.include_set.as_ref().is_none_or(|s| s.is_match(path))
            && !self.exclude_set.as_ref().is_some_and(|s| s.is_match(path))
    }

    /// Apply this configuration over the defaults.
    pub fn settings(&self) -> Settings {
        let mut s = Settings::default();
        if let Some(p) = self.profile {
            s.profile = p;
        }
        if let Some(v) = self.kubernetes_version {
            s.kube_version = v;
        }
        if let Some(f) = self.fail_on {
            s.fail_on = f;
        }
        s.enable = self.enable.clone();
        s.disable = self.disable.clone();
        s.severity = self.severity.clone();
        if self.images.pin_digests {
            s.enable.insert("image-not-pinned".into());
        }
        s.images.allowed_registries = self.images.allowed_registries.clone();
        if let Some(size) = self.max_file_size {
            s.limits.max_bytes = size.0;
        }
        if let Some(f) = self.images.fail_on {
            s.images.fail_on = f;
        }
        s.workloads = self.workloads.clone();
        s
    }
}
