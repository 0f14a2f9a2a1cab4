//! From saphyr's events to the arena tree, with every range recomputed from the source text
//! (saphyr's spans are in characters and run past quoted and block scalars), and the limits on
//! size, depth and alias expansion enforced as the tree grows.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize};

use saphyr_parser::{Event, Parser, ScalarStyle as SaphyrStyle};

use crate::source::TextRange;

use super::Limits;
use super::tree::*;

/// Byte offset of the first `---` line after `offset`.
pub(super) fn next_document_start(text: &str, offset: usize) -> Option<usize> {
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

pub(super) fn find_comments(text: &str, scalars: &[TextRange]) -> Vec<TextRange> {
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

pub(super) struct Builder<'t, 's> {
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
    pub(super) fn new(
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
    pub(super) fn run(mut self) -> Option<usize> {
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
            budget: AtomicUsize::new(self.limits.alias_budget + 10 * nodes_len),
            budget_start: self.limits.alias_budget + 10 * nodes_len,
            exhausted: AtomicBool::new(false),
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
                    // An empty item of a block sequence sits after its own dash, not at the end
                    // of the item before it: a collection must end past every line it has.
                    let in_block_seq = d.stack.last().is_some_and(|f| {
                        matches!(
                            d.nodes[f.node as usize].kind,
                            NodeKind::Sequence { flow: false, .. }
                        )
                    });
                    let after_dash = gap.dash.filter(|_| in_block_seq).map(|i| i + 1);
                    let at = gap
                        .anchor
                        .or(gap.tag)
                        .map(|r| r.end())
                        .or(after_dash)
                        .unwrap_or(self.last_end);
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
