//! Fixes that know the image: each case of issue #16's decision, with the image facts built
//! here (the shell's registry client and Trivy reader fill the same model), snapshotted as
//! what `fix` writes at both levels and what it says about each container.

use std::collections::BTreeMap;
use std::sync::Arc;

use kubeharden_core::facts::{
    ConfigSource, ExposedPort, Facts, ImageConfig, ImageFacts, Inspection, NamedIds,
};
use kubeharden_core::fix::{fix_file, suggest};
use kubeharden_core::lint::{Linter, Settings};
use kubeharden_core::rules::{Applicability, Registry};
use kubeharden_core::source::SourceFile;

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn config(user: Option<&str>) -> ImageConfig {
    ImageConfig {
        user: user.map(str::to_string),
        digest: Some(DIGEST.into()),
        platform: "linux/amd64".into(),
        source: Some(ConfigSource::Registry),
        ..ImageConfig::default()
    }
}

fn facts(images: Vec<(&str, &str, Inspection)>) -> Facts {
    let mut configs = BTreeMap::new();
    for (image, platform, inspection) in images {
        configs.insert((image.to_string(), platform.to_string()), inspection);
    }
    Facts {
        images: Arc::new(ImageFacts {
            configs,
            ..ImageFacts::default()
        }),
    }
}

fn deployment(image: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  template:
    spec:
      containers:
        - name: app
          image: {image}
          resources:
            limits: {{cpu: 100m, memory: 64Mi}}
"
    )
}

fn diff(old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(2)
        .to_string()
}

/// What `fix` prints about each container, then what it writes with safe fixes and with
/// unsafe ones too.
fn report(facts: Facts, text: &str) -> String {
    let registry = Registry::builtin().unwrap();
    let linter = Linter::new(&registry, Settings::default()).with_facts(facts);
    let mut out = String::new();
    for min in [Applicability::Safe, Applicability::Unsafe] {
        let result = fix_file(&linter, &SourceFile::new("web.yaml", text), min).unwrap();
        if min == Applicability::Safe {
            for c in &result.images {
                out += &format!(
                    "image: {} {}: {}\n",
                    c.object,
                    c.container,
                    c.decision.summary()
                );
            }
        }
        let mut fixed: Vec<String> = result
            .fixed_findings
            .iter()
            .map(|f| format!("{}({})", f.rule, f.container.as_deref().unwrap_or("pod")))
            .collect();
        fixed.dedup();
        let left: Vec<String> = result
            .remaining
            .findings
            .iter()
            .map(|f| f.rule.clone())
            .collect();
        out += &format!(
            "=== {min:?} fixes ===\nfixed: {}\nleft: {}\n",
            fixed.join(" "),
            left.join(" ")
        );
        out += &diff(text, &result.fixed);
        let s = suggest::suggestions(text, &result.fixed);
        assert_eq!(suggest::apply(text, &s), result.fixed);
        // Fixing the fixed text again changes nothing.
        let again = fix_file(&linter, &SourceFile::new("web.yaml", &result.fixed), min).unwrap();
        assert_eq!(again.fixed, result.fixed, "fixing twice changed the text");
    }
    out
}

#[test]
fn numeric_user_makes_run_as_non_root_safe() {
    let text = deployment("registry.example/app:1.0");
    let f = facts(vec![(
        "registry.example/app:1.0",
        "linux/amd64",
        Inspection::Read(config(Some("1000"))),
    )]);
    insta::assert_snapshot!(report(f, &text));
}

#[test]
fn numeric_user_and_group() {
    let text = deployment("registry.example/app:1.0");
    let f = facts(vec![(
        "registry.example/app:1.0",
        "linux/amd64",
        Inspection::Read(config(Some("1000:1000"))),
    )]);
    insta::assert_snapshot!(report(f, &text));
}

#[test]
fn named_user_gets_its_ids() {
    let text = deployment("nginx:1.27");
    let mut c = config(Some("nginx"));
    c.names = Some(NamedIds {
        uid: Some(101),
        gid: Some(101),
        problem: None,
    });
    c.exposed_ports = vec![ExposedPort {
        port: 80,
        protocol: "tcp".into(),
    }];
    let f = facts(vec![("nginx:1.27", "linux/amd64", Inspection::Read(c))]);
    insta::assert_snapshot!(report(f, &text));
}

#[test]
fn unresolved_name_gets_no_run_as_non_root() {
    let text = deployment("registry.example/app:1.0");
    let mut c = config(Some("app:app"));
    c.names = Some(NamedIds {
        uid: None,
        gid: None,
        problem: Some("the image has no /etc/passwd and the image has no /etc/group".into()),
    });
    let f = facts(vec![(
        "registry.example/app:1.0",
        "linux/amd64",
        Inspection::Read(c),
    )]);
    insta::assert_snapshot!(report(f, &text));
}

#[test]
fn root_user_gets_an_unsafe_65532() {
    for (name, user) in [
        ("unset", None),
        ("root", Some("root")),
        ("zero", Some("0:0")),
    ] {
        let text = deployment("registry.example/app:1.0");
        let f = facts(vec![(
            "registry.example/app:1.0",
            "linux/amd64",
            Inspection::Read(config(user)),
        )]);
        insta::assert_snapshot!(format!("root_{name}"), report(f, &text));
    }
}

#[test]
fn volumes_and_tmp_get_empty_dirs() {
    let text = deployment("registry.example/app:1.0");
    let mut c = config(Some("1000"));
    c.volumes = vec!["/var/cache/app".into(), "/data/".into()];
    let f = facts(vec![(
        "registry.example/app:1.0",
        "linux/amd64",
        Inspection::Read(c),
    )]);
    insta::assert_snapshot!(report(f, &text));
}

#[test]
fn mounted_paths_are_left_alone() {
    let text = "apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
    - name: app
      image: registry.example/app:1.0
      resources:
        limits: {cpu: 100m, memory: 64Mi}
      volumeMounts:
        - name: cache
          mountPath: /var/cache
  volumes:
    - name: cache
      emptyDir: {}
    - name: tmp
      configMap: {name: x}
";
    let mut c = config(Some("1000"));
    c.volumes = vec!["/var/cache/app".into()];
    let f = facts(vec![(
        "registry.example/app:1.0",
        "linux/amd64",
        Inspection::Read(c),
    )]);
    insta::assert_snapshot!(report(f, text));
}

#[test]
fn low_port_under_drop_all() {
    let text = deployment("registry.example/app:1.0");
    let mut c = config(Some("1000"));
    c.exposed_ports = vec![
        ExposedPort {
            port: 80,
            protocol: "tcp".into(),
        },
        ExposedPort {
            port: 8443,
            protocol: "tcp".into(),
        },
    ];
    let f = facts(vec![(
        "registry.example/app:1.0",
        "linux/amd64",
        Inspection::Read(c),
    )]);
    insta::assert_snapshot!(report(f, &text));
}

#[test]
fn not_checked_keeps_todays_fix_and_says_so() {
    let text = deployment("registry.example/app:1.0");
    let f = facts(vec![(
        "registry.example/app:1.0",
        "linux/amd64",
        Inspection::NotChecked("registry.example asked for credentials".into()),
    )]);
    let without = report(facts(vec![]), &text);
    let with = report(f, &text);
    // The same edits as without any image facts, plus the line that says why.
    let (said, rest) = with.split_once('\n').unwrap();
    assert_eq!(rest, without);
    insta::assert_snapshot!(said);
}

#[test]
fn a_root_container_keeps_run_as_non_root_off_the_pod() {
    let text = "apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
    - name: app
      image: registry.example/app:1.0
      resources:
        limits: {cpu: 100m, memory: 64Mi}
    - name: sidecar
      image: registry.example/sidecar:1.0
      resources:
        limits: {cpu: 100m, memory: 64Mi}
";
    let f = facts(vec![
        (
            "registry.example/app:1.0",
            "linux/amd64",
            Inspection::Read(config(Some("1000"))),
        ),
        (
            "registry.example/sidecar:1.0",
            "linux/amd64",
            Inspection::Read(config(None)),
        ),
    ]);
    insta::assert_snapshot!(report(f, text));
}

#[test]
fn the_pods_architecture_picks_the_image() {
    let text = "apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  nodeSelector:
    kubernetes.io/arch: arm64
  containers:
    - name: app
      image: registry.example/app:1.0
      resources:
        limits: {cpu: 100m, memory: 64Mi}
";
    let mut arm = config(Some("1000"));
    arm.platform = "linux/arm64".into();
    let f = facts(vec![
        (
            "registry.example/app:1.0",
            "linux/amd64",
            Inspection::Read(config(None)),
        ),
        (
            "registry.example/app:1.0",
            "linux/arm64",
            Inspection::Read(arm),
        ),
    ]);
    insta::assert_snapshot!(report(f, text));
}

#[test]
fn the_manifests_run_as_user_wins() {
    let text = "apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  securityContext:
    runAsUser: 2000
  containers:
    - name: app
      image: registry.example/app:1.0
      resources:
        limits: {cpu: 100m, memory: 64Mi}
";
    let f = facts(vec![(
        "registry.example/app:1.0",
        "linux/amd64",
        Inspection::Read(config(None)),
    )]);
    insta::assert_snapshot!(report(f, text));
}

#[test]
fn lint_json_carries_an_image_per_container() {
    let registry = Registry::builtin().unwrap();
    let mut c = config(Some("nginx"));
    c.names = Some(NamedIds {
        uid: Some(101),
        gid: Some(101),
        problem: None,
    });
    c.volumes = vec!["/var/cache/nginx".into()];
    c.exposed_ports = vec![ExposedPort {
        port: 80,
        protocol: "tcp".into(),
    }];
    c.working_dir = Some("/usr/share/nginx".into());
    let f = facts(vec![("nginx:1.27", "linux/amd64", Inspection::Read(c))]);
    let linter = Linter::new(&registry, Settings::default()).with_facts(f);
    let report = linter.lint_files(&[SourceFile::new("web.yaml", deployment("nginx:1.27"))]);
    let json: serde_json::Value =
        serde_json::from_str(&kubeharden_core::render::json(&report)).unwrap();
    insta::assert_snapshot!(serde_json::to_string_pretty(&json["containers"]).unwrap());
    // Without inspection the JSON is what it always was.
    let plain = Linter::new(&registry, Settings::default())
        .lint_files(&[SourceFile::new("web.yaml", deployment("nginx:1.27"))]);
    let json: serde_json::Value =
        serde_json::from_str(&kubeharden_core::render::json(&plain)).unwrap();
    assert!(json.get("containers").is_none());
}

#[test]
fn mounts_join_flow_and_empty_lists() {
    let text = "apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
    - {name: app, image: 'registry.example/app:1.0', resources: {limits: {cpu: 1, memory: 1Gi}}, volumeMounts: []}
    - name: other
      image: registry.example/app:1.0
      resources: {limits: {cpu: 1, memory: 1Gi}}
      volumeMounts:
  volumes: []
";
    let mut c = config(Some("1000"));
    c.volumes = vec!["/cache".into()];
    let f = facts(vec![(
        "registry.example/app:1.0",
        "linux/amd64",
        Inspection::Read(c),
    )]);
    insta::assert_snapshot!(report(f, text));
}

/// The review comment of a new file holding `text`, with these facts.
fn review_comment(facts: Facts, text: &str) -> String {
    let registry = Registry::builtin().unwrap();
    let linter = Linter::new(&registry, Settings::default()).with_facts(facts);
    let lines = text.lines().count();
    let file = kubeharden_core::change::PrFile::new(
        "web.yaml",
        text.to_string(),
        Some(format!("@@ -0,0 +1,{lines} @@\n")),
    );
    let review = kubeharden_core::review::plan(&linter, &[file]);
    assert_eq!(review.comments.len(), 1, "{:#?}", review.comments);
    review.comments[0].body.clone()
}

#[test]
fn review_comments_say_what_the_image_allowed() {
    let text = deployment("registry.example/app:1.0");
    let numeric = facts(vec![(
        "registry.example/app:1.0",
        "linux/amd64",
        Inspection::Read(config(Some("1000"))),
    )]);
    let body = review_comment(numeric, &text);
    // runAsNonRoot is in the suggestion and is not among the warnings: it is safe.
    assert!(body.contains("runAsNonRoot: true\n"), "{body}");
    let warning = body.split("> [!WARNING]").nth(1).unwrap_or_default();
    let warning = warning.split("\n\n").next().unwrap_or_default();
    assert!(!warning.contains("run-as-root-allowed"), "{body}");
    assert!(
        body.contains("the image runs as UID 1000, so `runAsNonRoot: true` is safe"),
        "{body}"
    );

    let root = facts(vec![(
        "registry.example/app:1.0",
        "linux/amd64",
        Inspection::Read(config(None)),
    )]);
    let body = review_comment(root, &text);
    // No runAsNonRoot without the UID that keeps the pod starting, and the reason given.
    assert!(body.contains("runAsUser: 65532"), "{body}");
    assert!(
        body.contains("the image sets no USER, so it runs as root"),
        "{body}"
    );
    let unresolved = {
        let mut c = config(Some("app"));
        c.names = Some(NamedIds {
            uid: None,
            gid: None,
            problem: Some("its /etc/passwd has no user `app`".into()),
        });
        facts(vec![(
            "registry.example/app:1.0",
            "linux/amd64",
            Inspection::Read(c),
        )])
    };
    let body = review_comment(unresolved, &text);
    let suggestion = &body[body.find("```suggestion").unwrap()..];
    assert!(!suggestion.contains("runAsNonRoot"), "{body}");
    assert!(body.contains("cannot verify as non-root"), "{body}");
}
