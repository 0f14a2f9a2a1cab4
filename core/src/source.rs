//! Source text, byte ranges and the line index.
//!
//! Every position in the core is a byte offset into the exact text that was read (BOM, CRLF and
//! all). Ranges are only meaningful against the text they were computed from, as in toml_edit:
//! nothing here normalises the input.

use std::fmt;

/// A half-open byte range `start..end` into one source text.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TextRange {
    start: u32,
    end: u32,
}

impl TextRange {
    pub fn new(start: usize, end: usize) -> Self {
        debug_assert!(start <= end, "inverted range {start}..{end}");
        // Files are capped far below 4 GiB before they get here (see `yaml::Limits`).
        Self {
            start: start as u32,
            end: end.max(start) as u32,
        }
    }

    pub fn empty(at: usize) -> Self {
        Self::new(at, at)
    }

    pub fn start(self) -> usize {
        self.start as usize
    }

    pub fn end(self) -> usize {
        self.end as usize
    }

    pub fn len(self) -> usize {
        (self.end - self.start) as usize
    }

    pub fn is_empty(self) -> bool {
        self.start == self.end
    }

    pub fn contains(self, offset: usize) -> bool {
        self.start() <= offset && offset < self.end()
    }

    pub fn cover(self, other: TextRange) -> TextRange {
        TextRange {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }

    pub fn slice(self, text: &str) -> &str {
        &text[self.start()..self.end()]
    }
}

impl fmt::Debug for TextRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

/// A 1-based line and a 1-based column counted in Unicode scalar values, the unit editors and
/// SARIF's `unicodeCodePoints` column kind use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct LineCol {
    pub line: usize,
    pub column: usize,
}

/// Byte offsets of line starts. A line ends at `\n`; a preceding `\r` belongs to the line ending,
/// so CRLF files report the same columns as LF files.
#[derive(Debug, Clone)]
pub struct LineIndex {
    line_starts: Vec<u32>,
    /// Lines holding a byte beyond ASCII. Columns count characters; on every other line a
    /// column is a byte difference, so a finding on a line of megabytes (minified JSON) does
    /// not cost a scan of the line.
    non_ascii: Vec<bool>,
    /// Length of a leading UTF-8 BOM, which no editor shows as a column.
    bom: u32,
}

impl LineIndex {
    pub fn new(text: &str) -> Self {
        let mut line_starts = Vec::with_capacity(text.len() / 32 + 1);
        line_starts.push(0);
        line_starts.extend(memchr_iter(b'\n', text.as_bytes()).map(|i| (i + 1) as u32));
        let bom = if text.starts_with('\u{feff}') { 3 } else { 0 };
        let bytes = text.as_bytes();
        let non_ascii = line_starts
            .iter()
            .enumerate()
            .map(|(i, &start)| {
                let end = line_starts.get(i + 1).map_or(bytes.len(), |&e| e as usize);
                !bytes[start as usize..end].is_ascii()
            })
            .collect();
        Self {
            line_starts,
            non_ascii,
            bom,
        }
    }

    pub fn line_count(&self) -> usize {
        self.line_starts.len()
    }

    /// 0-based index of the line holding `offset`.
    pub fn line_of(&self, offset: usize) -> usize {
        match self.line_starts.binary_search(&(offset as u32)) {
            Ok(line) => line,
            Err(next) => next - 1,
        }
    }

    /// Byte offset where 0-based `line` starts (after the BOM on the first line).
    pub fn line_start(&self, line: usize) -> usize {
        let start = self.line_starts[line] as usize;
        if line == 0 {
            start + self.bom as usize
        } else {
            start
        }
    }

    /// Byte range of 0-based `line` without its line ending.
    pub fn line_range(&self, line: usize, text: &str) -> TextRange {
        let start = self.line_start(line);
        let mut end = self
            .line_starts
            .get(line + 1)
            .map_or(text.len(), |&next| next as usize);
        let bytes = text.as_bytes();
        if end > start && bytes[end - 1] == b'\n' {
            end -= 1;
        }
        if end > start && bytes[end - 1] == b'\r' {
            end -= 1;
        }
        TextRange::new(start, end)
    }

    pub fn line_col(&self, offset: usize, text: &str) -> LineCol {
        let line = self.line_of(offset);
        let start = self.line_start(line).min(offset);
        let column = if self.non_ascii[line] {
            text[start..offset].chars().count() + 1
        } else {
            offset - start + 1
        };
        LineCol {
            line: line + 1,
            column,
        }
    }
}

fn memchr_iter(needle: u8, haystack: &[u8]) -> impl Iterator<Item = usize> + '_ {
    haystack
        .iter()
        .enumerate()
        .filter_map(move |(i, &b)| (b == needle).then_some(i))
}

/// Text on one line, runs of whitespace (line breaks too) made single spaces.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The text of one file together with its name and line index.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: String,
    pub text: String,
    pub lines: LineIndex,
    /// Set when the bytes read were not UTF-8: `text` then holds them decoded with U+FFFD in
    /// place of each bad sequence, good for linting the whole file, never for writing it back.
    pub not_utf8: Option<NotUtf8>,
}

/// Bytes that are not UTF-8, kept whole so that nothing is lost: a fixer leaves such a file
/// alone and a filter prints these bytes back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotUtf8 {
    /// Offset of the first byte that is not UTF-8.
    pub offset: usize,
    /// That byte.
    pub byte: u8,
    pub bytes: std::sync::Arc<[u8]>,
}

impl SourceFile {
    pub fn new(path: impl Into<String>, text: impl Into<String>) -> Self {
        let text = text.into();
        let lines = LineIndex::new(&text);
        Self {
            path: path.into(),
            text,
            lines,
            not_utf8: None,
        }
    }

    /// A file from bytes read from disk or from GitHub. YAML is UTF-8 here; bytes that are
    /// not are linted whole (each bad sequence read as U+FFFD, which keeps every line where it
    /// was) and remembered, so the linter reports the first bad byte and no fixer writes the
    /// file back.
    pub fn from_bytes(path: impl Into<String>, bytes: Vec<u8>) -> Self {
        match String::from_utf8(bytes) {
            Ok(text) => Self::new(path, text),
            Err(e) => {
                let offset = e.utf8_error().valid_up_to();
                let bytes: std::sync::Arc<[u8]> = e.into_bytes().into();
                let mut file = Self::new(path, String::from_utf8_lossy(&bytes).into_owned());
                file.not_utf8 = Some(NotUtf8 {
                    offset,
                    byte: bytes[offset],
                    bytes,
                });
                file
            }
        }
    }

    /// Whether `text` is the whole file, byte for byte: only then may it be written back.
    pub fn is_whole(&self) -> bool {
        self.not_utf8.is_none()
    }

    pub fn line_col(&self, offset: usize) -> LineCol {
        self.lines.line_col(offset, &self.text)
    }

    /// Byte offset of the line holding `offset`.
    pub fn line_start_of(&self, offset: usize) -> usize {
        self.lines.line_start(self.lines.line_of(offset))
    }

    /// 0-based column in bytes: for indentation, which is spaces.
    pub fn byte_column(&self, offset: usize) -> usize {
        offset - self.line_start_of(offset)
    }

    /// Line ending used by the file: the first one found, `\n` when there is none.
    pub fn line_ending(&self) -> &'static str {
        match self.text.find('\n') {
            Some(i) if i > 0 && self.text.as_bytes()[i - 1] == b'\r' => "\r\n",
            _ => "\n",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_chars_and_skips_bom_and_cr() {
        let text = "\u{feff}a: 1\r\nb: \"é\" x\r\nc: yz";
        let index = LineIndex::new(text);
        assert_eq!(index.line_count(), 3);
        // An ASCII line after one that is not: its columns are byte differences.
        let z = text.find('z').unwrap();
        assert_eq!(index.line_col(z, text), LineCol { line: 3, column: 5 });
        let a = text.find('a').unwrap();
        assert_eq!(index.line_col(a, text), LineCol { line: 1, column: 1 });
        let x = text.find('x').unwrap();
        assert_eq!(index.line_col(x, text), LineCol { line: 2, column: 8 });
        let c = text.find('c').unwrap();
        assert_eq!(index.line_col(c, text), LineCol { line: 3, column: 1 });
        assert_eq!(index.line_range(1, text).slice(text), "b: \"é\" x");
        assert_eq!(index.line_range(2, text).slice(text), "c: yz");
        assert_eq!(index.line_range(0, text).slice(text), "a: 1");
    }

    #[test]
    fn line_ending_is_detected() {
        assert_eq!(SourceFile::new("a", "a\r\nb\n").line_ending(), "\r\n");
        assert_eq!(SourceFile::new("a", "a\nb\r\n").line_ending(), "\n");
        assert_eq!(SourceFile::new("a", "a").line_ending(), "\n");
    }
}
