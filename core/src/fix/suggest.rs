//! From fixed text to GitHub suggestions: each change group of the line diff becomes a
//! suggestion that replaces whole lines of the original; an insertion is anchored on the line
//! before it (or after it, at the top of a file) and repeats that line.

use similar::{DiffOp, TextDiff};

use crate::lint::Finding;
use crate::parsed::Parsed;
use crate::source::TextRange;

/// Replace the original's lines `start_line..=end_line` (1-based) with `replacement`, which
/// keeps the file's own line endings (the last line of a file may have none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suggestion {
    pub start_line: usize,
    pub end_line: usize,
    pub replacement: String,
}

impl Suggestion {
    /// The Markdown block GitHub turns into a "Commit suggestion" button. The fence is longer
    /// than any run of backticks in the content.
    pub fn markdown(&self) -> String {
        let body = self.replacement.replace("\r\n", "\n");
        let body = body.strip_suffix('\n').unwrap_or(&body);
        crate::markdown::fenced(body, "suggestion")
    }
}

/// Lines with their endings.
fn lines(text: &str) -> Vec<&str> {
    text.split_inclusive('\n').collect()
}

/// Suggestions that turn `original` into `fixed`, in order and never overlapping.
pub fn suggestions(original: &str, fixed: &str) -> Vec<Suggestion> {
    let diff = TextDiff::configure()
        .algorithm(similar::Algorithm::Myers)
        .diff_lines(original, fixed);
    let ops = diff.ops();
    let old = lines(original);
    // Old-side line ranges to replace, as half-open 0-based ranges.
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for op in ops {
        let (start, len) = match *op {
            DiffOp::Equal { .. } => continue,
            DiffOp::Delete {
                old_index, old_len, ..
            } => (old_index, old_len),
            DiffOp::Insert { old_index, .. } => (old_index, 0),
            DiffOp::Replace {
                old_index, old_len, ..
            } => (old_index, old_len),
        };
        let range = if len > 0 {
            (start, start + len)
        } else if start > 0 {
            (start - 1, start)
        } else if !old.is_empty() {
            (0, 1)
        } else {
            (0, 0)
        };
        match ranges.last_mut() {
            // Touching ranges merge: two suggestions may not share a line, and a line inserted
            // between two adjacent ranges must belong to exactly one of them.
            Some(last) if range.0 <= last.1 => last.1 = last.1.max(range.1),
            _ => ranges.push(range),
        }
    }
    let new = lines(fixed);
    ranges
        .into_iter()
        .map(|(a, b)| {
            let na = map_start(ops, a);
            let nb = map_end(ops, b);
            Suggestion {
                start_line: a + 1,
                end_line: b.max(a + 1),
                replacement: new[na.min(new.len())..nb.min(new.len())].concat(),
            }
        })
        .collect()
}

/// New-side line for an old-side range start: before anything inserted there.
fn map_start(ops: &[DiffOp], old_line: usize) -> usize {
    for op in ops {
        if let DiffOp::Equal {
            old_index,
            new_index,
            len,
        } = *op
            && old_index <= old_line
            && old_line < old_index + len
        {
            return new_index + (old_line - old_index);
        }
        let (old_index, new_index) = (op.old_range().start, op.new_range().start);
        if old_index >= old_line {
            return new_index;
        }
    }
    ops.last().map_or(0, |op| op.new_range().end)
}

/// New-side line for an old-side range end: after anything inserted there.
fn map_end(ops: &[DiffOp], old_line: usize) -> usize {
    for op in ops.iter().rev() {
        if let DiffOp::Equal {
            old_index,
            new_index,
            len,
        } = *op
            && old_index < old_line
            && old_line <= old_index + len
        {
            return new_index + (old_line - old_index);
        }
        let (old_end, new_end) = (op.old_range().end, op.new_range().end);
        if old_end <= old_line {
            return new_end;
        }
    }
    0
}

/// A suggestion and the findings of the original text it resolves, for a review comment
/// that names them.
#[derive(Debug, Clone)]
pub struct Resolving {
    pub suggestion: Suggestion,
    /// Indices into the `fixed` findings passed to [`with_findings`].
    pub findings: Vec<usize>,
}

/// Pair each suggestion with the findings it resolves. A finding belongs to the suggestions
/// inside the node its fix targeted (a container, a pod spec); a fix moved to the pod (a
/// hoisted `runAsNonRoot`) lands outside the container, so then the closest suggestion in the
/// same document takes it.
pub fn with_findings(
    parsed: &Parsed,
    fixed_text: &str,
    fixed: &[Finding],
    origins: &[(TextRange, Finding)],
) -> Vec<Resolving> {
    let original = parsed.file();
    let mut out: Vec<Resolving> = suggestions(&original.text, fixed_text)
        .into_iter()
        .map(|suggestion| Resolving {
            suggestion,
            findings: Vec::new(),
        })
        .collect();
    if out.is_empty() {
        return out;
    }
    let stream = parsed.stream();
    let line = |offset: usize| original.line_col(offset).line;
    for (index, f) in fixed.iter().enumerate() {
        // Where the first pass edited for it, when it did: an insertion at a line start is
        // anchored on the line before.
        let edited = origins
            .iter()
            .filter(|(_, o)| super::same_finding(o, f))
            .find_map(|(r, _)| {
                let at = original.line_col(r.start());
                let anchor = if r.is_empty() && at.column == 1 && at.line > 1 {
                    at.line - 1
                } else {
                    at.line
                };
                out.iter().position(|s| {
                    s.suggestion.start_line <= anchor && anchor <= s.suggestion.end_line
                })
            });
        if let Some(i) = edited {
            out[i].findings.push(index);
            continue;
        }
        let doc = stream.documents.get(f.document);
        let base = f
            .hit
            .as_ref()
            .filter(|h| h.stamp == parsed.stamp())
            .zip(doc)
            .map(|(h, d)| d.node(h.target.base).range);
        let within = |r: TextRange| -> Option<usize> {
            let (a, b) = (line(r.start()), line(r.end()));
            out.iter()
                .position(|s| s.suggestion.start_line <= b && a <= s.suggestion.end_line)
        };
        let found = base.and_then(within).or_else(|| {
            let doc = doc?;
            let (a, b) = (line(doc.range.start()), line(doc.range.end()));
            let target = f.start.line;
            out.iter()
                .enumerate()
                .filter(|(_, s)| s.suggestion.start_line <= b + 1 && a <= s.suggestion.end_line)
                .min_by_key(|(_, s)| s.suggestion.start_line.abs_diff(target))
                .map(|(i, _)| i)
        });
        if let Some(i) = found {
            out[i].findings.push(index);
        }
    }
    out
}

/// Apply suggestions to the original text, as GitHub does when they are all committed.
pub fn apply(original: &str, suggestions: &[Suggestion]) -> String {
    let old = lines(original);
    let mut out = String::with_capacity(original.len() + 256);
    let mut next = 0;
    for s in suggestions {
        let start = s.start_line - 1;
        out.extend(
            old[next.min(old.len())..start.min(old.len())]
                .iter()
                .copied(),
        );
        out.push_str(&s.replacement);
        next = s.end_line;
    }
    out.extend(old[next.min(old.len())..].iter().copied());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(original: &str, fixed: &str) -> Vec<Suggestion> {
        let s = suggestions(original, fixed);
        assert_eq!(apply(original, &s), fixed, "{s:#?}");
        for pair in s.windows(2) {
            assert!(pair[0].end_line < pair[1].start_line, "overlap: {s:#?}");
        }
        s
    }

    #[test]
    fn insertion_is_anchored_on_the_line_before() {
        let s = roundtrip("a\nb\nc\n", "a\nb\nx\ny\nc\n");
        assert_eq!(
            s,
            [Suggestion {
                start_line: 2,
                end_line: 2,
                replacement: "b\nx\ny\n".into()
            }]
        );
    }

    #[test]
    fn insertion_at_the_top_is_anchored_on_the_first_line() {
        let s = roundtrip("a\nb\n", "x\na\nb\n");
        assert_eq!(s[0].start_line, 1);
        assert_eq!(s[0].replacement, "x\na\n");
    }

    #[test]
    fn replacements_deletions_and_merges() {
        roundtrip("a\nb\nc\nd\n", "a\nB\nc\n");
        roundtrip("a\nb\nc\nd\n", "a\nb\nX\nc\nD\n");
        roundtrip("a\nb\n", "a\nx\nb\ny\n");
        roundtrip("a\r\nb", "a\r\nb\r\n  c");
        roundtrip("", "x\n");
        roundtrip("a\nb\nc\n", "c\n");
    }

    #[test]
    fn fence_outgrows_backticks() {
        let s = Suggestion {
            start_line: 1,
            end_line: 1,
            replacement: "a: \"````\"\n".into(),
        };
        assert!(s.markdown().starts_with("`````suggestion\n"));
    }
}
