//! One Kubernetes object handed over as JSON, as an admission request carries it, linted and
//! fixed by the very engine that reads files.
//!
//! JSON is YAML flow syntax, so the object's JSON text is parsed with spans like any manifest:
//! the same rules, exemption annotations, versions and fixes apply, with no second reading of
//! the object. A fixed text is flow YAML again, read back into JSON with the core's
//! deserializer, which reads scalars as Kubernetes does.

use serde_json::Value;

use crate::fix::{self, FixError};
use crate::k8s::{self, Contents};
use crate::lint::{Finding, Linter, Report};
use crate::parsed::Parsed;
use crate::rules::Applicability;
use crate::source::SourceFile;
use crate::workloads::WorkloadKinds;
use crate::yaml::{self, Document, NodeId, Stream};

/// The path findings of an object carry: there is no file.
pub const OBJECT_PATH: &str = "object";

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error(transparent)]
    Fix(#[from] FixError),
    #[error("the fixed object cannot be read back as JSON: {0}")]
    ReadBack(String),
}

/// An object and its one parse.
#[derive(Debug)]
pub struct JsonObject {
    parsed: Parsed,
}

impl JsonObject {
    /// The object as JSON text, parsed under `limits` (an object over them is a `yaml-limit`
    /// finding, as a file would be).
    pub fn new(value: &Value, limits: &yaml::Limits) -> JsonObject {
        JsonObject {
            parsed: Parsed::new(SourceFile::new(OBJECT_PATH, text(value)), limits),
        }
    }

    pub fn parsed(&self) -> &Parsed {
        &self.parsed
    }

    pub fn text(&self) -> &str {
        &self.parsed.file().text
    }

    /// Lint the object on its own.
    pub fn lint(&self, linter: &Linter<'_>) -> Report {
        linter.lint_parsed_files(std::slice::from_ref(&self.parsed))
    }

    /// The pods the object carries (one per place `kinds` says pods live, for each `v1/List`
    /// item), as JSON: the pod spec, or the containers where the kind holds no pod spec.
    pub fn pod_specs(&self, kinds: &WorkloadKinds) -> Vec<Value> {
        pod_specs(self.parsed.stream(), kinds)
    }

    /// Each container image of the object with the platform its pod runs it on (what image
    /// inspection reads for it), sorted and without repeats.
    pub fn images(&self, kinds: &WorkloadKinds, default_platform: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .parsed
            .stream()
            .documents
            .iter()
            .flat_map(|doc| crate::decision::images_in(doc, kinds, default_platform))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Where a finding sits in the object, as a path such as
    /// `spec.containers[0].securityContext.allowPrivilegeEscalation`.
    pub fn field(&self, finding: &Finding) -> Option<String> {
        let doc = self.parsed.stream().documents.get(finding.document)?;
        let hit = finding
            .hit
            .as_ref()
            .filter(|h| h.stamp == self.parsed.stamp())?;
        let mut field = doc.path_of(hit.target.base);
        for part in &hit.target.path {
            if !field.is_empty() {
                field.push('.');
            }
            field.push_str(part);
        }
        Some(field)
    }

    /// The object as `kubeharden fix` would leave it, fixing what is at least `min`; the same
    /// object when nothing applies.
    pub fn fix(&self, linter: &Linter<'_>, min: Applicability) -> Result<Value, ObjectError> {
        let result = fix::fix_parsed(linter, &self.parsed, min)?;
        if result.fixed == *self.text() {
            return to_value(self.parsed.stream());
        }
        let stream = yaml::parse(&result.fixed, &linter.settings.limits);
        to_value(&stream)
    }
}

/// JSON with a line per value and no indentation: a finding's column is counted from its
/// line's start, so one line of megabytes would make every finding cost the whole object; an
/// indentation would make a deep object's text grow with its depth.
fn text(value: &Value) -> String {
    use serde::Serialize as _;
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(
        &mut out,
        serde_json::ser::PrettyFormatter::with_indent(b""),
    );
    // Serializing a `Value` into memory cannot fail: its keys are strings.
    let _ = value.serialize(&mut ser);
    String::from_utf8(out).unwrap_or_default()
}

/// The JSON value of a node, read as Kubernetes reads YAML.
pub fn to_json(doc: &Document, node: NodeId) -> Result<Value, yaml::de::DeError> {
    yaml::de::from_node(doc, node)
}

fn to_value(stream: &Stream) -> Result<Value, ObjectError> {
    let doc = stream
        .documents
        .iter()
        .find(|d| d.root().is_some())
        .ok_or_else(|| ObjectError::ReadBack("it holds no document".into()))?;
    let root = doc.root().expect("found with a root");
    to_json(doc, root).map_err(|e| ObjectError::ReadBack(e.message))
}

fn pod_specs(stream: &Stream, kinds: &WorkloadKinds) -> Vec<Value> {
    let mut out = Vec::new();
    for doc in &stream.documents {
        let Contents::Objects(objects) = k8s::objects(doc) else {
            continue;
        };
        for object in &objects {
            for w in kinds.locate(doc, object).workloads {
                // A pod spec that is not JSON cannot come from JSON text; `Null` keeps the
                // count honest all the same.
                let pod = match w.pod_spec {
                    Some(spec) => to_json(doc, spec).unwrap_or(Value::Null),
                    None => Value::Array(
                        w.containers
                            .iter()
                            .map(|c| to_json(doc, c.node).unwrap_or(Value::Null))
                            .collect(),
                    ),
                };
                out.push(pod);
            }
        }
    }
    out
}
