//! The admission policy's CEL against the engine: on every object of the rule fixtures (and of
//! the corpus, with `KUBEHARDEN_CORPUS`), for each profile at several Kubernetes versions, the
//! rules whose validation fails in a CEL interpreter are exactly the rules the linter reports
//! when it judges the object on its own, as the webhook does.
//!
//! The CEL is read back from the rendered YAML, so what is checked is what ships. Objects are
//! handed over as the API server hands them to a policy: JSON of the typed object, so a field
//! written as null is absent, and an annotation without a value is the empty string.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use cel::{Context, Env, Program, Value, extensions};
use kubeharden_core::k8s::KubeVersion;
use kubeharden_core::lint::{Linter, Settings};
use kubeharden_core::object::{JsonObject, to_json};
use kubeharden_core::policy_cel::{self, Action, RESOURCES};
use kubeharden_core::rules::{Profile, Registry};
use kubeharden_core::workloads::api_group;
use kubeharden_core::yaml::{self, Limits};
use serde_json::Value as Json;

const PROFILES: [Profile; 3] = [Profile::Baseline, Profile::Restricted, Profile::Nsa];

/// Versions around every version gate of the rules, their items and exemptions.
fn versions() -> Vec<KubeVersion> {
    let mut v: Vec<KubeVersion> = [
        "1.7", "1.8", "1.18", "1.19", "1.22", "1.23", "1.24", "1.25", "1.27", "1.29", "1.31",
        "1.32", "1.34", "1.35",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    v.push(KubeVersion::NEWEST);
    v
}

struct Compiled {
    profile: Profile,
    version: KubeVersion,
    conditions: Vec<Program>,
    variables: Vec<(String, Program)>,
    validations: Vec<(String, Program)>,
    rules: BTreeSet<String>,
}

fn env() -> Arc<Env> {
    let mut env = Env::stdlib();
    env.add_extension(extensions::strings).unwrap();
    Arc::new(env)
}

/// The rendered policy's CEL, compiled; each validation's rule is the start of its message.
fn compile(env: &Env, registry: &Registry, profile: Profile, version: KubeVersion) -> Compiled {
    let policy = policy_cel::generate(registry, profile, Some(version)).unwrap();
    let text = policy.render(Action::Enforce, "test");
    let stream = yaml::parse(&text, &Limits::default());
    assert!(stream.errors.is_empty(), "{:?}", stream.errors);
    let doc = &stream.documents[0];
    let json = to_json(doc, doc.root().unwrap()).unwrap();
    let spec = &json["spec"];
    let program = |e: &Json| {
        let source = e.as_str().unwrap();
        env.compile(source).unwrap_or_else(|err| {
            panic!("{profile:?} {version}: `{source}` does not compile: {err:?}")
        })
    };
    let named = |key: &str| -> Vec<(String, Program)> {
        spec[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["name"].as_str().unwrap().to_string(),
                    program(&n["expression"]),
                )
            })
            .collect()
    };
    let validations: Vec<(String, Program)> = spec["validations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let message = v["message"].as_str().unwrap();
            let rule = message.split(':').next().unwrap().to_string();
            (rule, program(&v["expression"]))
        })
        .collect();
    assert_eq!(
        validations.len(),
        policy.validations.len(),
        "the YAML holds every validation"
    );
    Compiled {
        profile,
        version,
        conditions: named("matchConditions")
            .into_iter()
            .map(|(_, p)| p)
            .collect(),
        variables: named("variables"),
        rules: validations.iter().map(|(r, _)| r.clone()).collect(),
        validations,
    }
}

/// The rules whose validation fails; `None` when the match conditions leave the object out.
fn cel_verdict(
    env: &Arc<Env>,
    c: &Compiled,
    object: &Json,
) -> Result<Option<BTreeSet<String>>, String> {
    cel_verdict_on(env, c, object, None)
}

/// The verdict of a CREATE, or of an UPDATE from `old`.
fn cel_verdict_on(
    env: &Arc<Env>,
    c: &Compiled,
    object: &Json,
    old: Option<&Json>,
) -> Result<Option<BTreeSet<String>>, String> {
    let mut cx = Context::with_env(env.clone());
    cx.add_variable("object", cel::to_value(object).unwrap())
        .unwrap();
    let (operation, old) = match old {
        Some(o) => ("UPDATE", cel::to_value(o).unwrap()),
        None => ("CREATE", Value::Null),
    };
    cx.add_variable("oldObject", old).unwrap();
    let request: HashMap<String, Value> = [("operation".to_string(), Value::from(operation))]
        .into_iter()
        .collect();
    cx.add_variable("request", Value::from(request)).unwrap();
    for p in &c.conditions {
        match p.execute(&cx) {
            Ok(Value::Bool(true)) => {}
            Ok(Value::Bool(false)) => return Ok(None),
            other => return Err(format!("match condition: {other:?}")),
        }
    }
    let mut vars: HashMap<String, Value> = HashMap::new();
    for (name, p) in &c.variables {
        cx.add_variable("variables", Value::from(vars.clone()))
            .unwrap();
        let v = p
            .execute(&cx)
            .map_err(|e| format!("variable {name}: {e}"))?;
        vars.insert(name.clone(), v);
    }
    cx.add_variable("variables", Value::from(vars)).unwrap();
    let mut failed = BTreeSet::new();
    for (rule, p) in &c.validations {
        match p.execute(&cx) {
            Ok(Value::Bool(true)) => {}
            Ok(Value::Bool(false)) => {
                failed.insert(rule.clone());
            }
            other => return Err(format!("{rule}: {other:?}")),
        }
    }
    Ok(Some(failed))
}

/// The object as the API server hands it over: nulls of typed fields gone, a value-less
/// annotation or label the empty string (`string_map`: the value's own values are strings).
fn as_admitted(value: &Json, string_map: bool) -> Option<Json> {
    match value {
        Json::Null => None,
        Json::Object(map) => Some(Json::Object(
            map.iter()
                .filter_map(|(k, v)| {
                    let v = match v {
                        Json::Null if string_map => Some(Json::String(String::new())),
                        v if string_map => Some(v.clone()),
                        v => as_admitted(v, matches!(k.as_str(), "annotations" | "labels")),
                    };
                    v.map(|v| (k.clone(), v))
                })
                .collect(),
        )),
        Json::Array(items) => Some(Json::Array(
            items.iter().filter_map(|v| as_admitted(v, false)).collect(),
        )),
        other => Some(other.clone()),
    }
}

/// The objects of a YAML text the policy matches (a `v1/List`'s items one by one).
fn admitted_objects(text: &str) -> Vec<Json> {
    let stream = yaml::parse(text, &Limits::default());
    let mut out = Vec::new();
    let mut push = |v: &Json| {
        let kind = v["kind"].as_str().unwrap_or_default();
        let group = api_group(v["apiVersion"].as_str().unwrap_or_default());
        if RESOURCES.iter().any(|(k, g, _)| *k == kind && *g == group)
            && let Some(v) = as_admitted(v, false)
        {
            out.push(v);
        }
    };
    for doc in &stream.documents {
        let Some(root) = doc.root() else { continue };
        let Ok(v) = to_json(doc, root) else { continue };
        if v["kind"] == "List" {
            for item in v["items"].as_array().into_iter().flatten() {
                push(item);
            }
        } else {
            push(&v);
        }
    }
    out
}

/// The rules the linter reports on the object alone; `None` for an object with a field of the
/// wrong type (`invalid-field`), which the API server refuses before any policy sees it.
fn engine_verdict(registry: &Registry, c: &Compiled, object: &Json) -> Option<BTreeSet<String>> {
    let settings = Settings {
        profile: c.profile,
        kube_version: c.version,
        ..Settings::default()
    };
    let linter = Linter::new(registry, settings);
    let rules: BTreeSet<String> = JsonObject::new(object, &linter.settings.limits)
        .lint(&linter)
        .findings
        .into_iter()
        .map(|f| f.rule)
        .collect();
    if rules.contains("invalid-field") {
        return None;
    }
    Some(rules.into_iter().filter(|r| c.rules.contains(r)).collect())
}

#[derive(Default)]
struct Tally {
    judged: usize,
    /// Objects with a field of the wrong type, not compared.
    refused: usize,
    failures: usize,
    disagreements: Vec<String>,
}

fn compare(
    registry: &Registry,
    env: &Arc<Env>,
    policies: &[Compiled],
    name: &str,
    object: &Json,
    tally: &mut Tally,
) {
    for c in policies {
        let Some(engine) = engine_verdict(registry, c, object) else {
            tally.refused += 1;
            continue;
        };
        let what = format!(
            "{name} {}/{} at {:?} {}",
            object["kind"].as_str().unwrap_or_default(),
            object["metadata"]["name"].as_str().unwrap_or_default(),
            c.profile,
            c.version
        );
        match cel_verdict(env, c, object) {
            Ok(Some(cel)) => {
                tally.judged += 1;
                tally.failures += cel.len();
                if cel != engine {
                    tally.disagreements.push(format!(
                        "{what}: CEL fails {:?}, the engine reports {:?}",
                        cel.difference(&engine).collect::<Vec<_>>(),
                        engine.difference(&cel).collect::<Vec<_>>()
                    ));
                }
            }
            Ok(None) if engine.is_empty() => {}
            Ok(None) => tally.disagreements.push(format!(
                "{what}: not matched, the engine reports {engine:?}"
            )),
            Err(e) => tally.disagreements.push(format!("{what}: CEL error {e}")),
        }
    }
}

fn all_policies(env: &Env, registry: &Registry, versions: &[KubeVersion]) -> Vec<Compiled> {
    let mut out = Vec::new();
    for profile in PROFILES {
        for &v in versions {
            out.push(compile(env, registry, profile, v));
        }
    }
    out
}

fn report(tally: &Tally) {
    let shown: Vec<&String> = tally.disagreements.iter().take(60).collect();
    assert!(
        tally.disagreements.is_empty(),
        "{} disagreements between the CEL and the engine:\n{}",
        tally.disagreements.len(),
        shown
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn fixture_files() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rules");
    let mut files = Vec::new();
    common::yaml_files(&dir, &mut files);
    files.sort();
    files
}

#[test]
fn cel_agrees_with_the_engine_on_every_rule_fixture() {
    let registry = Registry::builtin().unwrap();
    let env = env();
    let policies = all_policies(&env, &registry, &versions());
    let mut tally = Tally::default();
    let mut objects = 0;
    for path in fixture_files() {
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap()
            .display()
            .to_string();
        for object in admitted_objects(&text) {
            objects += 1;
            compare(&registry, &env, &policies, &name, &object, &mut tally);
        }
    }
    report(&tally);
    // Not vacuous: the fixtures hold objects, the policies judge them and rules fail.
    assert!(
        objects > 150 && tally.judged > 150 * policies.len() / 2,
        "{objects} objects, {} judged",
        tally.judged
    );
    assert!(tally.failures > 1000, "{} failures", tally.failures);
    assert!(
        tally.refused <= policies.len() * 10,
        "{} refused",
        tally.refused
    );
}

/// Each fail fixture of a rule the policy implements fails that rule's CEL under the
/// fixture's own settings, when the policy matches its kind.
#[test]
fn every_fail_fixture_of_an_implemented_rule_fails_its_cel() {
    let registry = Registry::builtin().unwrap();
    let env = env();
    let mut compiled: BTreeMap<(Profile, KubeVersion), Compiled> = BTreeMap::new();
    let mut checked = BTreeSet::new();
    let mut problems = Vec::new();
    for path in fixture_files() {
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        if !file.starts_with("fail") {
            continue;
        }
        let rule = path
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let (settings, _) = common::fixture_settings(&text);
        let c = compiled
            .entry((settings.profile, settings.kube_version))
            .or_insert_with(|| compile(&env, &registry, settings.profile, settings.kube_version));
        if !c.rules.contains(&rule) {
            continue;
        }
        let objects = admitted_objects(&text);
        if objects.is_empty() {
            continue;
        }
        let failed = objects.iter().any(|o| {
            cel_verdict(&env, c, o)
                .ok()
                .flatten()
                .is_some_and(|f| f.contains(&rule))
        });
        if failed {
            checked.insert(rule.clone());
        } else {
            problems.push(format!("{rule}/{file} passes its CEL"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(
        checked.len() >= 25,
        "only {} rules checked: {checked:?}",
        checked.len()
    );
}

#[test]
fn cel_agrees_with_the_engine_on_the_corpus() {
    let Some(dir) = common::corpus_dir() else {
        eprintln!("KUBEHARDEN_CORPUS is not set; skipping");
        return;
    };
    let registry = Registry::builtin().unwrap();
    let env = env();
    let versions = vec![KubeVersion::new(1, 24), KubeVersion::NEWEST];
    let policies = all_policies(&env, &registry, &versions);
    let text = std::fs::read_to_string(dir.join("all-workloads.yaml")).unwrap();
    let mut tally = Tally::default();
    let objects = admitted_objects(&text);
    for object in &objects {
        compare(
            &registry,
            &env,
            &policies,
            "all-workloads.yaml",
            object,
            &mut tally,
        );
    }
    report(&tally);
    assert!(objects.len() > 500, "{} objects", objects.len());
    eprintln!(
        "corpus: {} objects, {} judgements, {} rule failures, all agreeing ({} refused for invalid fields)",
        objects.len(),
        tally.judged,
        tally.failures,
        tally.refused
    );
}

/// An UPDATE that leaves the pod spec as it was (scaling) is not judged; one that changes it is.
#[test]
fn an_update_is_judged_only_when_the_pod_spec_changes() {
    let registry = Registry::builtin().unwrap();
    let env = env();
    let c = compile(&env, &registry, Profile::Baseline, KubeVersion::NEWEST);
    let old = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "template": {"metadata": {}, "spec": {"hostNetwork": true,
            "containers": [{"name": "app", "image": "nginx:1.27"}]}}}
    });
    let mut scaled = old.clone();
    scaled["spec"]["replicas"] = 5.into();
    assert_eq!(cel_verdict_on(&env, &c, &scaled, Some(&old)), Ok(None));
    let mut changed = old.clone();
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.28".into();
    let failed = cel_verdict_on(&env, &c, &changed, Some(&old))
        .unwrap()
        .unwrap();
    assert!(failed.contains("host-network"), "{failed:?}");
    let created = cel_verdict(&env, &c, &old).unwrap().unwrap();
    assert!(created.contains("host-network"), "{created:?}");
}

#[test]
fn deploy_admission_holds_the_generated_policies() {
    let registry = Registry::builtin().unwrap();
    for profile in PROFILES {
        let name = format!("deploy/admission/policy-{}.yaml", profile.as_str());
        let file = std::fs::read_to_string(common::repo_root().join(&name)).unwrap();
        let command = format!("kubeharden admission policy --profile {}", profile.as_str());
        let policy = policy_cel::generate(&registry, profile, None).unwrap();
        assert_eq!(
            file,
            policy.render(Action::Enforce, &command),
            "regenerate with `{command} > {name}`"
        );
    }
}
