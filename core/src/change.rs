//! A pull request's change, as review planning and commands both see it: the files it adds or
//! changes at its head, the hunks GitHub shows for each, the lines it adds, and which paths
//! the app may write.

use std::collections::BTreeSet;

use crate::source::{NotUtf8, SourceFile};

/// A file the pull request adds or changes, at its head.
#[derive(Debug, Clone)]
pub struct PrFile {
    pub path: String,
    pub text: String,
    /// The unified-diff hunks GitHub shows for it; `None` when GitHub sends none (a very large
    /// diff), in which case no line can carry a comment.
    pub patch: Option<String>,
    /// Set when the bytes were not UTF-8 (see [`SourceFile::from_bytes`]): the file is linted,
    /// never rewritten.
    pub not_utf8: Option<NotUtf8>,
}

/// New-side lines `start..=end` that one hunk shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hunk {
    pub start: usize,
    pub end: usize,
}

/// New-side lines a unified diff adds (`+` lines), 1-based.
pub fn added_lines(patch: &str) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    let mut line = 0usize;
    for l in patch.lines() {
        if let Some(header) = l.strip_prefix("@@ ") {
            line = header
                .split_whitespace()
                .find_map(|p| p.strip_prefix('+'))
                .and_then(|p| p.split(',').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            continue;
        }
        match l.as_bytes().first() {
            Some(b'+') => {
                out.insert(line);
                line += 1;
            }
            Some(b'-') | Some(b'\\') => {}
            _ => line += 1,
        }
    }
    out
}

/// Hunks of a unified diff, from their headers. A header may carry function context after the
/// second `@@`; a count may be omitted (it is then 1).
pub fn parse_hunks(patch: &str) -> Vec<Hunk> {
    let mut hunks = Vec::new();
    for line in patch.lines() {
        let Some(rest) = line.strip_prefix("@@ ") else {
            continue;
        };
        let Some(header) = rest.split(" @@").next() else {
            continue;
        };
        let Some(new) = header.split_whitespace().find_map(|p| p.strip_prefix('+')) else {
            continue;
        };
        let mut parts = new.split(',');
        let start: usize = match parts.next().and_then(|s| s.parse().ok()) {
            Some(s) => s,
            None => continue,
        };
        let count: usize = parts.next().and_then(|s| s.parse().ok()).unwrap_or(1);
        if count > 0 {
            hunks.push(Hunk {
                start,
                end: start + count - 1,
            });
        }
    }
    hunks
}

impl PrFile {
    pub fn new(path: impl Into<String>, text: impl Into<String>, patch: Option<String>) -> Self {
        Self {
            path: path.into(),
            text: text.into(),
            patch,
            not_utf8: None,
        }
    }

    /// A file from the bytes GitHub or git holds for it.
    pub fn from_bytes(path: impl Into<String>, bytes: Vec<u8>, patch: Option<String>) -> Self {
        let file = SourceFile::from_bytes(path, bytes);
        Self {
            path: file.path,
            text: file.text,
            patch,
            not_utf8: file.not_utf8,
        }
    }

    pub fn source(&self) -> SourceFile {
        let mut file = SourceFile::new(self.path.clone(), self.text.clone());
        file.not_utf8 = self.not_utf8.clone();
        file
    }
}

/// Whether the app may write a file in a commit. Workflows are never touched: a bot that
/// edits CI definitions is a privilege escalation path, and GitHub refuses such pushes
/// without the `workflows` permission anyway.
pub fn may_touch(path: &str) -> bool {
    !(path.starts_with(".github/workflows/") || path == ".github/workflows")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_lines_are_the_plus_lines() {
        let patch = "@@ -1,3 +1,4 @@ kind: Pod\n a\n-b\n+B\n+C\n c\n\\ No newline at end of file\n@@ -10 +11 @@\n+z";
        assert_eq!(
            added_lines(patch).into_iter().collect::<Vec<_>>(),
            [2, 3, 11]
        );
    }

    #[test]
    fn hunk_headers_with_function_context_and_omitted_counts() {
        let patch = "@@ -1,3 +1,4 @@ kind: Deployment\n a\n+b\n c\n@@ -10 +11 @@\n-x\n+y\n@@ -20,2 +22,0 @@\n-gone\n-gone\n";
        assert_eq!(
            parse_hunks(patch),
            [Hunk { start: 1, end: 4 }, Hunk { start: 11, end: 11 }]
        );
    }

    #[test]
    fn workflows_are_off_limits() {
        assert!(!may_touch(".github/workflows/ci.yaml"));
        assert!(may_touch(".github/kubeharden.yaml"));
        assert!(may_touch("deploy/workflows/x.yaml"));
    }
}
