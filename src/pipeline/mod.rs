//! One job, end to end: thin glue between GitHub (`github`) and the core. What every job
//! shares lives here (the context, the outcome, which failures are final, the base branch's
//! configuration, the changed files and what is known about their images); a review job is
//! `review`, a `/kubeharden` command or a check-run button is `command`.

mod command;
mod render;
mod review;

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::github::{App, FileAt, GitHubError, RepoClient};
use kubeharden_core::change::PrFile;
use kubeharden_core::config::{CONFIG_PATHS, Config};
use kubeharden_core::facts::{Facts, ImageFacts};
use kubeharden_core::review::Conclusion;
use kubeharden_core::rules::Registry;

pub use command::{CommandJob, run_command};
pub use render::RenderSettings;
pub use review::{MAX_ANNOTATIONS, ReviewRequest, review_pull_request};

/// What every job shares.
pub struct JobContext {
    pub app: Arc<App>,
    pub registry: Arc<Registry>,
    /// Files fetched at once per job.
    pub fetch_concurrency: usize,
    /// First delay before a failed job runs again (doubling after each failure).
    pub retry_base: std::time::Duration,
    /// How long a worker's claim holds without a heartbeat: after a crash, its job waits this
    /// long before another worker takes it.
    pub lease: std::time::Duration,
    /// The vulnerability scanner repositories can turn on (`images.scan`), if the server has one.
    pub scanner: Option<Arc<crate::scan::Scanner>>,
    /// Registry access for digest pinning (`images.pin-digests`), if the server allows it.
    pub oci_client: Option<Arc<crate::oci::OciClient>>,
    /// Loopback and private-address registries the server may contact (`host[:port]`). Others
    /// of that kind, named in a pull request, are never asked: a reference must not turn the
    /// app into a probe of its own network.
    pub oci_private_hosts: Vec<String>,
    /// How pull requests' charts and kustomizations are rendered.
    pub render: Arc<RenderSettings>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The pull request is a draft and the repository does not review drafts.
    SkippedDraft,
    Reviewed {
        comments: usize,
        resolved: usize,
        conclusion: Conclusion,
    },
    /// The base branch's configuration is broken; the check run says where.
    BadConfig,
    /// A run before this one completed the check run for this head: nothing left to do.
    AlreadyDone,
    /// The pull request has a newer head than the one this job was for.
    Superseded,
    /// A command was answered (how, for the log and tests).
    Answered(String),
}

/// A failure that no retry can change, whatever raised it (a delivery without an installation,
/// a branch GitHub refuses to move).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Permanent(pub String);

/// Whether a job's failure is final, as the errors in its chain answer it: a [`Permanent`], or
/// a GitHub answer no retry can change ([`GitHubError::is_permanent`]). The first that answers
/// decides.
pub fn is_permanent(error: &anyhow::Error) -> bool {
    for cause in error.chain() {
        if cause.downcast_ref::<Permanent>().is_some() {
            return true;
        }
        if let Some(e) = cause.downcast_ref::<GitHubError>() {
            return e.is_permanent();
        }
    }
    false
}

/// What the image rules need from outside the manifests, for the images the pull request adds
/// or changes: the scanner's reports when the repository asks for scanning, and the digests
/// registries serve for their tags when it asks for pinning.
async fn image_facts(
    cx: &JobContext,
    config: &Config,
    files: &[PrFile],
    settings: &kubeharden_core::lint::Settings,
    scan: bool,
) -> Facts {
    let scan = scan && config.images.scan;
    let pin = config.images.pin_digests && cx.oci_client.is_some();
    // With registry access, every changed image's configuration decides its fixes.
    let inspect = cx.oci_client.is_some();
    if !scan && !pin && !inspect {
        return Facts::default();
    }
    let mut images = ImageFacts::default();
    let sources: Vec<kubeharden_core::source::SourceFile> =
        files.iter().map(PrFile::source).collect();
    // Lines each file adds, read once; without a patch (a diff too large to show) every image
    // of the file counts as changed.
    let added: HashMap<&str, Option<std::collections::BTreeSet<usize>>> = files
        .iter()
        .map(|f| {
            (
                f.path.as_str(),
                f.patch.as_deref().map(kubeharden_core::change::added_lines),
            )
        })
        .collect();
    let mut changed: Vec<String> = kubeharden_core::image::uses(
        &sources,
        &settings.limits,
        &cx.registry.workloads_with(&settings.workloads),
    )
    .into_iter()
    .filter(|u| match added.get(u.path.as_str()) {
        Some(Some(lines)) => lines.contains(&u.line),
        _ => true,
    })
    .map(|u| u.image)
    .filter(|i| kubeharden_core::image::parse(i).is_ok())
    .collect();
    changed.sort();
    changed.dedup();
    if changed.is_empty() {
        return Facts::default();
    }
    // Scanners and registries are only sent to registries the server may contact: allowed by
    // the repository's list, and on public addresses unless the server lists them.
    let mut refused = std::collections::BTreeMap::new();
    let mut contactable = Vec::new();
    for (i, image) in changed.into_iter().enumerate() {
        let Ok(r) = kubeharden_core::image::parse(&image) else {
            continue;
        };
        let why = if i >= MAX_IMAGES {
            Some(format!(
                "not scanned: the pull request changes more than {MAX_IMAGES} images, and one review scans at most that many"
            ))
        } else if !config.images.allowed_registries.is_empty()
            && !kubeharden_core::image::allowed(&r, &config.images.allowed_registries)
        {
            Some("not scanned: the registry is not in images.allowed-registries".to_string())
        } else if !crate::oci::may_contact(crate::oci::api_host(&r.domain), &cx.oci_private_hosts)
            .await
        {
            Some(format!(
                "not scanned: {} is a loopback or private address (or does not resolve), and the server does not list it in --registry-private-hosts",
                r.domain
            ))
        } else {
            None
        };
        match why {
            Some(why) => {
                refused.insert(image, kubeharden_core::vuln::ScanOutcome::Failed(why));
            }
            None => contactable.push(image),
        }
    }
    let changed = contactable;
    if pin && let Some(client) = &cx.oci_client {
        images.digests = resolve_digests(client, &changed, config).await;
    }
    // Scans first: a Trivy report carries the image's configuration, which inspection then
    // need not fetch again.
    let mut scans = if !scan {
        std::collections::BTreeMap::new()
    } else {
        match &cx.scanner {
            Some(scanner) => scanner.scan_all(&changed).await,
            None => changed
                .iter()
                .map(|i| {
                    (
                        i.clone(),
                        kubeharden_core::vuln::ScanOutcome::Failed(
                            "the repository asks for image scanning, but this KubeHarden server has no scanner (start it with --scanner trivy or grype)".into(),
                        ),
                    )
                })
                .collect(),
        }
    };
    if inspect && let Some(client) = &cx.oci_client {
        images.configs =
            crate::inspect::configs(cx, client, &sources, settings, &changed, &refused, &scans)
                .await;
    }
    if scan {
        scans.extend(refused);
        images.scans = scans;
    }
    Facts {
        images: Arc::new(images),
    }
}

/// The most images one review scans or resolves: a pull request must not be able to hold the
/// server's scanner for hours.
const MAX_IMAGES: usize = 50;

/// Digests for the tagged references among `images`, a few at a time. A registry that cannot
/// answer only means no suggestion for its images.
async fn resolve_digests(
    client: &Arc<crate::oci::OciClient>,
    images: &[String],
    config: &Config,
) -> std::collections::BTreeMap<String, String> {
    let limit = Arc::new(tokio::sync::Semaphore::new(4));
    let mut tasks = tokio::task::JoinSet::new();
    for image in images {
        let Ok(r) = kubeharden_core::image::parse(image) else {
            continue;
        };
        if r.digest.is_some() {
            continue;
        }
        // An allow-list bounds which registries are contacted, too.
        if !config.images.allowed_registries.is_empty()
            && !kubeharden_core::image::allowed(&r, &config.images.allowed_registries)
        {
            continue;
        }
        let client = client.clone();
        let limit = limit.clone();
        let image = image.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let result = client
                .resolve_digest(&r.domain, &r.path, r.effective_tag())
                .await;
            (image, result)
        });
    }
    let mut digests = std::collections::BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((image, Ok(digest))) => {
                digests.insert(image, digest);
            }
            Ok((image, Err(e))) => tracing::info!(image, "no digest: {e}"),
            Err(e) => tracing::warn!("a digest task failed: {e}"),
        }
    }
    digests
}

/// The configuration on the base branch: `Ok(Err(problem))` when it exists but does not load.
async fn base_config(
    client: &RepoClient,
    base: &str,
    registry: &Registry,
) -> Result<Result<Config, String>> {
    for path in CONFIG_PATHS {
        let bytes = match client.file_at(path, base).await? {
            FileAt::File(bytes) => bytes,
            FileAt::Missing => continue,
            // Said in the check run, as any configuration that does not load.
            FileAt::Directory => {
                return Ok(Err(format!(
                    "{path}: a directory, where the configuration file should be"
                )));
            }
        };
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(_) => return Ok(Err(format!("{path}: not UTF-8"))),
        };
        return Ok(Config::parse(path, &text, registry).map_err(|e| e.to_string()));
    }
    Ok(Ok(Config::default()))
}

/// The YAML files the pull request adds, modifies or renames inside the configured paths, at
/// the head, fetched by blob sha a few at a time; each with its blob sha.
async fn fetch_files(
    cx: &JobContext,
    client: &Arc<RepoClient>,
    pr: u64,
    config: &Config,
) -> Result<Vec<(PrFile, String)>> {
    let changed = client
        .changed_files(pr)
        .await
        .context("cannot list the changed files")?;
    fetch_changed(cx, client, changed, config).await
}

/// [`fetch_files`] for a list of changed files already read.
async fn fetch_changed(
    cx: &JobContext,
    client: &Arc<RepoClient>,
    changed: Vec<crate::github::ChangedFile>,
    config: &Config,
) -> Result<Vec<(PrFile, String)>> {
    let wanted: Vec<_> = changed
        .into_iter()
        .filter(|f| {
            matches!(
                f.status.as_str(),
                "added" | "modified" | "renamed" | "changed" | "copied"
            )
        })
        .filter(|f| config.lints_changed(&f.filename))
        .filter_map(|f| match f.sha.clone() {
            Some(sha) => Some((f, sha)),
            None => {
                // GitHub's description allows it; nothing to fetch the file by.
                tracing::warn!(
                    file = f.filename,
                    "not linted: GitHub lists the file without a blob sha"
                );
                None
            }
        })
        .collect();
    let limit = Arc::new(tokio::sync::Semaphore::new(cx.fetch_concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, (file, sha)) in wanted.into_iter().enumerate() {
        let client = client.clone();
        let limit = limit.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let bytes = client.blob(&sha).await;
            (index, file, sha, bytes)
        });
    }
    let mut files = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (index, file, sha, bytes) = done.context("a fetch task panicked")?;
        let bytes = bytes.with_context(|| format!("cannot fetch {}", file.filename))?;
        // Not UTF-8: linted whole, reported at the bad byte, never committed back.
        files.push((
            index,
            PrFile::from_bytes(file.filename, bytes, file.patch),
            sha,
        ));
    }
    files.sort_by_key(|(i, ..)| *i);
    Ok(files.into_iter().map(|(_, f, sha)| (f, sha)).collect())
}
