//! Fixes for findings on rendered output, written where the user edits: a chart's values file
//! or template, a Kustomize resource or patch, or a new patch in an overlay.
//!
//! A planner per tool proposes [`SourceFix`]es from the placed findings of one root variant;
//! the shell applies a proposal to a scratch copy, renders again, and keeps it only if
//! [`confirm`] accepts the second render. A finding that gets no fix gets a [`NoSourceFix`]
//! saying what the chart or overlay would need. Proposals are byte edits on the files as read,
//! so every byte outside an edit stays, as in plain files.

use std::collections::BTreeMap;

use crate::fix::Edit;
use crate::lint::Finding;
use crate::rules::Applicability;

/// The finding of a render that a source fix resolves, by what survives a second render: the
/// rule, the root and variant, the rendered object and field, and the container.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RenderedFinding {
    pub rule: String,
    pub root: String,
    pub variant: String,
    /// `kind/namespace/name` of the rendered object.
    pub object: Option<String>,
    /// The field's path in the rendered object, as [`crate::lint::RenderSite::field`].
    pub field: Option<String>,
    pub container: Option<String>,
}

impl RenderedFinding {
    /// The key of a finding placed from a render; `None` for a finding on a plain file.
    pub fn of(f: &Finding) -> Option<Self> {
        let site = f.render.as_ref()?;
        Some(Self {
            rule: f.rule.clone(),
            root: site.root.clone(),
            variant: site.variant.clone(),
            object: f.object.as_ref().map(|o| {
                format!(
                    "{}/{}/{}",
                    o.kind,
                    o.namespace.as_deref().unwrap_or(""),
                    o.name.as_deref().unwrap_or("")
                )
            }),
            field: site.field.clone(),
            container: f.container.clone(),
        })
    }
}

/// What a source fix does to one repository file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileChange {
    /// Byte edits on the file as it was read.
    Edit(Vec<Edit>),
    /// A file that does not exist yet (a new overlay patch), whole.
    Create(String),
}

/// One fix, written in repository files, for findings of one rendered root variant.
#[derive(Debug, Clone)]
pub struct SourceFix {
    pub resolves: Vec<RenderedFinding>,
    /// Repository-relative path → what changes there.
    pub changes: BTreeMap<String, FileChange>,
    pub applicability: Applicability,
    /// For people: "set securityContext.runAsNonRoot: true in values.yaml".
    pub description: String,
}

/// Why a finding of a render gets no automatic fix, and what would make one possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoSourceFix {
    pub finding: RenderedFinding,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("{path}: two fixes edit the same bytes")]
    Overlap { path: String },
    #[error("{path}: an edit lies outside the file")]
    OutOfRange { path: String },
    #[error("{path}: the file to change cannot be read")]
    Unreadable { path: String },
    #[error("{path}: the file to create exists, or two fixes create it")]
    Exists { path: String },
}

/// The texts of every file `fixes` change, with all of them applied; `read` gives a
/// repository file's text (`None` when there is no such file). All or nothing: an overlap
/// between two fixes is an error, never a half-applied file.
pub fn apply(
    fixes: &[&SourceFix],
    read: &dyn Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, String>, ApplyError> {
    let mut edits: BTreeMap<&str, Vec<&Edit>> = BTreeMap::new();
    let mut created: BTreeMap<String, String> = BTreeMap::new();
    // Two fixes inserting different text at one place would both be written (two
    // `securityContext` blocks for overlays that each fixed a shared base a little
    // differently): that is an overlap too. The same insertion is one edit.
    let mut inserted: BTreeMap<(&str, usize), (usize, &str)> = BTreeMap::new();
    for (i, fix) in fixes.iter().enumerate() {
        for (path, change) in &fix.changes {
            match change {
                FileChange::Edit(e) => {
                    for edit in e.iter().filter(|e| e.range.is_empty()) {
                        let at = (path.as_str(), edit.range.start());
                        match inserted.get(&at) {
                            Some(&(j, text)) if j != i && text != edit.content => {
                                return Err(ApplyError::Overlap { path: path.clone() });
                            }
                            Some(_) => {}
                            None => {
                                inserted.insert(at, (i, &edit.content));
                            }
                        }
                    }
                    edits.entry(path).or_default().extend(e)
                }
                FileChange::Create(text) => {
                    if read(path).is_some() || created.contains_key(path) {
                        return Err(ApplyError::Exists { path: path.clone() });
                    }
                    created.insert(path.clone(), text.clone());
                }
            }
        }
    }
    let mut out = created;
    for (path, mut list) in edits {
        let err = |f: fn(String) -> ApplyError| f(path.to_string());
        if out.contains_key(path) {
            return Err(err(|path| ApplyError::Exists { path }));
        }
        let text = read(path).ok_or_else(|| err(|path| ApplyError::Unreadable { path }))?;
        list.sort();
        list.dedup();
        let mut new = String::with_capacity(text.len());
        let mut at = 0;
        for e in list {
            let (start, end) = (e.range.start(), e.range.end());
            if start < at {
                return Err(err(|path| ApplyError::Overlap { path }));
            }
            if end > text.len() || !text.is_char_boundary(start) || !text.is_char_boundary(end) {
                return Err(err(|path| ApplyError::OutOfRange { path }));
            }
            new.push_str(&text[at..start]);
            new.push_str(&e.content);
            at = end;
        }
        new.push_str(&text[at..]);
        out.insert(path.to_string(), new);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::TextRange;

    fn fix(path: &str, change: FileChange) -> SourceFix {
        SourceFix {
            resolves: Vec::new(),
            changes: BTreeMap::from([(path.to_string(), change)]),
            applicability: Applicability::Safe,
            description: String::new(),
        }
    }

    #[test]
    fn edits_of_two_fixes_merge_and_keep_every_other_byte() {
        let read = |p: &str| (p == "values.yaml").then(|| "a: 1 # keep\nb: 2\n".to_string());
        let one = fix(
            "values.yaml",
            FileChange::Edit(vec![Edit::replacement(TextRange::new(3, 4), "9")]),
        );
        let two = fix(
            "values.yaml",
            FileChange::Edit(vec![Edit::insertion(17, "c: 3\n")]),
        );
        let new = fix("patch.yaml", FileChange::Create("x: 1\n".into()));
        let out = apply(&[&one, &two, &new], &read).unwrap();
        assert_eq!(out["values.yaml"], "a: 9 # keep\nb: 2\nc: 3\n");
        assert_eq!(out["patch.yaml"], "x: 1\n");
    }

    #[test]
    fn overlapping_fixes_are_refused_whole() {
        let read = |_: &str| Some("abcdef".to_string());
        let one = fix(
            "f",
            FileChange::Edit(vec![Edit::replacement(TextRange::new(1, 4), "x")]),
        );
        let two = fix(
            "f",
            FileChange::Edit(vec![Edit::replacement(TextRange::new(2, 3), "y")]),
        );
        assert_eq!(
            apply(&[&one, &two], &read),
            Err(ApplyError::Overlap { path: "f".into() })
        );
        // Different insertions of two fixes at one place overlap; the same one is one edit.
        let at = |text: &str| fix("f", FileChange::Edit(vec![Edit::insertion(3, text)]));
        let (a, b, a2) = (at("x: 1\n"), at("y: 2\n"), at("x: 1\n"));
        assert_eq!(
            apply(&[&a, &b], &read),
            Err(ApplyError::Overlap { path: "f".into() })
        );
        assert_eq!(apply(&[&a, &a2], &read).unwrap()["f"], "abcx: 1\ndef");
        let create = fix("f", FileChange::Create("z".into()));
        assert_eq!(
            apply(&[&create], &read),
            Err(ApplyError::Exists { path: "f".into() })
        );
    }
}
