//! Rendering for a review: the head's file list from the Git Data API, the roots found in it,
//! those the change reaches rendered in a scratch directory with the server's tools (the same
//! `render_job` the command line runs), their findings placed on repository lines.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

use crate::github::{ChangedFile, RepoClient};
use crate::render_job;
use crate::renderers::{Options, Tools};
use kubeharden_core::config::Config;
use kubeharden_core::lint::Linter;
use kubeharden_core::provenance::fix::{self as source_fix, RenderedFinding, SourceFix};
use kubeharden_core::review::{RenderedChange, RootLine};
use kubeharden_core::roots::{self, Repo, Root, is_remote};
use kubeharden_core::rules::Applicability;

/// How the server renders: its tools and limits (`kubeharden serve --helm`, `--kustomize`,
/// `--render-timeout`, `--render-max-output`, `--render-concurrency`).
#[derive(Debug, Clone, Default)]
pub struct RenderSettings {
    pub tools: Tools,
    pub options: Options,
    /// Off: pull requests are linted file by file, as written.
    pub disabled: bool,
}

/// The most blobs one review fetches to find and render roots, and the most bytes.
const MAX_BLOBS: usize = 2000;
const MAX_BLOB_BYTES: u64 = 2 * 1024 * 1024;
const MAX_TOTAL_BYTES: u64 = 64 * 1024 * 1024;

/// A file of the head tree.
#[derive(Debug, Clone)]
struct Entry {
    sha: String,
    symlink: bool,
    size: Option<u64>,
}

/// Blobs of the head, fetched on demand within the bounds.
struct Head {
    entries: BTreeMap<String, Entry>,
    texts: HashMap<String, Option<String>>,
    fetched: usize,
    bytes: u64,
}

impl Head {
    /// A file's text as discovery reads it: a symbolic link is followed inside the repository
    /// (a link that leaves it reads as nothing); `None` also for a blob not fetched yet, which
    /// is recorded in `missing`.
    fn read(&self, path: &str, missing: &Mutex<BTreeSet<String>>) -> Option<String> {
        let mut path = path.to_string();
        for _ in 0..8 {
            let entry = self.entries.get(&path)?;
            let Some(text) = self.texts.get(&path) else {
                missing.lock().ok()?.insert(path);
                return None;
            };
            if !entry.symlink {
                return text.clone();
            }
            path = roots::join(roots::parent(&path), text.as_deref()?)?;
        }
        None
    }
}

/// Fetch the blobs of `paths` not fetched yet, a few at a time, within the bounds.
async fn fetch(
    client: &Arc<RepoClient>,
    head: &mut Head,
    paths: BTreeSet<String>,
    concurrency: usize,
) -> Result<()> {
    let mut wanted = Vec::new();
    for p in paths {
        if head.texts.contains_key(&p) {
            continue;
        }
        let Some(entry) = head.entries.get(&p) else {
            continue;
        };
        let size = entry.size.unwrap_or(0);
        if size > MAX_BLOB_BYTES {
            // Read as nothing: the render that needs it fails saying it cannot read it.
            head.texts.insert(p, None);
            continue;
        }
        head.fetched += 1;
        head.bytes += size;
        anyhow::ensure!(
            head.fetched <= MAX_BLOBS && head.bytes <= MAX_TOTAL_BYTES,
            "the charts and kustomizations need more than {MAX_BLOBS} files or {} MiB of the head",
            MAX_TOTAL_BYTES / 1024 / 1024
        );
        wanted.push((p, entry.sha.clone()));
    }
    let limit = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (path, sha) in wanted {
        let client = client.clone();
        let limit = limit.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let bytes = client.blob(&sha).await;
            (path, bytes)
        });
    }
    while let Some(done) = tasks.join_next().await {
        let (path, bytes) = done.context("a fetch task panicked")?;
        let bytes = bytes.with_context(|| format!("cannot fetch {path}"))?;
        head.texts.insert(path, String::from_utf8(bytes).ok());
    }
    Ok(())
}

/// Render what the change reaches and lint it; `None` when the head has no root at all.
pub(super) async fn render_change(
    cx: &super::JobContext,
    client: &Arc<RepoClient>,
    head_sha: &str,
    config: &Config,
    changed: &[ChangedFile],
    settings: kubeharden_core::lint::Settings,
) -> Result<Option<RenderedChange>> {
    if cx.render.disabled {
        return Ok(None);
    }
    let listing = client
        .tree_recursive(head_sha)
        .await
        .context("cannot list the head's files")?;
    let entries: BTreeMap<String, Entry> = listing
        .tree
        .iter()
        .filter(|e| e.kind.as_deref() == Some("blob"))
        .filter_map(|e| {
            Some((
                e.path.clone()?,
                Entry {
                    sha: e.sha.clone()?,
                    symlink: e.mode.as_deref() == Some("120000"),
                    size: e.size,
                },
            ))
        })
        .collect();
    let any_root = entries.keys().any(|p| {
        let name = roots::file_name(p);
        name == "Chart.yaml" || roots::KUSTOMIZATION_FILES.contains(&name)
    });
    if !any_root {
        return Ok(None);
    }
    let mut rendered = RenderedChange {
        patches: changed
            .iter()
            .filter_map(|f| Some((f.filename.clone(), f.patch.clone()?)))
            .collect(),
        ..RenderedChange::default()
    };
    if listing.truncated {
        rendered.note = Some("GitHub lists only part of the head's files".into());
        return Ok(Some(rendered));
    }
    let mut head = Head {
        entries,
        texts: HashMap::new(),
        fetched: 0,
        bytes: 0,
    };
    // Discovery reads a few files and, from them, more (a kustomization's bases): run it until
    // it asks for nothing new.
    let concurrency = cx.fetch_concurrency;
    let (found, problems) = loop {
        let missing = Mutex::new(BTreeSet::new());
        let result = {
            let read = |p: &str| head.read(p, &missing);
            let repo = Repo::new(head.entries.keys().cloned(), &read);
            roots::discover_with(&repo, &config.render)
        };
        let missing = missing.into_inner().unwrap_or_default();
        if missing.is_empty() {
            break result;
        }
        if let Err(e) = fetch(client, &mut head, missing, concurrency).await {
            rendered.note = Some(format!("{e:#}"));
            return Ok(Some(rendered));
        }
    };
    let changed_paths: Vec<&str> = changed.iter().map(|f| f.filename.as_str()).collect();
    let reached: Vec<Root> = found
        .into_iter()
        .filter(|r| changed_paths.iter().any(|p| r.reached_by(p)))
        .collect();
    if reached.is_empty() && problems.is_empty() {
        return Ok(None);
    }
    // The files the renders read, with the targets of links among them.
    let mut needed: BTreeSet<String> = reached
        .iter()
        .flat_map(|r| {
            r.loads
                .iter()
                .chain(r.variants.iter().flat_map(|v| &v.values_files))
        })
        .cloned()
        .collect();
    for _ in 0..8 {
        if let Err(e) = fetch(client, &mut head, needed.clone(), concurrency).await {
            rendered.note = Some(format!("{e:#}"));
            return Ok(Some(rendered));
        }
        let targets: BTreeSet<String> = needed
            .iter()
            .filter(|p| head.entries.get(*p).is_some_and(|e| e.symlink))
            .filter_map(|p| {
                let target = head.texts.get(p)?.as_deref()?;
                roots::join(roots::parent(p), target)
            })
            .filter(|t| !needed.contains(t) && head.entries.contains_key(t))
            .collect();
        if targets.is_empty() {
            break;
        }
        needed.extend(targets);
    }
    rendered.consumed = reached
        .iter()
        .flat_map(|r| r.loads.iter().cloned())
        .collect();
    let scratch = tempfile::Builder::new()
        .prefix("kubeharden-head-")
        .tempdir()
        .context("cannot create a scratch directory for the head")?;
    for path in &needed {
        let (Some(entry), Some(Some(text))) = (head.entries.get(path), head.texts.get(path)) else {
            continue;
        };
        materialise(scratch.path(), path, entry.symlink, text)?;
    }
    let texts: HashMap<String, String> = needed
        .iter()
        .filter_map(|p| {
            let text = head.read(p, &Mutex::new(BTreeSet::new()))?;
            Some((p.clone(), text))
        })
        .collect();
    let mut options = cx.render.options.clone();
    options.kube_version = settings.kube_version;
    options.kustomize_helm = config.render.enable_helm;
    let registry = cx.registry.clone();
    let lint_settings = settings;
    let settings = cx.render.clone();
    let out = tokio::task::spawn_blocking(move || {
        let linter = Linter::new(&registry, lint_settings);
        let renders = render_job::render(
            scratch.path(),
            &reached,
            &problems,
            &settings.tools,
            &options,
        );
        let mut report = linter.lint_files(&renders.files);
        let read = |p: &str| texts.get(p).cloned();
        let show = |p: &str| p.to_string();
        let failed = render_job::place(
            &mut report.findings,
            &reached,
            &renders,
            &linter,
            &read,
            &show,
        );
        report.findings.extend(failed);
        // Fixes in the head's files, each confirmed by rendering again, as `fix` writes them.
        let fixes: Vec<SourceFix> = render_job::source_fixes(
            scratch.path(),
            &reached,
            &renders,
            &linter,
            Applicability::Unsafe,
            &settings.tools,
            &options,
        )
        .into_iter()
        .flat_map(|c| c.fixes)
        .collect();
        let resolved: HashMap<&RenderedFinding, Applicability> = fixes
            .iter()
            .flat_map(|f| f.resolves.iter().map(|r| (r, f.applicability)))
            .collect();
        for f in &mut report.findings {
            if let Some(a) = RenderedFinding::of(f).and_then(|k| resolved.get(&k).copied()) {
                f.fixable = true;
                f.applicability = Some(a);
            }
        }
        let suggestions = source_fix::suggestions(&fixes, &read);
        report.findings.sort_by(|a, b| {
            (&a.path, a.start, &a.rule, &a.message).cmp(&(&b.path, b.start, &b.rule, &b.message))
        });
        kubeharden_core::provenance::merge_renders(&mut report.findings);
        drop(scratch);
        (renders.outcomes, report, suggestions)
    })
    .await
    .context("the renderer panicked")?;
    let (outcomes, report, suggestions) = out;
    rendered.suggestions = suggestions;
    rendered.files = report.files;
    rendered.workloads = report.workloads;
    rendered.findings = report.findings;
    rendered.roots = outcomes
        .into_iter()
        .map(|o| RootLine {
            root: o.root,
            variant: o.variant,
            status: o.status.summary(),
        })
        .collect();
    Ok(Some(rendered))
}

/// Write one head file into the scratch checkout. A symbolic link stays a link, so that the
/// renderer's copy refuses it when it leaves the checkout, as it does on the command line.
fn materialise(top: &std::path::Path, path: &str, symlink: bool, text: &str) -> Result<()> {
    let target = top.join(path);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot write {path} into the scratch directory"))?;
    }
    if symlink {
        // Never written for a remote-looking target: only paths are links.
        if is_remote(text) {
            return Ok(());
        }
        std::os::unix::fs::symlink(text, &target)
    } else {
        std::fs::write(&target, text)
    }
    .with_context(|| format!("cannot write {path} into the scratch directory"))
}
