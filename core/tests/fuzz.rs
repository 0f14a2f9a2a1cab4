//! The fuzz target: `lint` and `fix` on mutated real manifests, as a seeded property test that
//! runs in `cargo test` (issue #13, "How it is checked"). The seeds are the files of
//! `KUBEHARDEN_CORPUS` when it is set, else the fixtures and examples bundled here. Each case
//! takes one seed and applies a few mutations: byte flips (so also bytes that are not UTF-8),
//! line deletion, duplication and swaps, indentation changes, anchors and aliases, document
//! separators, tabs and truncation. Whatever comes out:
//! - nothing panics, and the JSON report parses;
//! - `fix` fails only on a file that is not UTF-8 (which it must leave alone);
//! - the fixed text parses with as many documents, and no more errors, as the input;
//! - fixing the fixed text changes nothing;
//! - no byte is lost: every line that loses bytes is a line the first pass edited or a finding
//!   of the input pointed at (or the key line just above one, which goes with its last item);
//! - the fix adds no combination Kubernetes refuses.
//!
//! `KUBEHARDEN_FUZZ_CASES` sets the number of cases (default 256), `KUBEHARDEN_FUZZ_SEED` the
//! seed (a failure prints the seed and the mutated input).

mod common;

use std::path::PathBuf;
use std::time::Instant;

use kubeharden_core::fix::{FixError, fix_file};
use kubeharden_core::lint::{Linter, Settings};
use kubeharden_core::rules::{Applicability, Profile, Registry};
use kubeharden_core::source::SourceFile;
use kubeharden_core::yaml::{self, Limits};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

/// Larger files are left out so that a case stays fast; the corpus has plenty below this.
const MAX_SEED_BYTES: usize = 24 * 1024;

fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<PathBuf> = Vec::new();
    match common::corpus_dir().filter(|d| d.is_dir()) {
        Some(dir) => common::yaml_files(&dir, &mut files),
        None => {
            let root = common::repo_root();
            common::yaml_files(&root.join("core/tests/fixtures"), &mut files);
            common::yaml_files(&root.join("examples"), &mut files);
        }
    }
    files.sort();
    files
        .into_iter()
        .filter_map(|p| {
            let bytes = std::fs::read(&p).ok()?;
            (!bytes.is_empty() && bytes.len() <= MAX_SEED_BYTES)
                .then(|| (p.display().to_string(), bytes))
        })
        .collect()
}

#[derive(Debug, Clone)]
enum Mutation {
    FlipByte(usize, u8),
    DeleteLine(usize),
    DuplicateLine(usize),
    SwapLines(usize),
    /// Indent a line by this many more spaces, or fewer (negative).
    Indent(usize, i8),
    /// `key: value` → `key: &fz value`
    Anchor(usize),
    /// `key: value` → `key: *fz`
    Alias(usize),
    DocumentSeparator(usize),
    Tab(usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = any::<usize>();
    prop_oneof![
        3 => (at, 1u8..=255).prop_map(|(i, x)| Mutation::FlipByte(i, x)),
        2 => at.prop_map(Mutation::DeleteLine),
        2 => at.prop_map(Mutation::DuplicateLine),
        1 => at.prop_map(Mutation::SwapLines),
        2 => (at, prop_oneof![Just(-2i8), Just(-1), Just(1), Just(2), Just(4)])
            .prop_map(|(i, d)| Mutation::Indent(i, d)),
        2 => at.prop_map(Mutation::Anchor),
        2 => at.prop_map(Mutation::Alias),
        1 => at.prop_map(Mutation::DocumentSeparator),
        1 => at.prop_map(Mutation::Tab),
        1 => at.prop_map(Mutation::Truncate),
    ]
}

fn split_lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

/// `key: value` on a line: the offset just after `: `.
fn value_start(line: &[u8]) -> Option<usize> {
    line.windows(2).position(|w| w == b": ").map(|i| i + 2)
}

fn mutate(bytes: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut bytes = bytes.to_vec();
    for m in mutations {
        if bytes.is_empty() {
            break;
        }
        let mut lines = split_lines(&bytes);
        let n = lines.len();
        match *m {
            Mutation::FlipByte(i, x) => {
                let i = i % bytes.len();
                bytes[i] ^= x;
                continue;
            }
            Mutation::Truncate(i) => {
                bytes.truncate(i % bytes.len());
                continue;
            }
            Mutation::DeleteLine(i) => {
                lines.remove(i % n);
            }
            Mutation::DuplicateLine(i) => {
                let line = lines[i % n].clone();
                lines.insert(i % n, line);
            }
            Mutation::SwapLines(i) if n > 1 => lines.swap(i % (n - 1), i % (n - 1) + 1),
            Mutation::SwapLines(_) => {}
            Mutation::Indent(i, d) => {
                let line = &mut lines[i % n];
                if d > 0 {
                    line.splice(0..0, std::iter::repeat_n(b' ', d as usize));
                } else {
                    let spaces = line.iter().take_while(|&&b| b == b' ').count();
                    line.drain(..spaces.min(d.unsigned_abs() as usize));
                }
            }
            Mutation::Anchor(i) => {
                let line = &mut lines[i % n];
                if let Some(at) = value_start(line) {
                    line.splice(at..at, b"&fz ".iter().copied());
                }
            }
            Mutation::Alias(i) => {
                let line = &mut lines[i % n];
                if let Some(at) = value_start(line) {
                    let end = line.len() - line.ends_with(b"\n") as usize;
                    line.splice(at..end, b"*fz".iter().copied());
                }
            }
            Mutation::DocumentSeparator(i) => lines.insert(i % n, b"---\n".to_vec()),
            Mutation::Tab(i) => lines[i % n].insert(0, b'\t'),
        }
        bytes = lines.concat();
    }
    bytes
}

/// Lines (0-based) of `old` that lose bytes on the way to `new`: a line diff, then, inside
/// each replaced hunk, a character diff, so that a line that only gained text (a key added to
/// a flow mapping) does not count.
fn lines_losing_bytes(old: &str, new: &str) -> Vec<usize> {
    let diff = similar::TextDiff::from_lines(old, new);
    let old_lines: Vec<&str> = old.split_inclusive('\n').collect();
    let new_lines: Vec<&str> = new.split_inclusive('\n').collect();
    let mut out = Vec::new();
    for op in diff.ops() {
        match *op {
            similar::DiffOp::Delete {
                old_index, old_len, ..
            } => out.extend(old_index..old_index + old_len),
            similar::DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => {
                let a: String = old_lines[old_index..old_index + old_len].concat();
                let b: String = new_lines[new_index..new_index + new_len].concat();
                let chars = similar::TextDiff::from_chars(a.as_str(), b.as_str());
                // The line of each char of the hunk's old text.
                let mut line_of = Vec::new();
                for (i, l) in old_lines[old_index..old_index + old_len].iter().enumerate() {
                    line_of.extend(std::iter::repeat_n(old_index + i, l.chars().count()));
                }
                for op in chars.ops() {
                    if let similar::DiffOp::Delete {
                        old_index, old_len, ..
                    }
                    | similar::DiffOp::Replace {
                        old_index, old_len, ..
                    } = *op
                    {
                        out.extend(line_of[old_index..old_index + old_len].iter().copied());
                    }
                }
            }
            _ => {}
        }
    }
    out.dedup();
    out
}

fn one_case(linter: &Linter<'_>, name: &str, bytes: Vec<u8>) -> Result<(), TestCaseError> {
    let file = SourceFile::from_bytes(name, bytes);
    let report = linter.lint_files(std::slice::from_ref(&file));
    let json = kubeharden_core::render::json(&report);
    prop_assert!(
        serde_json::from_str::<serde_json::Value>(&json).is_ok(),
        "the JSON report does not parse:\n{json}"
    );
    let result = match fix_file(linter, &file, Applicability::Unsafe) {
        Ok(r) => r,
        Err(FixError::NotUtf8 { .. }) if !file.is_whole() => return Ok(()),
        Err(e) => return Err(TestCaseError::fail(format!("fix failed: {e}"))),
    };
    let (text, fixed) = (&file.text, &result.fixed);
    if fixed == text {
        return Ok(());
    }
    let before = yaml::parse(text, &Limits::default());
    let after = yaml::parse(fixed, &Limits::default());
    prop_assert_eq!(
        before.documents.len(),
        after.documents.len(),
        "the fix changed the number of documents:\n{}",
        fixed
    );
    prop_assert!(
        after.errors.len() <= before.errors.len(),
        "the fix added parse errors {:?}:\n{}",
        after.errors,
        fixed
    );
    let again = fix_file(
        linter,
        &SourceFile::new(name, fixed.clone()),
        Applicability::Unsafe,
    )
    .map_err(|e| TestCaseError::fail(format!("fixing the fixed text failed: {e}")))?;
    prop_assert!(
        again.fixed == *fixed,
        "a second fix changed the text:\n{}",
        again.fixed
    );
    // Every deleted or changed line was pointed at by a finding (or is the key line above
    // one: `add:` goes with its last item, `capabilities:` becomes `capabilities: {}`).
    let lines = kubeharden_core::source::LineIndex::new(text);
    // The first pass's edits are known in the input's offsets (`origins`); a later pass's are
    // not, so for those the findings' own lines stand in.
    let span = |r: kubeharden_core::source::TextRange| {
        (
            lines.line_of(r.start()).saturating_sub(1),
            lines.line_of(r.end()),
        )
    };
    let pointed: Vec<(usize, usize)> = report
        .findings
        .iter()
        .filter(|f| f.fixable)
        .map(|f| span(f.range))
        .chain(result.origins.iter().map(|(r, _)| span(*r)))
        .collect();
    for line in lines_losing_bytes(text, fixed) {
        prop_assert!(
            pointed.iter().any(|&(a, b)| a <= line && line <= b),
            "line {} lost bytes though no finding points at it: {:?}\n--- fixed ---\n{}",
            line + 1,
            text.lines().nth(line),
            fixed
        );
    }
    let refused = common::new_refusals(text, fixed);
    prop_assert!(
        refused.is_empty(),
        "the fix made what Kubernetes refuses: {refused:?}"
    );
    Ok(())
}

#[test]
fn lint_and_fix_survive_mutated_manifests() {
    let seeds = seeds();
    assert!(!seeds.is_empty(), "no seed files");
    let cases: u32 = std::env::var("KUBEHARDEN_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    let seed: u64 = std::env::var("KUBEHARDEN_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(13);
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 256,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &key));
    let registry = Registry::builtin().unwrap();
    let linters: Vec<Linter<'_>> = [Profile::Nsa, Profile::Baseline]
        .into_iter()
        .map(|profile| {
            Linter::new(
                &registry,
                Settings {
                    profile,
                    ..Settings::default()
                },
            )
        })
        .collect();
    let strategy = (
        0..seeds.len(),
        proptest::collection::vec(mutation(), 1..4),
        0..linters.len(),
    );
    let started = Instant::now();
    let outcome = runner.run(&strategy, |(seed_index, mutations, linter)| {
        let (name, bytes) = &seeds[seed_index];
        let mutated = mutate(bytes, &mutations);
        one_case(&linters[linter], name, mutated.clone()).map_err(|e| {
            TestCaseError::fail(format!(
                "{e}\n--- seed {name}, mutations {mutations:?} ---\n{}",
                String::from_utf8_lossy(&mutated)
            ))
        })
    });
    eprintln!(
        "fuzz: {cases} cases over {} seed files (seed {seed}) in {:.1} s",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
    if let Err(e) = outcome {
        panic!("{e}");
    }
}
