//! Kinds that run pods, extended without Rust: from a `workloads/` folder of `--rules DIR` and
//! from the repository configuration, linted and fixed like the built-in ones.

use super::{kubeharden, stdout};

const RUNNER: &str = "apiVersion: batch.acme.io/v1\nkind: Runner\nmetadata:\n  name: nightly\n  namespace: ci\nspec:\n  pools:\n  - name: small\n    pod:\n      spec:\n        containers:\n        - name: job\n          image: registry.example/job:1.0\n          securityContext:\n            privileged: true\n";

const ENTRY: &str = "workloads:\n- groups: [batch.acme.io]\n  kinds: [Runner]\n  pods:\n  - template: spec.pools[].pod\n";

fn privileged_line(text: &str) -> Option<&str> {
    text.lines().find(|l| l.contains("[privileged-container]"))
}

#[test]
fn a_rules_directory_and_the_configuration_add_kinds_that_run_pods() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("runner.yaml"), RUNNER).unwrap();
    // Unknown, and not at `spec.template`: nothing to lint.
    let out = kubeharden(
        &["lint", "--profile", "baseline", "runner.yaml"],
        dir.path(),
    );
    assert_eq!(privileged_line(&stdout(&out)), None, "{}", stdout(&out));
    assert!(stdout(&out).contains("0 workloads"), "{}", stdout(&out));

    let rules = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(rules.path().join("workloads")).unwrap();
    std::fs::write(rules.path().join("workloads/acme.yaml"), ENTRY).unwrap();
    let rules_dir = rules.path().to_str().unwrap();
    let out = kubeharden(&["rules", "--workloads", "--rules", rules_dir], dir.path());
    let listed = stdout(&out);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("Runner.batch.acme.io ") && l.ends_with("workloads/acme.yaml")),
        "{listed}"
    );
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("RayCluster.ray.io ")
                && l.ends_with("rules/workloads/kuberay.yaml")),
        "{listed}"
    );
    let out = kubeharden(
        &[
            "lint",
            "--profile",
            "baseline",
            "--rules",
            rules_dir,
            "runner.yaml",
        ],
        dir.path(),
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert_eq!(
        privileged_line(&text),
        Some(
            "runner.yaml:15:13: error [privileged-container] privileged: true gives the container every capability and access to all host devices (Runner ci/nightly, pod spec.pools[0].pod.spec, container \"job\")"
        ),
        "{text}"
    );

    // The same entry from the repository configuration, and `fix` works there too.
    std::fs::create_dir_all(dir.path().join(".github")).unwrap();
    std::fs::write(dir.path().join(".git"), "").unwrap();
    std::fs::write(dir.path().join(".github/kubeharden.yaml"), ENTRY).unwrap();
    let out = kubeharden(
        &["lint", "--profile", "baseline", "runner.yaml"],
        dir.path(),
    );
    assert!(privileged_line(&stdout(&out)).is_some(), "{}", stdout(&out));
    let out = kubeharden(&["fix", "--write", "runner.yaml"], dir.path());
    assert!(
        out.status.code().is_some_and(|c| c < 2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fixed = std::fs::read_to_string(dir.path().join("runner.yaml")).unwrap();
    // Hoisted to the pod found through the entry, not guessed from the container's place.
    assert!(
        fixed.ends_with("        securityContext:\n          seccompProfile:\n            type: RuntimeDefault\n"),
        "{fixed}"
    );
    assert!(
        fixed.contains("            capabilities:\n              drop:\n              - ALL\n"),
        "{fixed}"
    );
}

#[test]
fn a_bad_workload_entry_names_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("runner.yaml"), RUNNER).unwrap();
    std::fs::create_dir_all(dir.path().join(".github")).unwrap();
    std::fs::write(dir.path().join(".git"), "").unwrap();
    std::fs::write(
        dir.path().join(".github/kubeharden.yaml"),
        "profile: baseline\nworkloads:\n- groups: [batch.acme.io]\n  kinds: [Runner]\n  pods:\n  - template: spec.pools[].pod\n    spec: spec.pools[].pod.spec\n",
    )
    .unwrap();
    let out = kubeharden(&["lint", "runner.yaml"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(".github/kubeharden.yaml:3:3: `workloads[0]`: `pods[0]`: a pod location has exactly one of `template`, `spec`, `at` or `object`"),
        "{err}"
    );

    let rules = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(rules.path().join("workloads")).unwrap();
    std::fs::write(
        rules.path().join("workloads/acme.yaml"),
        "workloads:\n- groups: [batch.acme.io]\n  kinds: [Runner]\n  pods:\n  - template: spec.pools[0].pod\n",
    )
    .unwrap();
    let out = kubeharden(
        &["rules", "--rules", rules.path().to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("workloads/acme.yaml:5:15: `workloads[0].pods[0].template`: `spec.pools[0].pod` is not a location path"),
        "{err}"
    );
}
