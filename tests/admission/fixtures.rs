//! For every file under core/tests/fixtures/rules, the webhook's decision on each object equals
//! `kubeharden lint`'s on that object's manifest, under the same profile and version.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kubeharden_core::lint::{Linter, Settings};
use kubeharden_core::rules::Registry;
use kubeharden_core::source::SourceFile;
use kubeharden_core::yaml::{self, Limits};
use serde_json::Value;

use crate::support::{TestServer, review};

/// Diagnostics about the text, not the object: the API server's JSON has no duplicate keys,
/// no YAML syntax and no alias to expand.
const ABOUT_THE_TEXT: [&str; 3] = ["duplicate-key", "invalid-yaml", "yaml-limit"];

/// One object of a fixture: its manifest text alone, as JSON, and how to route it.
pub struct FixtureObject {
    pub name: String,
    pub manifest: String,
    pub object: Value,
    pub profile: String,
    pub version: Option<String>,
    pub settings: Settings,
}

impl FixtureObject {
    pub fn query(&self) -> String {
        self.version
            .as_ref()
            .map(|v| format!("?version={v}"))
            .unwrap_or_default()
    }

    pub fn request(&self, operation: &str) -> Value {
        let mut request = review(operation, &self.object, None);
        if self.object["metadata"]["namespace"].is_null() {
            request["request"]["namespace"] = Value::Null;
        }
        request
    }
}

fn fixture_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("core/tests/fixtures/rules");
    let mut out = Vec::new();
    for rule in std::fs::read_dir(dir).unwrap() {
        for file in std::fs::read_dir(rule.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The profile and version a fixture asks for; None when it needs facts (scan reports,
/// digests, registry policy) only the CLI's flags give.
fn route(text: &str) -> Option<(String, Option<String>)> {
    let mut profile = "nsa".to_string();
    let mut version = None;
    if let Some(args) = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("# kubeharden-test:"))
    {
        let words: Vec<&str> = args.split_whitespace().collect();
        for pair in words.chunks(2) {
            match pair {
                ["--profile", p] => profile = p.to_string(),
                ["--kubernetes-version", v] => version = Some(v.to_string()),
                _ => return None,
            }
        }
    }
    Some((profile, version))
}

/// Every object of every fixture the webhook can be asked about, and the files left out
/// (those that need facts a request cannot carry).
pub fn fixture_objects(registry: &Registry) -> (Vec<FixtureObject>, Vec<String>) {
    let (mut out, mut skipped) = (Vec::new(), Vec::new());
    for path in fixture_files() {
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.display().to_string();
        let Some((profile, version)) = route(&text) else {
            skipped.push(name);
            continue;
        };
        let mut settings = Settings {
            profile: profile.parse().unwrap(),
            ..Settings::default()
        };
        if let Some(v) = &version {
            settings.kube_version = v.parse().unwrap();
        }
        let linter = Linter::new(registry, settings.clone());
        let stream = yaml::parse(&text, &Limits::default());
        let starts: Vec<usize> = stream.documents.iter().map(|d| d.range.start()).collect();
        for (i, doc) in stream.documents.iter().enumerate() {
            let Some(root) = doc.root() else { continue };
            let Ok(object) = yaml::de::from_node::<Value>(doc, root) else {
                continue;
            };
            // Nesting no pod spec reaches is refused before any decision (hostile.rs).
            if object.get("kind").is_none() || depth(&object) > 100 {
                continue;
            }
            // A document's range ends at its last node; its text runs to the next document.
            let end = starts.get(i + 1).copied().unwrap_or(text.len());
            let manifest = text[doc.range.start()..end].to_string();
            // A text the API server never sees as such (an alias bomb, a duplicate key) is no
            // object to compare.
            let report = linter.lint_files(&[SourceFile::new("object.yaml", manifest.as_str())]);
            if report.workloads == 0
                || report
                    .findings
                    .iter()
                    .any(|f| ABOUT_THE_TEXT.contains(&f.rule.as_str()))
            {
                continue;
            }
            out.push(FixtureObject {
                name: format!("{name} (document at byte {})", doc.range.start()),
                manifest,
                object,
                profile: profile.clone(),
                version: version.clone(),
                settings: settings.clone(),
            });
        }
    }
    (out, skipped)
}

#[tokio::test]
async fn the_webhook_decides_as_lint_on_every_rule_fixture() {
    let server = TestServer::start(None).await;
    let mut client = server.client().await;
    let registry = Registry::builtin().unwrap();
    let (objects, skipped) = fixture_objects(&registry);
    let mut problems = Vec::new();
    for o in &objects {
        // `kubeharden lint` on this object's manifest alone: the webhook sees one object,
        // never the ServiceAccount beside it in the file.
        let linter = Linter::new(&registry, o.settings.clone());
        let report = linter.lint_files(&[SourceFile::new("object.yaml", o.manifest.as_str())]);
        let mut expected: BTreeMap<String, usize> = BTreeMap::new();
        for f in &report.findings {
            *expected.entry(f.rule.clone()).or_default() += 1;
        }
        let failed = report.failed(linter.settings.fail_on);
        let audit = client
            .review(
                &format!("/validate/audit/{}{}", o.profile, o.query()),
                &o.request("CREATE"),
            )
            .await;
        let mut got: BTreeMap<String, usize> = BTreeMap::new();
        for (rule, value) in audit["auditAnnotations"].as_object().into_iter().flatten() {
            let value = value.as_str().unwrap();
            let n = value
                .split_once(" findings, the first: ")
                .map_or(1, |(n, _)| n.parse().unwrap());
            got.insert(rule.clone(), n);
        }
        let enforce = client
            .review(
                &format!("/validate/enforce/{}{}", o.profile, o.query()),
                &o.request("CREATE"),
            )
            .await;
        if got != expected || enforce["allowed"] != !failed {
            problems.push(format!(
                "{}: lint {expected:?} (fails: {failed}), webhook {got:?} (allowed: {})",
                o.name, enforce["allowed"]
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        objects.len() > 80,
        "only {} workloads were compared",
        objects.len()
    );
    // Fixtures that need image facts (scan reports, digests) or flags a request cannot carry.
    assert!(skipped.len() < 15, "{skipped:#?}");
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}
