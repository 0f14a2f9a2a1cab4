//! A document as a plan would leave it: the planned needs laid over the written values, so the
//! Kubernetes constraints can be checked before a single edit is written. It reads paths the
//! way the writer walks them (aliases and `<<` merges followed), and needs are rebased onto
//! the node they change, so a value is found where the writer would put it.

use crate::constraints::{Looked, Value, View, value_of};
use crate::rules::Literal;
use crate::yaml::{Document, NodeId};

use super::need::Need;
use super::write::Action;

pub(super) struct Overlay<'a> {
    pub doc: &'a Document,
    pub doc_index: usize,
    pub needs: &'a [Need],
}

fn literal(v: &Literal) -> Value {
    match v {
        Literal::Bool(b) => Value::Bool(*b),
        Literal::Int(i) => Value::Int(*i),
        Literal::Str(s) => Value::Str(s.clone()),
    }
}

impl Overlay<'_> {
    fn needs(&self) -> impl Iterator<Item = (usize, &Need)> {
        self.needs
            .iter()
            .enumerate()
            .filter(|(_, n)| n.doc == self.doc_index)
    }

    /// What needs based at `node` with exactly the path `rest` make of the value there.
    fn planned_at(&self, node: NodeId, rest: &[&str], mut under: Looked) -> Looked {
        for (i, n) in self.needs() {
            if n.base != node || !n.path.iter().map(String::as_str).eq(rest.iter().copied()) {
                continue;
            }
            match &n.action {
                Action::Set(v) => {
                    under.value = literal(v);
                    under.by.push(i);
                }
                Action::AddItem(item) => {
                    let mut items = match std::mem::replace(&mut under.value, Value::Unset) {
                        Value::List(items) => items,
                        _ => Vec::new(),
                    };
                    if !items.iter().any(|x| x.eq_ignore_ascii_case(item)) {
                        items.push(item.clone());
                    }
                    under.value = Value::List(items);
                    under.by.push(i);
                }
                _ => {}
            }
        }
        under
    }

    /// The written value of `node` less the entries and items the plan removes.
    fn written(&self, node: NodeId, entry_key: NodeId) -> Looked {
        let doc = self.doc;
        let mut looked = Looked::written(value_of(doc, node));
        for (i, n) in self.needs() {
            match &n.action {
                Action::RemoveEntry(e) if e.key == entry_key => {
                    looked.value = Value::Unset;
                    looked.by.push(i);
                }
                Action::RemoveItem(item) if doc.items(node).contains(item) => {
                    if let (Value::List(items), Some(text)) =
                        (&mut looked.value, doc.str_value(*item))
                    {
                        if let Some(at) = items.iter().position(|x| x == text) {
                            items.remove(at);
                        }
                        looked.by.push(i);
                    }
                }
                _ => {}
            }
        }
        looked
    }
}

impl View for Overlay<'_> {
    fn doc(&self) -> &Document {
        self.doc
    }

    fn value(&self, node: NodeId, path: &[&str]) -> Looked {
        let doc = self.doc;
        let Some(mut node) = doc.resolve(node) else {
            return Looked::written(Value::Unset);
        };
        for i in 0..path.len() {
            let rest = &path[i..];
            let entry = doc
                .is_mapping(node)
                .then(|| doc.entry(node, path[i]))
                .flatten();
            let Some(e) = entry else {
                // Missing here: only what the plan inserts at this node counts.
                return self.planned_at(node, rest, Looked::written(Value::Unset));
            };
            let holder = doc.node(e.key).parent.unwrap_or(node);
            let Some(value) = doc.resolve(e.value) else {
                return Looked::written(Value::Unset);
            };
            let last = i + 1 == path.len();
            if last || doc.is_null(value) || !doc.is_mapping(value) {
                let under = if last {
                    self.written(value, e.key)
                } else {
                    Looked::written(Value::Unset)
                };
                // Needs for a missing or null key are based at the mapping holding it.
                let under = self.planned_at(holder, rest, under);
                return if holder == node {
                    under
                } else {
                    self.planned_at(node, rest, under)
                };
            }
            node = value;
        }
        Looked::written(Value::Unset)
    }
}
