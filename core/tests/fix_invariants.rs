//! The promises of `kubeharden fix`, checked on every fixture, every example and (opt-in,
//! `KUBEHARDEN_CORPUS`) every file of the real-world corpus:
//! the fixed text parses; the same documents come in the same order; every comment line
//! survives; nothing changes but the fields the fixes set out to change; lint of the fixed text
//! no longer reports what the fixes claimed; fixing twice changes nothing; the suggestions
//! reproduce the fixed text.

mod common;

use std::path::{Path, PathBuf};

use common::{check, yaml_files};
use kubeharden_core::lint::{Linter, Settings};
use kubeharden_core::rules::{Profile, Registry};

fn run_over(files: &[PathBuf]) -> (usize, usize) {
    let registry = Registry::builtin().unwrap();
    let mut problems = Vec::new();
    let mut changed = 0;
    for path in files {
        let text = std::fs::read_to_string(path).unwrap();
        // Each profile plans a different set of fixes.
        for profile in [Profile::Nsa, Profile::Restricted, Profile::Baseline] {
            let settings = Settings {
                profile,
                ..Settings::default()
            };
            let linter = Linter::new(&registry, settings);
            match check(&linter, &path.display().to_string(), &text) {
                Ok(r) if r.fixed != text => changed += 1,
                Ok(_) => {}
                Err(e) => problems.push(e),
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n\n")
    );
    (files.len(), changed)
}

#[test]
fn fixtures_and_examples_keep_every_promise() {
    let mut files = Vec::new();
    yaml_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
        &mut files,
    );
    yaml_files(&common::repo_root().join("examples"), &mut files);
    files.sort();
    let (total, changed) = run_over(&files);
    assert!(
        changed > 30,
        "only {changed} of {total} files changed: the fixer is not reaching them"
    );
}

#[test]
fn the_corpus_keeps_every_promise() {
    let Some(dir) = common::corpus_dir() else {
        eprintln!("KUBEHARDEN_CORPUS not set; corpus fix invariants skipped");
        return;
    };
    let mut files = Vec::new();
    yaml_files(&dir, &mut files);
    files.sort();
    let (total, changed) = run_over(&files);
    eprintln!("corpus: {changed} of {total} files fixed");
    assert!(changed > 300);
}
