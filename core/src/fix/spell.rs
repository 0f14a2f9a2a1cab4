//! How new YAML is spelled: the file's habits (indent width, dash indentation, line endings)
//! and the blocks, flow collections and scalars the writer inserts, rendered in them. Apart
//! from the writer so that where edits go and what they say can each be read alone.

use std::collections::BTreeMap;

use crate::rules::Literal;
use crate::source::SourceFile;
use crate::yaml::{self, Document, NodeKind, Plain, ScalarStyle};

/// A value of a mapping the writer adds as a sequence item.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Lit(Literal),
    /// `{}` (`emptyDir: {}`).
    EmptyMap,
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Field::Lit(l) => f.write_str(&render_scalar(l, ScalarStyle::Plain)),
            Field::EmptyMap => f.write_str("{}"),
        }
    }
}

/// `{name: tmp, emptyDir: {}}`
pub fn render_flow_map(fields: &[(String, Field)]) -> String {
    let inner: Vec<String> = fields.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("{{{}}}", inner.join(", "))
}

/// The file's formatting habits, so generated YAML looks like its neighbours.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub indent: usize,
    /// Columns between a key and the dashes of its block sequence (0 or the indent).
    pub dash: usize,
    pub nl: &'static str,
}

pub fn detect_style(file: &SourceFile, docs: &[Document]) -> Style {
    let mut indents: BTreeMap<usize, usize> = BTreeMap::new();
    let mut dashes: BTreeMap<usize, usize> = BTreeMap::new();
    let col = |offset: usize| file.byte_column(offset);
    for doc in docs {
        for (_, node) in doc.nodes() {
            let NodeKind::Mapping {
                entries,
                flow: false,
            } = &node.kind
            else {
                continue;
            };
            for e in entries {
                let key_col = col(doc.node(e.key).range.start());
                let value = doc.node(e.value);
                match &value.kind {
                    NodeKind::Mapping {
                        entries: inner,
                        flow: false,
                    } if !inner.is_empty() => {
                        let child = col(doc.node(inner[0].key).range.start());
                        if child > key_col
                            && file.lines.line_of(value.range.start())
                                != file.lines.line_of(doc.node(e.key).range.start())
                        {
                            *indents.entry(child - key_col).or_default() += 1;
                        }
                    }
                    NodeKind::Sequence { flow: false, .. } => {
                        let dash = col(value.range.start());
                        if dash >= key_col {
                            *dashes.entry(dash - key_col).or_default() += 1;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    let most = |m: &BTreeMap<usize, usize>, default: usize| {
        m.iter()
            .max_by_key(|(k, n)| (**n, std::cmp::Reverse(**k)))
            .map_or(default, |(k, _)| *k)
    };
    let indent = most(&indents, 2).clamp(1, 8);
    Style {
        indent,
        dash: most(&dashes, indent),
        nl: file.line_ending(),
    }
}

/// Keys to create under one existing node, merged from several needs.
#[derive(Debug, Default, Clone)]
pub(super) struct Tree {
    pub(super) keys: Vec<(String, Value)>,
}

#[derive(Debug, Clone)]
pub(super) enum Value {
    Scalar(Literal),
    Items(Vec<String>),
    Maps(Vec<Vec<(String, Field)>>),
    Map(Tree),
}

impl Tree {
    pub(super) fn insert(&mut self, path: &[String], leaf: Value) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        let pos = self.keys.iter().position(|(k, _)| k == first);
        if rest.is_empty() {
            match pos {
                Some(i) => {
                    if let (Value::Items(have), Value::Items(more)) = (&mut self.keys[i].1, &leaf) {
                        have.extend(
                            more.iter()
                                .filter(|m| !have.contains(m))
                                .cloned()
                                .collect::<Vec<_>>(),
                        );
                    } else if let (Value::Maps(have), Value::Maps(more)) =
                        (&mut self.keys[i].1, &leaf)
                    {
                        have.extend(
                            more.iter()
                                .filter(|m| !have.contains(m))
                                .cloned()
                                .collect::<Vec<_>>(),
                        );
                    } else {
                        self.keys[i].1 = leaf;
                    }
                }
                None => self.keys.push((first.clone(), leaf)),
            }
            return;
        }
        let i = match pos {
            Some(i) => i,
            None => {
                self.keys.push((first.clone(), Value::Map(Tree::default())));
                self.keys.len() - 1
            }
        };
        if let Value::Map(sub) = &mut self.keys[i].1 {
            sub.insert(rest, leaf);
        }
    }

    pub(super) fn sorted(&self, order: &[&str]) -> Vec<&(String, Value)> {
        let mut keys: Vec<&(String, Value)> = self.keys.iter().collect();
        keys.sort_by_key(|(k, _)| order.iter().position(|o| o == k).unwrap_or(order.len()));
        keys
    }
}

/// `- k: v` then the other keys two columns in, starting at column `dash`.
pub(super) fn render_map_item(fields: &[(String, Field)], dash: usize, nl: &str) -> String {
    let mut out = String::new();
    for (i, (k, v)) in fields.iter().enumerate() {
        let lead = if i == 0 {
            format!("{}- ", " ".repeat(dash))
        } else {
            " ".repeat(dash + 2)
        };
        out += &format!("{lead}{k}: {v}{nl}");
    }
    out
}

pub(super) fn render_block(tree: &Tree, indent: usize, style: Style, order: &[&str]) -> String {
    let mut out = String::new();
    let pad = " ".repeat(indent);
    for (key, value) in tree.sorted(order) {
        match value {
            Value::Scalar(v) => {
                out += &format!(
                    "{pad}{key}: {}{}",
                    render_scalar(v, ScalarStyle::Plain),
                    style.nl
                );
            }
            Value::Items(items) => {
                out += &format!("{pad}{key}:{}", style.nl);
                for item in items {
                    out += &format!(
                        "{}- {}{}",
                        " ".repeat(indent + style.dash),
                        render_scalar(&Literal::Str(item.clone()), ScalarStyle::Plain),
                        style.nl
                    );
                }
            }
            Value::Maps(maps) => {
                out += &format!("{pad}{key}:{}", style.nl);
                for m in maps {
                    out += &render_map_item(m, indent + style.dash, style.nl);
                }
            }
            Value::Map(sub) => {
                out += &format!("{pad}{key}:{}", style.nl);
                out += &render_block(sub, indent + style.indent, style, order);
            }
        }
    }
    out
}

/// `[A, B]`
pub(super) fn render_flow_items(items: &[String]) -> String {
    let items: Vec<String> = items
        .iter()
        .map(|i| render_scalar(&Literal::Str(i.clone()), ScalarStyle::Plain))
        .collect();
    format!("[{}]", items.join(", "))
}

pub(super) fn render_flow_entries(tree: &Tree, order: &[&str]) -> String {
    tree.sorted(order)
        .iter()
        .map(|(key, value)| match value {
            Value::Scalar(v) => format!("{key}: {}", render_scalar(v, ScalarStyle::Plain)),
            Value::Items(items) => format!("{key}: {}", render_flow_items(items)),
            Value::Maps(maps) => format!(
                "{key}: [{}]",
                maps.iter()
                    .map(|m| render_flow_map(m))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Value::Map(sub) => format!("{key}: {{{}}}", render_flow_entries(sub, order)),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A literal as YAML, in the quoting style of the value it replaces where that is possible.
pub(super) fn render_scalar(value: &Literal, like: ScalarStyle) -> String {
    match value {
        Literal::Bool(b) => b.to_string(),
        Literal::Int(i) => i.to_string(),
        Literal::Str(s) => {
            let plain_ok = !s.is_empty()
                && matches!(yaml::resolve_plain(s), Plain::Str(_))
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/' | '.'))
                && !s.starts_with(['-', '.']);
            match like {
                ScalarStyle::SingleQuoted => format!("'{}'", s.replace('\'', "''")),
                ScalarStyle::DoubleQuoted => {
                    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
                }
                _ if plain_ok => s.clone(),
                _ => format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")),
            }
        }
    }
}
