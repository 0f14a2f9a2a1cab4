//! The arena tree of a YAML stream: nodes that refer to each other by id, aliases that point at
//! their anchor and are never expanded, and the lookups Kubernetes reading needs (merge keys,
//! last-duplicate-wins, paths), each charged to the document's alias budget.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::source::TextRange;

use super::resolve::{Plain, resolve_plain};

pub type NodeId = u32;

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
    pub(super) nodes: Vec<Node>,
    pub(super) root: Option<NodeId>,
    pub range: TextRange,
    pub duplicate_keys: Vec<DuplicateKey>,
    /// Alias dereferences left for the current walk (atomics, so one parse can be read by
    /// the linter's threads); each reader starts afresh with [`Document::reset_budget`].
    pub(super) budget: AtomicUsize,
    pub(super) budget_start: usize,
    pub(super) exhausted: AtomicBool,
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
        self.exhausted.load(Ordering::Relaxed)
    }

    /// Give the next walk the whole alias budget again: the linter, the planner and the
    /// suggestions each read the same parse, and one's walks must not starve the next.
    pub fn reset_budget(&self) {
        self.budget.store(self.budget_start, Ordering::Relaxed);
        self.exhausted.store(false, Ordering::Relaxed);
    }

    /// Charge `cost` to the alias budget; false (and the document marked) when it is spent.
    pub fn charge(&self, cost: usize) -> bool {
        let left = self.budget.load(Ordering::Relaxed);
        if left < cost {
            self.exhausted.store(true, Ordering::Relaxed);
            self.budget.store(0, Ordering::Relaxed);
            false
        } else {
            self.budget.store(left - cost, Ordering::Relaxed);
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

    /// The key under which `node` sits in its parent mapping.
    pub fn key_of(&self, node: NodeId) -> Option<NodeId> {
        let parent = self.node(node).parent?;
        match &self.node(parent).kind {
            NodeKind::Mapping { entries, .. } => {
                entries.iter().find(|e| e.value == node).map(|e| e.key)
            }
            _ => None,
        }
    }

    /// Text of a mapping key, if it is a scalar.
    pub fn key_str(&self, key: NodeId) -> Option<&str> {
        self.node(key).as_scalar().map(|s| s.value.as_str())
    }
}
