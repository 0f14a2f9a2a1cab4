//! One file's text and its one parse, handed through linting, fix planning and suggestions, as
//! toml_edit hands a document with its spans: the node ids in findings are only meaningful
//! against the parse they came from, and the [`Stamp`] they carry says which one that is.

use std::hash::{Hash, Hasher};

use crate::source::SourceFile;
use crate::yaml::{self, Limits, Stream};

/// Which text, under which limits, node ids were computed against. Parsing is deterministic,
/// so ids from one parse hold for any parse of the same text under the same limits; ids from
/// any other text would name the wrong nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Stamp(u64);

impl Stamp {
    fn of(text: &str, limits: &Limits) -> Stamp {
        let mut h = std::hash::DefaultHasher::new();
        text.hash(&mut h);
        (
            limits.max_bytes,
            limits.max_depth,
            limits.max_expanded_nodes,
            limits.alias_budget,
        )
            .hash(&mut h);
        Stamp(h.finish())
    }
}

/// A file with its YAML stream.
#[derive(Debug)]
pub struct Parsed {
    file: SourceFile,
    stream: Stream,
    stamp: Stamp,
}

impl Parsed {
    pub fn new(file: SourceFile, limits: &Limits) -> Parsed {
        let stream = yaml::parse(&file.text, limits);
        let stamp = Stamp::of(&file.text, limits);
        Parsed {
            file,
            stream,
            stamp,
        }
    }

    pub fn file(&self) -> &SourceFile {
        &self.file
    }

    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    pub fn stamp(&self) -> Stamp {
        self.stamp
    }

    /// Give every document its whole alias budget again, for the next reader.
    pub fn reset_budgets(&self) {
        for doc in &self.stream.documents {
            doc.reset_budget();
        }
    }
}
