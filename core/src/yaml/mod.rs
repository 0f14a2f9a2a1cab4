//! YAML with exact spans.
//!
//! We parse with `saphyr-parser`, the maintained descendant of yaml-rust, because it is a pure
//! Rust event parser that reports source positions, never recurses while parsing and survives
//! byte-order marks, CRLF and multi-document streams. `serde_yaml` 0.9 is deprecated, has no
//! spans and loops forever on a BOM in a multi-document stream. saphyr's spans are close but not
//! exact (character offsets, quoted and block scalars that run past their end, block collections
//! that end at the next token), so the builder below recomputes every range from the source text.
//!
//! The tree is an arena: nodes refer to each other by [`NodeId`], aliases point at their anchor
//! node and are never expanded, so an alias bomb costs nothing until someone walks it, and walking
//! is bounded by the document's alias budget. Dropping a tree is flat, so no input can overflow
//! the stack, whatever its nesting.
//!
//! `tree` holds the arena and the questions asked of it; `build` turns saphyr's events into it.

mod build;
pub mod de;
mod resolve;
mod tree;

use crate::source::TextRange;

pub use resolve::{Plain, resolve_plain};
pub use tree::{
    CoreTag, Document, DuplicateKey, Entry, Node, NodeId, NodeKind, Scalar, ScalarStyle, Stream,
    YamlError, YamlErrorKind,
};

/// Hard limits that turn hostile input into a finding instead of a crash.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest file we parse, in bytes.
    pub max_bytes: usize,
    /// Deepest nesting of collections we build.
    pub max_depth: usize,
    /// How many nodes a document may have once its aliases are expanded (on top of four times
    /// its own size). Beyond that it is an alias bomb and is not linted, as the API server
    /// would refuse it.
    pub max_expanded_nodes: u64,
    /// How many alias dereferences one walk of a document may cost, on top of ten times its
    /// size: defence in depth for `<<` merge chains.
    pub alias_budget: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 2 * 1024 * 1024,
            max_depth: 200,
            max_expanded_nodes: 1_000_000,
            alias_budget: 10_000,
        }
    }
}

/// Parse a multi-document YAML stream.
pub fn parse(text: &str, limits: &Limits) -> Stream {
    let mut stream = Stream {
        documents: Vec::new(),
        errors: Vec::new(),
        comments: Vec::new(),
        scalars: Vec::new(),
    };
    if text.len() > limits.max_bytes {
        stream.errors.push(YamlError {
            kind: YamlErrorKind::TooLarge,
            range: TextRange::empty(0),
            message: format!(
                "file is {} bytes, over the limit of {} bytes; it was not parsed",
                text.len(),
                limits.max_bytes
            ),
        });
        return stream;
    }
    let mut scalars: Vec<TextRange> = Vec::new();
    let mut base = 0;
    loop {
        let outcome = build::Builder::new(text, base, limits, &mut stream, &mut scalars).run();
        match outcome {
            // After a syntax error, carry on at the next document marker: one broken document
            // must not hide the findings of the others.
            Some(error_at) => match build::next_document_start(text, error_at) {
                Some(next) => base = next,
                None => break,
            },
            None => break,
        }
    }
    scalars.sort_unstable();
    stream.comments = build::find_comments(text, &scalars);
    stream.scalars = scalars;
    stream
}

#[cfg(test)]
mod tests;
