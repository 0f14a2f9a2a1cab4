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

pub mod de;
mod resolve;

use std::cell::Cell;
use std::collections::{HashMap, HashSet};

use saphyr_parser::{Event, Parser, ScalarStyle as SaphyrStyle};

use crate::source::TextRange;

pub use resolve::{Plain, resolve_plain};

pub type NodeId = u32;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalarStyle {
    Plain,
    SingleQuoted,
    DoubleQuoted,
    Literal,
    Folded,
}

impl ScalarStyle {
    pub fn is_block(self) -> bool {
        matches!(self, ScalarStyle::Literal | ScalarStyle::Folded)
    }
}

/// A core-schema tag written on a scalar (`!!bool "true"`), which decides its type whatever
/// its style, as go-yaml honours it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoreTag {
    Bool,
    Int,
    Float,
    Null,
    Str,
}

#[derive(Debug, Clone)]
pub struct Scalar {
    pub value: String,
    pub style: ScalarStyle,
    pub tag: Option<CoreTag>,
}

impl Scalar {
    /// How a Kubernetes client reads this scalar (YAML 1.1 as go-yaml v2 resolves it).
    pub fn resolved(&self) -> Plain<'_> {
        match self.tag {
            Some(CoreTag::Str) => Plain::Str(&self.value),
            Some(tag) => match (tag, resolve_plain(&self.value)) {
                (CoreTag::Bool, b @ Plain::Bool(_)) => b,
                (CoreTag::Int, i @ Plain::Int(_)) => i,
                (CoreTag::Float, Plain::Int(i)) => Plain::Float(i as f64),
                (CoreTag::Float, f @ Plain::Float(_)) => f,
                (CoreTag::Null, _) => Plain::Null,
                // A value its tag cannot hold: the API server rejects it; read it as text.
                _ => Plain::Str(&self.value),
            },
            None if self.style == ScalarStyle::Plain => resolve_plain(&self.value),
            None => Plain::Str(&self.value),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub key: NodeId,
    pub value: NodeId,
}

#[derive(Debug, Clone)]
pub enum NodeKind {
    Scalar(Scalar),
    Sequence { items: Vec<NodeId>, flow: bool },
    Mapping { entries: Vec<Entry>, flow: bool },
    Alias { target: NodeId },
}

#[derive(Debug, Clone)]
pub struct Node {
    pub kind: NodeKind,
    /// The node's content: a scalar with its quotes or block header, a flow collection with its
    /// brackets, a block collection from its first entry to the end of its last. Anchor and tag
    /// are not included.
    pub range: TextRange,
    /// The `&name` that anchors this node.
    pub anchor: Option<TextRange>,
    pub tag: Option<String>,
    pub parent: Option<NodeId>,
}

impl Node {
    pub fn is_flow(&self) -> bool {
        matches!(
            self.kind,
            NodeKind::Sequence { flow: true, .. } | NodeKind::Mapping { flow: true, .. }
        )
    }

    pub fn as_scalar(&self) -> Option<&Scalar> {
        match &self.kind {
            NodeKind::Scalar(s) => Some(s),
            _ => None,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            NodeKind::Scalar(s) => match s.resolved() {
                Plain::Null => "null",
                Plain::Bool(_) => "boolean",
                Plain::Int(_) => "integer",
                Plain::Float(_) => "number",
                Plain::Str(_) => "string",
            },
            NodeKind::Sequence { .. } => "sequence",
            NodeKind::Mapping { .. } => "mapping",
            NodeKind::Alias { .. } => "alias",
        }
    }
}

/// A key that occurs twice in one mapping. Like the Kubernetes API server we keep the last one.
#[derive(Debug, Clone, Copy)]
pub struct DuplicateKey {
    pub first: NodeId,
    pub again: NodeId,
}

#[derive(Debug)]
pub struct Document {
    nodes: Vec<Node>,
    root: Option<NodeId>,
    pub range: TextRange,
    pub duplicate_keys: Vec<DuplicateKey>,
    budget: Cell<usize>,
    exhausted: Cell<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum YamlErrorKind {
    Syntax,
    TooLarge,
    TooDeep,
    AliasBudget,
}

#[derive(Debug, Clone)]
pub struct YamlError {
    pub kind: YamlErrorKind,
    pub range: TextRange,
    pub message: String,
}

#[derive(Debug)]
pub struct Stream {
    pub documents: Vec<Document>,
    pub errors: Vec<YamlError>,
    /// Every comment (`#` to the end of its line), in order.
    pub comments: Vec<TextRange>,
    /// Every scalar's range, in order.
    pub scalars: Vec<TextRange>,
}

impl Document {
    pub fn root(&self) -> Option<NodeId> {
        self.root
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id as usize]
    }

    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &Node)> {
        self.nodes.iter().enumerate().map(|(i, n)| (i as NodeId, n))
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// True once a walk of this document ran out of alias budget: its answers are incomplete.
    pub fn budget_exhausted(&self) -> bool {
        self.exhausted.get()
    }

    /// Charge `cost` to the alias budget; false (and the document marked) when it is spent.
    pub fn charge(&self, cost: usize) -> bool {
        let left = self.budget.get();
        if left < cost {
            self.exhausted.set(true);
            self.budget.set(0);
            false
        } else {
            self.budget.set(left - cost);
            true
        }
    }

    /// Follow an alias to its anchored node.
    pub fn resolve(&self, id: NodeId) -> Option<NodeId> {
        match self.node(id).kind {
            NodeKind::Alias { target } => self.charge(1).then_some(target),
            _ => Some(id),
        }
    }

    pub fn scalar(&self, id: NodeId) -> Option<&Scalar> {
        self.resolve(id).and_then(|id| self.node(id).as_scalar())
    }

    /// The value of a plain or quoted scalar as a string, whatever it resolves to.
    pub fn str_value(&self, id: NodeId) -> Option<&str> {
        self.scalar(id).map(|s| s.value.as_str())
    }

    pub fn is_null(&self, id: NodeId) -> bool {
        matches!(self.scalar(id).map(Scalar::resolved), Some(Plain::Null))
    }

    /// Items of a sequence (through an alias); empty for anything else.
    pub fn items(&self, id: NodeId) -> &[NodeId] {
        match self.resolve(id).map(|id| &self.node(id).kind) {
            Some(NodeKind::Sequence { items, .. }) => items,
            _ => &[],
        }
    }

    pub fn is_mapping(&self, id: NodeId) -> bool {
        self.resolve(id)
            .is_some_and(|id| matches!(self.node(id).kind, NodeKind::Mapping { .. }))
    }

    pub fn is_sequence(&self, id: NodeId) -> bool {
        self.resolve(id)
            .is_some_and(|id| matches!(self.node(id).kind, NodeKind::Sequence { .. }))
    }

    fn own_entries(&self, id: NodeId) -> &[Entry] {
        match &self.node(id).kind {
            NodeKind::Mapping { entries, .. } => entries,
            _ => &[],
        }
    }

    fn is_merge_key(&self, key: NodeId) -> bool {
        matches!(self.node(key).as_scalar(), Some(s) if s.style == ScalarStyle::Plain && s.value == "<<")
    }

    /// The mappings merged into `map` by `<<`, in precedence order.
    fn merge_sources(&self, map: NodeId) -> Vec<NodeId> {
        let mut sources = Vec::new();
        // The last `<<` wins, like any duplicate key.
        if let Some(entry) = self
            .own_entries(map)
            .iter()
            .rev()
            .find(|e| self.is_merge_key(e.key))
        {
            let Some(value) = self.resolve(entry.value) else {
                return sources;
            };
            match &self.node(value).kind {
                NodeKind::Mapping { .. } => sources.push(value),
                NodeKind::Sequence { items, .. } => {
                    for &item in items {
                        if let Some(item) = self.resolve(item)
                            && self.is_mapping(item)
                        {
                            sources.push(item);
                        }
                    }
                }
                _ => {}
            }
        }
        sources
    }

    /// Look up `key` in a mapping: the last occurrence wins, then `<<` merges in order.
    /// Returns the entry as written, which may live in an anchored mapping elsewhere.
    pub fn entry(&self, map: NodeId, key: &str) -> Option<Entry> {
        let map = self.resolve(map)?;
        self.entry_in(map, key, 0)
    }

    fn entry_in(&self, map: NodeId, key: &str, depth: usize) -> Option<Entry> {
        if depth > 0 && !self.charge(1) {
            return None;
        }
        let entries = self.own_entries(map);
        if let Some(e) = entries
            .iter()
            .rev()
            .find(|e| self.node(e.key).as_scalar().is_some_and(|k| k.value == key))
        {
            return Some(*e);
        }
        if depth >= 32 {
            return None;
        }
        self.merge_sources(map)
            .into_iter()
            .find_map(|source| self.entry_in(source, key, depth + 1))
    }

    /// The (alias-resolved) value of `key` in `map`.
    pub fn get(&self, map: NodeId, key: &str) -> Option<NodeId> {
        self.entry(map, key).and_then(|e| self.resolve(e.value))
    }

    /// Follow a dotted path of mapping keys.
    pub fn get_path(&self, mut node: NodeId, path: &[&str]) -> Option<NodeId> {
        for key in path {
            node = self.get(node, key)?;
        }
        Some(node)
    }

    /// All effective entries of a mapping, own keys first then merged ones, each key once.
    pub fn entries(&self, map: NodeId) -> Vec<Entry> {
        let mut out: Vec<Entry> = Vec::new();
        let Some(map) = self.resolve(map) else {
            return out;
        };
        let mut seen = HashSet::new();
        self.collect_entries(map, &mut out, &mut seen, 0);
        // Present own entries in source order.
        out.sort_by_key(|e| self.node(e.key).range.start());
        out
    }

    fn collect_entries<'a>(
        &'a self,
        map: NodeId,
        out: &mut Vec<Entry>,
        seen: &mut HashSet<&'a str>,
        depth: usize,
    ) {
        if depth > 32 || (depth > 0 && !self.charge(1)) {
            return;
        }
        // Own keys shadow merged ones; the last duplicate wins. A set keeps this linear: a
        // mapping of 40 000 keys must not take quadratic time.
        for e in self.own_entries(map).iter().rev() {
            if self.is_merge_key(e.key) {
                continue;
            }
            match self.node(e.key).as_scalar() {
                Some(k) => {
                    if seen.insert(k.value.as_str()) {
                        out.push(*e);
                    }
                }
                None => out.push(*e),
            }
        }
        for source in self.merge_sources(map) {
            self.collect_entries(source, out, seen, depth + 1);
        }
    }

    /// Where a node sits, as a path such as `spec.containers[0].image`.
    pub fn path_of(&self, mut id: NodeId) -> String {
        let mut parts = Vec::new();
        while let Some(parent) = self.node(id).parent {
            match &self.node(parent).kind {
                NodeKind::Mapping { entries, .. } => {
                    if let Some(e) = entries.iter().find(|e| e.value == id || e.key == id) {
                        parts.push(self.key_str(e.key).unwrap_or("?").to_string());
                    }
                }
                NodeKind::Sequence { items, .. } => {
                    let i = items.iter().position(|&i| i == id).unwrap_or(0);
                    parts.push(format!("[{i}]"));
                }
                _ => {}
            }
            id = parent;
        }
        let mut out = String::new();
        for p in parts.iter().rev() {
            if !out.is_empty() && !p.starts_with('[') {
                out.push('.');
            }
            out.push_str(p);
        }
        out
    }

    /// Text of a mapping key, if it is a scalar.
    pub fn key_str(&self, key: NodeId) -> Option<&str> {
        self.node(key).as_scalar().map(|s| s.value.as_str())
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
        let outcome = Builder::new(text, base, limits, &mut stream, &mut scalars).run();
        match outcome {
            // After a syntax error, carry on at the next document marker: one broken document
            // must not hide the findings of the others.
            Some(error_at) => match next_document_start(text, error_at) {
                Some(next) => base = next,
                None => break,
            },
            None => break,
        }
    }
    scalars.sort_unstable();
    stream.comments = find_comments(text, &scalars);
    stream.scalars = scalars;
    stream
}

/// Byte offset of the first `---` line after `offset`.
fn next_document_start(text: &str, offset: usize) -> Option<usize> {
    let mut pos = text[offset..].find('\n').map(|i| offset + i + 1)?;
    while pos < text.len() {
        let rest = &text[pos..];
        if let Some(after) = rest.strip_prefix("---")
            && after.chars().next().is_none_or(|c| c.is_whitespace())
        {
            return Some(pos);
        }
        pos = rest.find('\n').map(|i| pos + i + 1)?;
    }
    None
}

fn find_comments(text: &str, scalars: &[TextRange]) -> Vec<TextRange> {
    let bytes = text.as_bytes();
    let mut comments = Vec::new();
    let mut next_scalar = 0;
    let mut pos = 0;
    while pos < bytes.len() {
        while next_scalar < scalars.len() && scalars[next_scalar].end() <= pos {
            next_scalar += 1;
        }
        if let Some(s) = scalars.get(next_scalar)
            && s.contains(pos)
        {
            pos = s.end();
            continue;
        }
        if bytes[pos] == b'#'
            && (pos == 0
                || is_blank_or_break(bytes[pos - 1])
                || pos == 3 && text.starts_with('\u{feff}'))
        {
            let mut end = text[pos..].find('\n').map_or(text.len(), |i| pos + i);
            if end > pos && bytes[end - 1] == b'\r' {
                end -= 1;
            }
            comments.push(TextRange::new(pos, end));
            pos = end;
            continue;
        }
        pos += 1;
    }
    comments
}

fn is_blank_or_break(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// saphyr reports positions in characters; we work in bytes.
struct Offsets<'a> {
    text: &'a str,
    base: usize,
    ascii: bool,
    char_pos: usize,
    byte_pos: usize,
}

impl<'a> Offsets<'a> {
    fn new(text: &'a str, base: usize) -> Self {
        Self {
            text,
            base,
            ascii: text[base..].is_ascii(),
            char_pos: 0,
            byte_pos: base,
        }
    }

    /// Byte offset in the whole text of character index `index` of the parsed slice.
    fn byte(&mut self, index: usize) -> usize {
        if self.ascii {
            return (self.base + index).min(self.text.len());
        }
        if index < self.char_pos {
            // Rare: walk back from the cursor rather than from the start.
            let back = self.char_pos - index;
            let slice = &self.text[self.base..self.byte_pos];
            let mut it = slice.char_indices().rev();
            let mut at = self.byte_pos;
            for _ in 0..back {
                match it.next() {
                    Some((i, _)) => at = self.base + i,
                    None => break,
                }
            }
            self.char_pos = index;
            self.byte_pos = at;
            return at;
        }
        let mut at = self.byte_pos;
        let mut chars = self.text[self.byte_pos..].chars();
        for _ in self.char_pos..index {
            match chars.next() {
                Some(c) => at += c.len_utf8(),
                None => break,
            }
        }
        self.char_pos = index;
        self.byte_pos = at;
        at
    }
}

struct Frame {
    node: NodeId,
    pending_key: Option<NodeId>,
}

struct Builder<'t, 's> {
    text: &'t str,
    base: usize,
    limits: &'s Limits,
    stream: &'s mut Stream,
    scalars: &'s mut Vec<TextRange>,
    offsets: Offsets<'t>,
    /// End of the last token consumed: properties and block headers are found after it.
    last_end: usize,
}

struct DocBuilder {
    nodes: Vec<Node>,
    root: Option<NodeId>,
    stack: Vec<Frame>,
    anchors: HashMap<usize, NodeId>,
    start: usize,
    /// Set once the document is beyond a limit: the rest of its events are only consumed.
    abandoned: bool,
    duplicate_keys: Vec<DuplicateKey>,
}

impl<'t, 's> Builder<'t, 's> {
    fn new(
        text: &'t str,
        base: usize,
        limits: &'s Limits,
        stream: &'s mut Stream,
        scalars: &'s mut Vec<TextRange>,
    ) -> Self {
        Self {
            text,
            base,
            limits,
            stream,
            scalars,
            offsets: Offsets::new(text, base),
            last_end: base,
        }
    }

    /// Returns the byte offset of a syntax error, if parsing stopped at one.
    fn run(mut self) -> Option<usize> {
        let mut parser = Parser::new_from_str(&self.text[self.base..]);
        let mut doc: Option<DocBuilder> = None;
        while let Some(result) = parser.next_event() {
            let (event, span) = match result {
                Ok(ev) => ev,
                Err(err) => {
                    let mut at = self.offsets.byte(err.marker().index());
                    if err.info().contains("tab") {
                        // Point at the offending tab, which saphyr has already stepped over.
                        let line_start = self.text[..at].rfind('\n').map_or(0, |i| i + 1);
                        if let Some(tab) = self.text[line_start..at].find('\t') {
                            at = line_start + tab;
                        }
                    }
                    // saphyr caps flow nesting at 255 levels: a safety limit, not bad YAML.
                    let (kind, message) = if err.info().contains("recursion limit") {
                        let message = "flow collections nested deeper than 255 levels; the rest of this document was not linted";
                        (YamlErrorKind::TooDeep, message.to_string())
                    } else {
                        (YamlErrorKind::Syntax, err.info().to_string())
                    };
                    self.stream.errors.push(YamlError {
                        kind,
                        range: TextRange::new(at, line_end(self.text, at)),
                        message,
                    });
                    return Some(at);
                }
            };
            let start = self.offsets.byte(span.start.index());
            let end = self.offsets.byte(span.end.index());
            match event {
                Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
                Event::DocumentStart(_) => {
                    doc = Some(DocBuilder {
                        nodes: Vec::new(),
                        root: None,
                        stack: Vec::new(),
                        anchors: HashMap::new(),
                        start,
                        abandoned: false,
                        duplicate_keys: Vec::new(),
                    });
                    self.last_end = end;
                }
                Event::DocumentEnd => {
                    if let Some(d) = doc.take() {
                        self.finish_document(d, start, end);
                    }
                }
                other => {
                    let Some(d) = doc.as_mut() else { continue };
                    if d.abandoned {
                        continue;
                    }
                    self.node_event(d, other, start, end);
                }
            }
        }
        None
    }

    fn finish_document(&mut self, d: DocBuilder, end_start: usize, end_end: usize) {
        if d.abandoned {
            return;
        }
        let explicit_end = self.text[end_start..end_end].trim() == "...";
        let content_end = d.root.map_or(d.start, |r| d.nodes[r as usize].range.end());
        let end = if explicit_end { end_end } else { content_end };
        let nodes_len = d.nodes.len();
        if let Some(root) = d.root {
            let expanded = expanded_size(&d.nodes, root);
            let limit = self.limits.max_expanded_nodes + 4 * nodes_len as u64;
            if expanded > limit {
                let at = d
                    .nodes
                    .iter()
                    .find(|n| matches!(n.kind, NodeKind::Alias { .. }))
                    .map_or(d.start, |n| n.range.start());
                self.stream.errors.push(YamlError {
                    kind: YamlErrorKind::AliasBudget,
                    range: TextRange::new(at, line_end(self.text, at)),
                    message: format!(
                        "aliases expand this document to {expanded} nodes, an alias bomb (the limit is {limit}); it was not linted"
                    ),
                });
                self.last_end = end_end;
                return;
            }
        }
        self.stream.documents.push(Document {
            nodes: d.nodes,
            root: d.root,
            range: TextRange::new(d.start.min(end), end.max(d.start)),
            duplicate_keys: d.duplicate_keys,
            budget: Cell::new(self.limits.alias_budget + 10 * nodes_len),
            exhausted: Cell::new(false),
        });
        self.last_end = end_end;
    }

    fn node_event(&mut self, d: &mut DocBuilder, event: Event<'_>, start: usize, end: usize) {
        let is_seq = matches!(event, Event::SequenceStart(..));
        match event {
            Event::Scalar(value, style, anchor_id, tag) => {
                let style = match style {
                    SaphyrStyle::Plain => ScalarStyle::Plain,
                    SaphyrStyle::SingleQuoted => ScalarStyle::SingleQuoted,
                    SaphyrStyle::DoubleQuoted => ScalarStyle::DoubleQuoted,
                    SaphyrStyle::Literal => ScalarStyle::Literal,
                    SaphyrStyle::Folded => ScalarStyle::Folded,
                };
                let mut gap = scan_gap(self.text, self.last_end, start.max(self.last_end));
                // saphyr starts a scalar's span at its properties, if it has any.
                let start = skip_properties(self.text, start, end, &mut gap);
                let is_empty_plain = style == ScalarStyle::Plain && value.is_empty();
                if is_empty_plain && d.stack.is_empty() {
                    // An empty document: saphyr reports a null scalar spanning the next marker.
                    return;
                }
                let range = if is_empty_plain {
                    let at = gap.anchor.or(gap.tag).map_or(self.last_end, |r| r.end());
                    TextRange::empty(at)
                } else {
                    self.scalar_range(style, start, end, gap.block_header)
                };
                self.scalars.push(range);
                self.last_end = range.end();
                let id = self.push_node(
                    d,
                    Node {
                        kind: NodeKind::Scalar(Scalar {
                            value: value.into_owned(),
                            style,
                            tag: tag.as_ref().and_then(|t| core_tag(&t.handle, &t.suffix)),
                        }),
                        range,
                        anchor: gap.anchor,
                        tag: tag.map(|t| format!("{}{}", t.handle, t.suffix)),
                        parent: None,
                    },
                    anchor_id,
                );
                self.attach(d, id);
            }
            Event::Alias(anchor_id) => {
                let range = TextRange::new(start, end);
                self.last_end = end;
                let Some(&target) = d.anchors.get(&anchor_id) else {
                    self.abandon(
                        d,
                        YamlErrorKind::Syntax,
                        range,
                        "alias to an anchor of another document".into(),
                    );
                    return;
                };
                if d.stack.iter().any(|f| f.node == target) {
                    // `&a [*a]`: go-yaml refuses an anchor that contains itself, and so do we.
                    self.abandon(
                        d,
                        YamlErrorKind::Syntax,
                        range,
                        "alias refers to a node that contains it".into(),
                    );
                    return;
                }
                let id = self.push_node(
                    d,
                    Node {
                        kind: NodeKind::Alias { target },
                        range,
                        anchor: None,
                        tag: None,
                        parent: None,
                    },
                    0,
                );
                self.attach(d, id);
            }
            Event::SequenceStart(anchor_id, tag) | Event::MappingStart(anchor_id, tag) => {
                if d.stack.len() >= self.limits.max_depth {
                    let range = TextRange::new(start, line_end(self.text, start));
                    let message = format!(
                        "nesting deeper than {} levels; this document was not linted",
                        self.limits.max_depth
                    );
                    self.abandon(d, YamlErrorKind::TooDeep, range, message);
                    return;
                }
                let flow = end > start && matches!(self.text.as_bytes()[end - 1], b'[' | b'{');
                let gap = scan_gap(self.text, self.last_end, if flow { end - 1 } else { end });
                let node_start = if flow {
                    end - 1
                } else if is_seq {
                    // A block sequence starts at its first dash; for a sequence not indented
                    // under its key saphyr places the start after that dash.
                    if self.text[end..].starts_with('-') {
                        end
                    } else {
                        gap.dash.unwrap_or(end)
                    }
                } else {
                    end
                };
                if flow {
                    self.last_end = end;
                } else if let Some(r) = gap.anchor.or(gap.tag) {
                    self.last_end = self.last_end.max(r.end());
                }
                let kind = if is_seq {
                    NodeKind::Sequence {
                        items: Vec::new(),
                        flow,
                    }
                } else {
                    NodeKind::Mapping {
                        entries: Vec::new(),
                        flow,
                    }
                };
                let id = self.push_node(
                    d,
                    Node {
                        kind,
                        range: TextRange::empty(node_start),
                        anchor: gap.anchor,
                        tag: tag.map(|t| format!("{}{}", t.handle, t.suffix)),
                        parent: None,
                    },
                    anchor_id,
                );
                self.attach(d, id);
                d.stack.push(Frame {
                    node: id,
                    pending_key: None,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let is_map = matches!(event, Event::MappingEnd);
                let Some(frame) = d.stack.pop() else { return };
                let node = &d.nodes[frame.node as usize];
                let range = if node.is_flow() {
                    // saphyr's span of a flow end runs on over any trailing comment.
                    let close = if matches!(self.text.as_bytes().get(start), Some(b']' | b'}')) {
                        start + 1
                    } else {
                        end
                    };
                    TextRange::new(node.range.start(), close)
                } else {
                    let last_child = match &node.kind {
                        NodeKind::Sequence { items, .. } => items.last().copied(),
                        NodeKind::Mapping { entries, .. } => entries.last().map(|e| e.value),
                        _ => None,
                    };
                    let child_end =
                        last_child.map_or(node.range.end(), |c| d.nodes[c as usize].range.end());
                    TextRange::new(node.range.start(), child_end.max(node.range.start()))
                };
                d.nodes[frame.node as usize].range = range;
                if range.end() > self.last_end {
                    self.last_end = range.end();
                }
                if is_map {
                    find_duplicates(d, frame.node);
                }
            }
            _ => {}
        }
    }

    fn abandon(
        &mut self,
        d: &mut DocBuilder,
        kind: YamlErrorKind,
        range: TextRange,
        message: String,
    ) {
        d.abandoned = true;
        self.stream.errors.push(YamlError {
            kind,
            range,
            message,
        });
    }

    fn push_node(&mut self, d: &mut DocBuilder, mut node: Node, anchor_id: usize) -> NodeId {
        let id = d.nodes.len() as NodeId;
        node.parent = d.stack.last().map(|f| f.node);
        d.nodes.push(node);
        if anchor_id != 0 {
            d.anchors.insert(anchor_id, id);
        }
        id
    }

    fn attach(&mut self, d: &mut DocBuilder, id: NodeId) {
        let Some(frame) = d.stack.last_mut() else {
            d.root = Some(id);
            return;
        };
        let parent = frame.node as usize;
        match &mut d.nodes[parent].kind {
            NodeKind::Sequence { items, .. } => items.push(id),
            NodeKind::Mapping { entries, .. } => match frame.pending_key.take() {
                None => frame.pending_key = Some(id),
                Some(key) => entries.push(Entry { key, value: id }),
            },
            _ => {}
        }
    }

    fn scalar_range(
        &self,
        style: ScalarStyle,
        start: usize,
        end: usize,
        header: Option<usize>,
    ) -> TextRange {
        let text = self.text;
        let bytes = text.as_bytes();
        match style {
            ScalarStyle::Plain => TextRange::new(start, trim_end(text, start, end)),
            ScalarStyle::SingleQuoted => {
                let mut i = start + 1;
                while i < bytes.len() {
                    if bytes[i] == b'\'' {
                        if bytes.get(i + 1) == Some(&b'\'') {
                            i += 2;
                            continue;
                        }
                        return TextRange::new(start, i + 1);
                    }
                    i += 1;
                }
                TextRange::new(start, end)
            }
            ScalarStyle::DoubleQuoted => {
                let mut i = start + 1;
                while i < bytes.len() {
                    match bytes[i] {
                        b'\\' => i += 2,
                        b'"' => return TextRange::new(start, i + 1),
                        _ => i += 1,
                    }
                }
                TextRange::new(start, end)
            }
            ScalarStyle::Literal | ScalarStyle::Folded => {
                let header = header.unwrap_or(start);
                // The header line runs up to its line break (it may carry a comment, which is
                // not part of the value but is inside the node's range).
                let header_end = line_end(text, header);
                let content_end = trim_end(
                    text,
                    header_end.min(end.max(header_end)),
                    end.max(header_end),
                );
                let mut range_end = content_end.max(header_end);
                // Without content the node is just its header (indicators), not its comment.
                if content_end <= header_end {
                    range_end = header
                        + text[header..header_end]
                            .find(|c: char| c.is_whitespace())
                            .unwrap_or(header_end - header);
                }
                TextRange::new(header, range_end)
            }
        }
    }
}

/// Number of nodes the tree would have with every alias expanded, saturating. Aliases only point
/// at completed nodes, so the graph is acyclic and a memoised walk is linear.
fn expanded_size(nodes: &[Node], root: NodeId) -> u64 {
    let children = |id: NodeId| -> Vec<NodeId> {
        match &nodes[id as usize].kind {
            NodeKind::Scalar(_) => Vec::new(),
            NodeKind::Alias { target } => vec![*target],
            NodeKind::Sequence { items, .. } => items.clone(),
            NodeKind::Mapping { entries, .. } => {
                entries.iter().flat_map(|e| [e.key, e.value]).collect()
            }
        }
    };
    let mut memo: Vec<Option<u64>> = vec![None; nodes.len()];
    let mut stack = vec![(root, false)];
    while let Some((id, ready)) = stack.pop() {
        if memo[id as usize].is_some() {
            continue;
        }
        let kids = children(id);
        if ready {
            let sum = kids.iter().fold(0u64, |acc, &c| {
                acc.saturating_add(memo[c as usize].unwrap_or(0))
            });
            let own = if matches!(nodes[id as usize].kind, NodeKind::Alias { .. }) {
                0
            } else {
                1
            };
            memo[id as usize] = Some(sum.saturating_add(own));
        } else {
            stack.push((id, true));
            stack.extend(
                kids.into_iter()
                    .filter(|&c| memo[c as usize].is_none())
                    .map(|c| (c, false)),
            );
        }
    }
    memo[root as usize].unwrap_or(0)
}

fn core_tag(handle: &str, suffix: &str) -> Option<CoreTag> {
    if handle != "tag:yaml.org,2002:" && handle != "!!" {
        return None;
    }
    match suffix {
        "bool" => Some(CoreTag::Bool),
        "int" => Some(CoreTag::Int),
        "float" => Some(CoreTag::Float),
        "null" => Some(CoreTag::Null),
        "str" => Some(CoreTag::Str),
        _ => None,
    }
}

fn trim_end(text: &str, start: usize, end: usize) -> usize {
    let end = end.min(text.len());
    if start >= end {
        return start.min(end);
    }
    start
        + text[start..end]
            .trim_end_matches([' ', '\t', '\r', '\n'])
            .len()
}

fn line_end(text: &str, at: usize) -> usize {
    let at = at.min(text.len());
    let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    if end > at && text.as_bytes()[end - 1] == b'\r' {
        end - 1
    } else {
        end
    }
}

#[derive(Default)]
struct Gap {
    anchor: Option<TextRange>,
    tag: Option<TextRange>,
    block_header: Option<usize>,
    /// The first block sequence indicator.
    dash: Option<usize>,
}

fn skip_properties(text: &str, mut pos: usize, end: usize, gap: &mut Gap) -> usize {
    let bytes = text.as_bytes();
    while pos < end && matches!(bytes[pos], b'&' | b'!') {
        let token_end = text[pos..end]
            .find(|c: char| c.is_whitespace())
            .map_or(end, |n| pos + n);
        let range = TextRange::new(pos, token_end);
        if bytes[pos] == b'&' {
            gap.anchor = Some(range);
        } else {
            gap.tag = Some(range);
        }
        pos = token_end;
        while pos < end && is_blank_or_break(bytes[pos]) {
            pos += 1;
        }
    }
    pos
}

/// Between two tokens there are only indicators, whitespace, comments and node properties.
fn scan_gap(text: &str, from: usize, to: usize) -> Gap {
    let mut gap = Gap::default();
    let bytes = text.as_bytes();
    let to = to.min(bytes.len());
    let mut i = from.min(to);
    while i < to {
        let b = bytes[i];
        let after_blank = i == 0 || is_blank_or_break(bytes[i - 1]);
        match b {
            b'#' if after_blank => {
                i = text[i..to].find('\n').map_or(to, |n| i + n);
            }
            b'&' | b'!' if after_blank || matches!(bytes[i - 1], b'[' | b'{' | b',') => {
                let end = text[i..to]
                    .find(|c: char| c.is_whitespace() || matches!(c, ',' | '[' | ']' | '{' | '}'))
                    .map_or(to, |n| i + n);
                let range = TextRange::new(i, end);
                if b == b'&' {
                    gap.anchor = Some(range);
                } else {
                    gap.tag = Some(range);
                }
                i = end;
            }
            b'-' if gap.dash.is_none()
                && bytes.get(i + 1).is_none_or(|&n| is_blank_or_break(n)) =>
            {
                gap.dash = Some(i);
                i += 1;
            }
            b'|' | b'>' if gap.block_header.is_none() => {
                gap.block_header = Some(i);
                i += 1;
            }
            _ => i += 1,
        }
    }
    gap
}

fn find_duplicates(d: &mut DocBuilder, map: NodeId) {
    let NodeKind::Mapping { entries, .. } = &d.nodes[map as usize].kind else {
        return;
    };
    if entries.len() < 2 {
        return;
    }
    let mut seen: HashMap<&str, NodeId> = HashMap::new();
    let mut found = Vec::new();
    for e in entries {
        if let NodeKind::Scalar(s) = &d.nodes[e.key as usize].kind {
            if let Some(&first) = seen.get(s.value.as_str()) {
                found.push(DuplicateKey {
                    first,
                    again: e.key,
                });
            } else {
                seen.insert(&s.value, e.key);
            }
        }
    }
    d.duplicate_keys.extend(found);
}

#[cfg(test)]
mod tests;
