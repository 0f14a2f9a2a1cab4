//! README.md keeps its promises: every command it shows runs, and the example review comment is
//! what the app really posts for the manifest shown beside it.

use std::path::Path;
use std::process::{Command, Stdio};

use kubeharden_core::change::PrFile;
use kubeharden_core::lint::{Linter, Settings};
use kubeharden_core::review::plan;
use kubeharden_core::rules::Registry;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn readme() -> String {
    std::fs::read_to_string(root().join("README.md")).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// The commands of the README's `sh` blocks, as argument lists for the binary.
fn commands(readme: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut in_sh = false;
    for line in readme.lines() {
        if line.starts_with("```") {
            in_sh = line == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        let command = line.split(" #").next().unwrap().trim();
        let args = if let Some(rest) = command.strip_prefix("cargo run --release -- ") {
            rest
        } else if let Some(rest) = command.strip_prefix("kubeharden ") {
            rest
        } else if command.starts_with("cargo test") {
            // The test suite itself, which is running this; CI must run the same command.
            let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
            assert!(
                ci.lines().any(|l| l.trim().starts_with(command)),
                ".ci/run does not run the README's test command `{command}`"
            );
            continue;
        } else if command.is_empty() {
            continue;
        } else {
            panic!("README shows a command this test does not know how to run: {command}");
        };
        out.push((
            command.to_string(),
            args.split_whitespace().map(str::to_string).collect(),
        ));
    }
    out
}

#[test]
fn every_command_in_the_readme_runs() {
    let commands = commands(&readme());
    assert!(commands.len() >= 10, "{commands:?}");
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&root().join("examples"), &dir.path().join("examples"));
    copy_dir(&root().join("deploy"), &dir.path().join("deploy"));
    let stdin = std::fs::read(root().join("examples/web-deployment.yaml")).unwrap();
    for (shown, args) in commands {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kubeharden"))
            .args(&args)
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let mut input = child.stdin.take().unwrap();
            if args.iter().any(|a| a == "-") {
                input.write_all(&stdin).unwrap();
            }
        }
        let output = child.wait_with_output().unwrap();
        // 0: clean; 1: findings, which the examples have. 2 is a usage or I/O error.
        assert!(
            matches!(output.status.code(), Some(0 | 1)),
            "`{shown}` failed with {:?}:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            !output.stdout.is_empty() || !output.stderr.is_empty(),
            "`{shown}` printed nothing"
        );
    }
}

const START: &str = "<!-- example-review:start -->\n";
const END: &str = "<!-- example-review:end -->";

/// The README's example comment, from the planner, as a quote.
fn example_comment(readme: &str) -> String {
    // The manifest shown right before the example, in its `yaml` block.
    let before = &readme[..readme
        .find(START)
        .expect("the README has an example review")];
    let yaml_at = before.rfind("```yaml\n").unwrap() + "```yaml\n".len();
    let yaml = &before[yaml_at..yaml_at + before[yaml_at..].find("```").unwrap()];
    let registry = Registry::builtin().unwrap();
    let linter = Linter::new(&registry, Settings::default());
    let lines = yaml.lines().count();
    let file = PrFile::new(
        "deploy/storefront.yaml",
        yaml.to_string(),
        Some(format!("@@ -0,0 +1,{lines} @@\n")),
    );
    let review = plan(&linter, &[file]);
    let body = &review.comments.first().expect("a suggestion").body;
    let body = &body[..body.find("<!-- kubeharden:fingerprint").unwrap()];
    let mut quoted = String::new();
    for line in body.trim_end().lines() {
        quoted.push_str(if line.is_empty() { ">" } else { "> " });
        quoted.push_str(line);
        quoted.push('\n');
    }
    quoted
}

#[test]
fn the_example_review_comment_is_what_the_app_posts() {
    let readme = readme();
    let expected = example_comment(&readme);
    let start = readme.find(START).unwrap() + START.len();
    let end = readme.find(END).unwrap();
    if readme[start..end] != expected {
        if std::env::var_os("KUBEHARDEN_BLESS_README").is_some() {
            let updated = format!("{}{expected}{}", &readme[..start], &readme[end..]);
            std::fs::write(root().join("README.md"), updated).unwrap();
            return;
        }
        panic!(
            "README.md's example review is stale: run `KUBEHARDEN_BLESS_README=1 cargo test --all-features --test cli readme`.\nExpected:\n{expected}"
        );
    }
}

#[test]
fn the_app_manifest_asks_for_the_events_and_the_least_permissions() {
    let text = std::fs::read_to_string(root().join("app-manifest/kubeharden.json")).unwrap();
    let m: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(m["public"], false);
    assert_eq!(
        m["default_events"],
        serde_json::json!(["pull_request", "check_run", "issue_comment"])
    );
    let permissions = m["default_permissions"].as_object().unwrap();
    let mut names: Vec<&str> = permissions.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["checks", "contents", "issues", "metadata", "pull_requests"]
    );
    assert_eq!(m["default_permissions"]["metadata"], "read");
    assert!(
        m["hook_attributes"]["url"]
            .as_str()
            .unwrap()
            .ends_with("/api/github/webhooks")
    );
    // The README justifies every permission it asks for.
    let readme = std::fs::read_to_string(root().join("app-manifest/README.md")).unwrap();
    for name in names {
        assert!(
            readme.contains(&format!("| `{name}` |")),
            "{name} is not explained"
        );
    }
}
