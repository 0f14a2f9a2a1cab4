//! Format-preserving YAML writing: given a node and a path below it, set a scalar, add a
//! sequence item (a scalar or a mapping), remove an entry or an item, or append to a scalar,
//! with the smallest edits, in the file's own style (`spell`: indent width, dash indentation,
//! line endings, flow or block). It
//! knows YAML, not Kubernetes: which edits to make is the planner's and the policy's business.

use std::collections::{BTreeMap, BTreeSet};

use crate::rules::Literal;
use crate::source::{SourceFile, TextRange};
use crate::yaml::{Document, Entry, NodeId, NodeKind, ScalarStyle};

use super::Edit;
pub use super::spell::{Field, Style, detect_style, render_flow_map};
use super::spell::{
    Tree, Value, render_block, render_flow_entries, render_flow_items, render_map_item,
    render_scalar,
};

/// What to do at the end of a path.
#[derive(Debug, Clone)]
pub enum Action {
    Set(Literal),
    AddItem(String),
    RemoveEntry(Entry),
    RemoveItem(NodeId),
    /// Append text to a scalar's value (inside its quotes).
    Append(NodeId, String),
    /// Add a mapping as an item of the sequence (creating it when missing): a volume, a
    /// volume mount.
    AddMap(Vec<(String, Field)>),
}

/// Where new keys go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Anchor {
    /// Into an existing mapping.
    Map(NodeId),
    /// Under a key whose value is null (`securityContext:`).
    Null(NodeId),
}

pub struct Writer<'a> {
    text: &'a str,
    file: &'a SourceFile,
    doc: &'a Document,
    style: Style,
    /// The order of keys in a mapping this writer creates, as people usually write them.
    order: &'a [&'a str],
    pub edits: Vec<Edit>,
    /// Nodes the edits change, for the anchor note.
    pub touched: Vec<NodeId>,
    inserts: BTreeMap<Anchor, Tree>,
    /// Entries or items to remove, by the collection that holds them.
    removals: BTreeMap<NodeId, BTreeSet<usize>>,
    /// The same, once the removals are written, for insertions into the same collections.
    removed: BTreeMap<NodeId, BTreeSet<usize>>,
    /// Items for the end of flow sequences, written once per sequence so that several join
    /// with commas (`[]` → `[a, b]`).
    flow_items: BTreeMap<NodeId, Vec<String>>,
}

impl<'a> Writer<'a> {
    pub fn new(
        file: &'a SourceFile,
        doc: &'a Document,
        style: Style,
        order: &'a [&'a str],
    ) -> Self {
        Writer {
            text: &file.text,
            file,
            doc,
            style,
            order,
            edits: Vec::new(),
            touched: Vec::new(),
            inserts: BTreeMap::new(),
            removals: BTreeMap::new(),
            removed: BTreeMap::new(),
            flow_items: BTreeMap::new(),
        }
    }
}

enum Walk {
    Found(Entry, NodeId),
    Missing(Anchor, Vec<String>),
    Blocked,
}

impl Writer<'_> {
    /// Walk `path` from `base` as far as mappings exist.
    fn walk(&self, base: NodeId, path: &[String]) -> Walk {
        let doc = self.doc;
        // No path: the base is the value itself (an annotation's value), under its own key.
        if path.is_empty() {
            return match (doc.key_of(base), doc.resolve(base)) {
                (Some(key), Some(value)) => Walk::Found(Entry { key, value: base }, value),
                _ => Walk::Blocked,
            };
        }
        let Some(mut node) = doc.resolve(base) else {
            return Walk::Blocked;
        };
        for (i, key) in path.iter().enumerate() {
            if !doc.is_mapping(node) {
                return Walk::Blocked;
            }
            match doc.entry(node, key) {
                Some(e) => {
                    let Some(value) = doc.resolve(e.value) else {
                        return Walk::Blocked;
                    };
                    if i + 1 == path.len() {
                        return Walk::Found(e, value);
                    }
                    if doc.is_null(value) {
                        return Walk::Missing(Anchor::Null(e.key), path[i + 1..].to_vec());
                    }
                    node = value;
                }
                None => return Walk::Missing(Anchor::Map(node), path[i..].to_vec()),
            }
        }
        Walk::Blocked
    }

    /// Plan the edits for `action` at `path` below `base`; false when nothing can be written
    /// there (a block scalar, a path through a non-mapping).
    pub fn apply(&mut self, base: NodeId, path: &[String], action: &Action) -> bool {
        match action {
            Action::Set(value) => match self.walk(base, path) {
                Walk::Found(e, v) if self.doc.is_null(v) => {
                    self.set_null(e, value);
                    true
                }
                Walk::Found(_, v) => self.replace_scalar(v, value),
                Walk::Missing(anchor, rest) => {
                    self.inserts
                        .entry(anchor)
                        .or_default()
                        .insert(&rest, Value::Scalar(value.clone()));
                    true
                }
                Walk::Blocked => false,
            },
            Action::AddItem(item) => match self.walk(base, path) {
                Walk::Found(e, v) if self.doc.is_null(v) => {
                    self.inserts
                        .entry(Anchor::Null(e.key))
                        .or_default()
                        .keys
                        .push((String::new(), Value::Items(vec![item.clone()])));
                    true
                }
                Walk::Found(_, v) if self.doc.is_sequence(v) => self.add_item(v, item),
                Walk::Found(..) | Walk::Blocked => false,
                Walk::Missing(anchor, rest) => {
                    self.inserts
                        .entry(anchor)
                        .or_default()
                        .insert(&rest, Value::Items(vec![item.clone()]));
                    true
                }
            },
            Action::AddMap(fields) => match self.walk(base, path) {
                Walk::Found(e, v) if self.doc.is_null(v) => {
                    let tree = self.inserts.entry(Anchor::Null(e.key)).or_default();
                    match tree.keys.iter_mut().find(|(k, _)| k.is_empty()) {
                        Some((_, Value::Maps(have))) => have.push(fields.clone()),
                        _ => tree
                            .keys
                            .push((String::new(), Value::Maps(vec![fields.clone()]))),
                    }
                    true
                }
                Walk::Found(_, v) if self.doc.is_sequence(v) => self.add_map(v, fields),
                Walk::Found(..) | Walk::Blocked => false,
                Walk::Missing(anchor, rest) => {
                    self.inserts
                        .entry(anchor)
                        .or_default()
                        .insert(&rest, Value::Maps(vec![fields.clone()]));
                    true
                }
            },
            Action::RemoveEntry(e) => self.remove_entry(*e),
            Action::RemoveItem(i) => self.remove_item(*i),
            Action::Append(node, text) => self.append_to_scalar(*node, text),
        }
    }

    /// `image: nginx:1.27` → `image: nginx:1.27@sha256:…`, inside the quotes of a quoted
    /// scalar; block scalars are left alone.
    fn append_to_scalar(&mut self, node: NodeId, text: &str) -> bool {
        let Some(s) = self.doc.node(node).as_scalar() else {
            return false;
        };
        if s.style.is_block() {
            return false;
        }
        let range = self.doc.node(node).range;
        let raw = range.slice(self.text);
        let quoted = raw.len() >= 2 && (raw.ends_with('"') || raw.ends_with('\''));
        let at = if quoted { range.end() - 1 } else { range.end() };
        self.edits.push(Edit::insertion(at, text.to_string()));
        self.touched.push(node);
        true
    }

    fn col(&self, offset: usize) -> usize {
        self.file.byte_column(offset)
    }

    fn line_start(&self, offset: usize) -> usize {
        self.file.line_start_of(offset)
    }

    /// Offset just after the line break that ends the line holding `offset`, or the end of the
    /// text (then `false`: there is no line break to insert after).
    fn next_line(&self, offset: usize) -> (usize, bool) {
        match self.text[offset..].find('\n') {
            Some(i) => (offset + i + 1, true),
            None => (self.text.len(), false),
        }
    }

    fn replace_scalar(&mut self, node: NodeId, value: &Literal) -> bool {
        let Some(s) = self.doc.node(node).as_scalar() else {
            return false;
        };
        if s.style.is_block() {
            return false;
        }
        let rendered = render_scalar(value, s.style);
        let range = self.doc.node(node).range;
        if range.slice(self.text) == rendered {
            return false;
        }
        self.edits.push(Edit::replacement(range, rendered));
        self.touched.push(node);
        true
    }

    /// `key:` with nothing, `~` or `null` after it: write the value after the colon.
    fn set_null(&mut self, e: Entry, value: &Literal) {
        let v = self.doc.node(e.value).range;
        let rendered = render_scalar(value, ScalarStyle::Plain);
        if v.is_empty() {
            let key_end = self.doc.node(e.key).range.end();
            // `key:` gets a value after its colon; a bare flow key (`{key, other: 1}`) gets both.
            let edit = match self.colon_after(key_end) {
                Some(colon) => Edit::insertion(colon + 1, format!(" {rendered}")),
                None => Edit::insertion(key_end, format!(": {rendered}")),
            };
            self.edits.push(edit);
        } else {
            self.edits.push(Edit::replacement(v, rendered));
        }
        self.touched.push(e.value);
    }

    /// The `:` that follows a key, if it directly does (a bare key in a flow mapping has none).
    fn colon_after(&self, key_end: usize) -> Option<usize> {
        let rest = &self.text[key_end..];
        let trimmed = rest.trim_start_matches([' ', '\t']);
        trimmed
            .starts_with(':')
            .then(|| key_end + (rest.len() - trimmed.len()))
    }

    fn add_item(&mut self, seq: NodeId, item: &str) -> bool {
        let node = self.doc.node(seq);
        let NodeKind::Sequence { items, flow } = &node.kind else {
            return false;
        };
        let rendered = render_scalar(&Literal::Str(item.to_string()), ScalarStyle::Plain);
        // `drop: [all]` becomes `drop: [ALL]`: the same word in the case the check wants.
        if let Some(&same) = items.iter().find(|&&i| {
            self.doc
                .str_value(i)
                .is_some_and(|v| v.eq_ignore_ascii_case(item))
        }) {
            return self.replace_scalar(same, &Literal::Str(item.to_string()));
        }
        if *flow {
            self.flow_items.entry(seq).or_default().push(rendered);
        } else {
            let dash_col = self.col(node.range.start());
            let (at, had_nl) = self.next_line(self.block_end(seq));
            let line = format!("{}- {rendered}", " ".repeat(dash_col));
            self.edits
                .push(insert_line(at, had_nl, &line, self.style.nl));
        }
        self.touched.push(seq);
        true
    }

    /// A mapping as a new last item: `- name: tmp` and its other keys below, at the dash
    /// column of the existing items (or `{name: tmp, …}` in a flow sequence).
    fn add_map(&mut self, seq: NodeId, fields: &[(String, Field)]) -> bool {
        let node = self.doc.node(seq);
        let NodeKind::Sequence { flow, .. } = &node.kind else {
            return false;
        };
        if fields.is_empty() {
            return false;
        }
        if *flow {
            self.flow_items
                .entry(seq)
                .or_default()
                .push(render_flow_map(fields));
        } else {
            let dash_col = self.col(node.range.start());
            let (at, had_nl) = self.next_line(self.block_end(seq));
            let block = render_map_item(fields, dash_col, self.style.nl);
            self.edits
                .push(insert_block(at, had_nl, &block, self.style.nl));
        }
        self.touched.push(seq);
        true
    }

    fn remove_entry(&mut self, e: Entry) -> bool {
        let Some(map) = self.doc.node(e.key).parent else {
            return false;
        };
        let NodeKind::Mapping { entries, .. } = &self.doc.node(map).kind else {
            return false;
        };
        let Some(index) = entries.iter().position(|x| x.key == e.key) else {
            return false;
        };
        self.removals.entry(map).or_default().insert(index);
        true
    }

    fn remove_item(&mut self, item: NodeId) -> bool {
        let Some(seq) = self.doc.node(item).parent else {
            return false;
        };
        let NodeKind::Sequence { items, flow } = &self.doc.node(seq).kind else {
            return false;
        };
        let Some(index) = items.iter().position(|&i| i == item) else {
            return false;
        };
        if !flow {
            let range = self.doc.node(item).range;
            let line = self.line_start(range.start());
            // Only an item that starts its own line (`- X`) is removed with its line.
            if self.text[line..range.start()].trim() != "-" {
                return false;
            }
        }
        self.removals.entry(seq).or_default().insert(index);
        true
    }

    /// Remove the collected entries or items of each collection together, so that neighbours'
    /// separators are handled once.
    fn flush_removals(&mut self) {
        let mut removals = std::mem::take(&mut self.removals);
        // A block sequence losing every item goes with its key: a bare `add:` is null, which
        // reads as "unset" to some tools and as an error to strict ones. (A flow one becomes
        // `[]`; an anchored one stays, as its aliases need it.)
        let emptied: Vec<NodeId> = removals
            .iter()
            .filter(|(seq, indices)| {
                let node = self.doc.node(**seq);
                matches!(&node.kind, NodeKind::Sequence { items, flow: false } if items.len() == indices.len())
                    && node.anchor.is_none()
            })
            .map(|(seq, _)| *seq)
            .collect();
        for seq in emptied {
            let Some(map) = self.doc.node(seq).parent else {
                continue;
            };
            let NodeKind::Mapping { entries, .. } = &self.doc.node(map).kind else {
                continue;
            };
            if let Some(index) = entries.iter().position(|e| e.value == seq) {
                removals.remove(&seq);
                removals.entry(map).or_default().insert(index);
            }
        }
        self.removed = removals.clone();
        for (parent, indices) in removals {
            let doc = self.doc;
            let node = doc.node(parent);
            // (start of the element, end of the element) in source order.
            let spans: Vec<(usize, usize)> = match &node.kind {
                NodeKind::Mapping { entries, .. } => entries
                    .iter()
                    .map(|e| {
                        let key = doc.node(e.key).range;
                        (key.start(), doc.node(e.value).range.end().max(key.end()))
                    })
                    .collect(),
                NodeKind::Sequence { items, .. } => items
                    .iter()
                    .map(|&i| {
                        let r = doc.node(i).range;
                        (r.start(), r.end())
                    })
                    .collect(),
                _ => continue,
            };
            if node.is_flow() {
                self.remove_flow(&spans, &indices);
            } else {
                self.remove_block(parent, &spans, &indices);
            }
            self.touched.push(parent);
        }
    }

    fn remove_flow(&mut self, spans: &[(usize, usize)], removed: &BTreeSet<usize>) {
        let mut i = 0;
        while i < spans.len() {
            if !removed.contains(&i) {
                i += 1;
                continue;
            }
            let run_start = i;
            while i < spans.len() && removed.contains(&i) {
                i += 1;
            }
            let run_end = i; // exclusive
            let range = if run_end < spans.len() {
                // Up to the next kept element: takes the separators along.
                TextRange::new(spans[run_start].0, spans[run_end].0)
            } else if run_start > 0 {
                // At the end: from the previous kept element's end.
                TextRange::new(spans[run_start - 1].1, spans[run_end - 1].1)
            } else {
                // Everything goes: `[a, b]` becomes `[]`.
                TextRange::new(spans[0].0, spans[spans.len() - 1].1)
            };
            self.edits.push(Edit::deletion(range));
        }
    }

    fn remove_block(
        &mut self,
        parent: NodeId,
        spans: &[(usize, usize)],
        removed: &BTreeSet<usize>,
    ) {
        let is_map = matches!(self.doc.node(parent).kind, NodeKind::Mapping { .. });
        let refilled = self.inserts.contains_key(&Anchor::Map(parent));
        let emptied = is_map && removed.len() == spans.len() && !refilled;
        // `securityContext:` losing its only key reads best as `securityContext: {}`.
        if emptied
            && self.doc.node(parent).anchor.is_none()
            && let Some(key) = self.doc.key_of(parent)
            && let Some(colon) = self.colon_after(self.doc.node(key).range.end())
        {
            let end = spans[spans.len() - 1].1;
            self.edits
                .push(Edit::replacement(TextRange::new(colon + 1, end), " {}"));
            return;
        }
        for &i in removed {
            let (start, end) = spans[i];
            let line = self.line_start(start);
            let alone = self.text[line..start].trim().is_empty() || !is_map;
            if emptied && i == 0 {
                // A mapping that loses every entry stays a mapping (`{}`), not null: an anchor
                // on it may be merged with `<<`, which takes only mappings.
                self.edits
                    .push(Edit::replacement(TextRange::new(start, end), "{}"));
            } else if alone {
                let (next, _) = self.next_line(end);
                self.edits.push(Edit::deletion(TextRange::new(line, next)));
            } else if let Some(&(next, _)) =
                spans.get(i + 1).filter(|_| !removed.contains(&(i + 1)))
            {
                // The key follows a `- ` on its line: keep the dash for the next key.
                self.edits.push(Edit::deletion(TextRange::new(start, next)));
            }
        }
    }

    /// Entries of a mapping that this plan keeps.
    fn kept_entries(&self, map: NodeId) -> Vec<Entry> {
        let NodeKind::Mapping { entries, .. } = &self.doc.node(map).kind else {
            return Vec::new();
        };
        let removed = self.removed.get(&map);
        entries
            .iter()
            .enumerate()
            .filter(|(i, _)| !removed.is_some_and(|r| r.contains(i)))
            .map(|(_, e)| *e)
            .collect()
    }

    /// Write the merged insertions (and the removals they depend on) into `edits`.
    pub fn flush_inserts(&mut self) {
        self.flush_removals();
        for (seq, added) in std::mem::take(&mut self.flow_items) {
            let node = self.doc.node(seq);
            let NodeKind::Sequence { items, .. } = &node.kind else {
                continue;
            };
            let joined = added.join(", ");
            let edit = match items.last() {
                Some(&last) => {
                    Edit::insertion(self.doc.node(last).range.end(), format!(", {joined}"))
                }
                None => Edit::insertion(node.range.start() + 1, joined),
            };
            self.edits.push(edit);
        }
        let inserts = std::mem::take(&mut self.inserts);
        for (anchor, tree) in inserts {
            match anchor {
                Anchor::Map(map) => self.insert_into_map(map, &tree),
                Anchor::Null(key) => self.insert_under_null(key, &tree),
            }
        }
    }

    fn insert_into_map(&mut self, map: NodeId, tree: &Tree) {
        let node = self.doc.node(map);
        let NodeKind::Mapping { entries, flow } = &node.kind else {
            return;
        };
        if *flow {
            let content = render_flow_entries(tree, self.order);
            let kept = self.kept_entries(map);
            let edit = match kept.last() {
                Some(last) => Edit::insertion(
                    self.doc
                        .node(last.value)
                        .range
                        .end()
                        .max(self.doc.node(last.key).range.end()),
                    format!(", {content}"),
                ),
                None => Edit::insertion(node.range.start() + 1, content),
            };
            self.edits.push(edit);
            self.touched.push(map);
            return;
        }
        let Some(first) = entries.first() else { return };
        let indent = self.col(self.doc.node(first.key).range.start());
        let end = self.block_end(map);
        let (at, had_nl) = self.next_line(end);
        let block = render_block(tree, indent, self.style, self.order);
        self.edits
            .push(insert_block(at, had_nl, &block, self.style.nl));
        self.touched.push(map);
    }

    fn insert_under_null(&mut self, key: NodeId, tree: &Tree) {
        let doc = self.doc;
        let Some(parent) = doc.node(key).parent else {
            return;
        };
        let value = doc
            .entry(parent, doc.key_str(key).unwrap_or_default())
            .map(|e| e.value)
            .unwrap_or(key);
        let value_range = doc.node(value).range;
        let in_flow = doc.node(parent).is_flow();
        // A bare item list under the key itself (`drop:` → `drop: [ALL]`).
        let own_items = match tree.keys.as_slice() {
            [(k, Value::Items(items))] if k.is_empty() => Some(items.clone()),
            _ => None,
        };
        let own_maps = match tree.keys.as_slice() {
            [(k, Value::Maps(maps))] if k.is_empty() => Some(maps.clone()),
            _ => None,
        };
        if in_flow {
            let content = match (&own_items, &own_maps) {
                (Some(items), _) => render_flow_items(items),
                (_, Some(maps)) => format!(
                    "[{}]",
                    maps.iter()
                        .map(|m| render_flow_map(m))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                _ => format!("{{{}}}", render_flow_entries(tree, self.order)),
            };
            let key_end = doc.node(key).range.end();
            let edit = if value_range.is_empty() {
                match self.colon_after(key_end) {
                    Some(colon) => Edit::insertion(colon + 1, format!(" {content}")),
                    None => Edit::insertion(key_end, format!(": {content}")),
                }
            } else {
                Edit::replacement(value_range, content)
            };
            self.edits.push(edit);
            self.touched.push(parent);
            return;
        }
        let key_col = self.col(doc.node(key).range.start());
        let block = match &own_items {
            None if own_maps.is_some() => own_maps
                .iter()
                .flatten()
                .map(|m| render_map_item(m, key_col + self.style.dash, self.style.nl))
                .collect::<String>(),
            Some(items) => items
                .iter()
                .map(|i| {
                    format!(
                        "{}- {}{}",
                        " ".repeat(key_col + self.style.dash),
                        render_scalar(&Literal::Str(i.clone()), ScalarStyle::Plain),
                        self.style.nl
                    )
                })
                .collect::<String>(),
            None => render_block(tree, key_col + self.style.indent, self.style, self.order),
        };
        if !value_range.is_empty() {
            // `key: ~` or `key: null`: drop the explicit null first.
            let Some(colon) = self.colon_after(doc.node(key).range.end()) else {
                return;
            };
            self.edits
                .push(Edit::deletion(TextRange::new(colon + 1, value_range.end())));
        }
        let (at, had_nl) = self.next_line(doc.node(key).range.end().max(value_range.end()));
        self.edits
            .push(insert_block(at, had_nl, &block, self.style.nl));
        self.touched.push(parent);
    }

    /// Where a block collection really ends for an insertion after it: past the blank lines
    /// that a `|+` block scalar at its very end keeps as part of its value.
    fn block_end(&self, node: NodeId) -> usize {
        let doc = self.doc;
        let end = doc.node(node).range.end();
        // The last thing written in the collection, however deeply nested.
        let mut last = node;
        loop {
            match &doc.node(last).kind {
                NodeKind::Mapping {
                    entries,
                    flow: false,
                } if !entries.is_empty() => {
                    last = entries[entries.len() - 1].value;
                }
                NodeKind::Sequence { items, flow: false } if !items.is_empty() => {
                    last = items[items.len() - 1]
                }
                _ => break,
            }
        }
        let keeps = doc
            .node(last)
            .as_scalar()
            .is_some_and(|s| s.style.is_block())
            && doc
                .node(last)
                .range
                .slice(self.text)
                .lines()
                .next()
                .is_some_and(|header| header.split('#').next().unwrap_or("").contains('+'));
        if !keeps {
            return end;
        }
        let mut pos = end;
        loop {
            let (next, had) = self.next_line(pos);
            if !had {
                return pos;
            }
            let line_end = self.text[next..]
                .find('\n')
                .map_or(self.text.len(), |i| next + i);
            if !self.text[next..line_end].trim().is_empty() {
                return pos;
            }
            if line_end == self.text.len() {
                return line_end;
            }
            pos = line_end;
        }
    }
}

/// Insert whole lines at a line start (or, at the end of a file without a final line break,
/// after a new one, without adding one at the very end).
fn insert_block(at: usize, had_nl: bool, block: &str, nl: &str) -> Edit {
    if had_nl {
        Edit::insertion(at, block.to_string())
    } else {
        let trimmed = block.strip_suffix(nl).unwrap_or(block);
        Edit::insertion(at, format!("{nl}{trimmed}"))
    }
}

fn insert_line(at: usize, had_nl: bool, line: &str, nl: &str) -> Edit {
    insert_block(at, had_nl, &format!("{line}{nl}"), nl)
}

/// When an edit lands inside an anchored node that aliases reuse, every user changes: say so.
pub fn anchor_note(doc: &Document, touched: &[NodeId], text: &str) -> Option<String> {
    let aliased: BTreeSet<NodeId> = doc
        .nodes()
        .filter_map(|(_, n)| match n.kind {
            NodeKind::Alias { target } => Some(target),
            _ => None,
        })
        .collect();
    if aliased.is_empty() {
        return None;
    }
    let mut names = BTreeSet::new();
    for &t in touched {
        let mut node = Some(t);
        while let Some(id) = node {
            if aliased.contains(&id)
                && let Some(anchor) = doc.node(id).anchor
            {
                names.insert(anchor.slice(text).to_string());
            }
            node = doc.node(id).parent;
        }
    }
    (!names.is_empty()).then(|| {
        format!(
            "this changes the anchored node {}, so every alias of it changes too",
            names.into_iter().collect::<Vec<_>>().join(", ")
        )
    })
}
