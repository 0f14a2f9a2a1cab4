//! One review job, end to end: thin glue between GitHub (`github`) and the core (`review`).

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::config::{CONFIG_PATHS, Config};
use crate::github::events::PullRequestEvent;
use crate::github::{App, CheckOutput, RepoClient};
use crate::lint::Linter;
use crate::review::{self, Conclusion, PrFile};
use crate::rules::Registry;

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
}

/// Review a pull request at the head sha of the event.
/// The most annotations one check run gets (GitHub takes 50 a request; a hostile file must
/// not cost thousands of requests); the rest are counted in the summary.
pub const MAX_ANNOTATIONS: usize = 1000;

/// Review a pull request at the head sha of the event. On the job's last attempt (or an error
/// no retry can fix) a started check run is completed as failed rather than left in progress,
/// which would block the pull request forever.
pub async fn review_pull_request(
    cx: &JobContext,
    event: &PullRequestEvent,
    last_attempt: bool,
) -> Result<Outcome> {
    let installation = event
        .installation
        .as_ref()
        .ok_or_else(|| crate::jobs::Permanent("the delivery names no installation".into()))?
        .id;
    let repo = &event.repository;
    let pr = &event.pull_request;
    let client = Arc::new(
        cx.app
            .repo(installation, &repo.owner.login, &repo.name)
            .await
            .with_context(|| {
                format!(
                    "cannot act as installation {installation} on {}",
                    repo.full_name()
                )
            })?,
    );
    // A pull request must not be able to switch its own checks off: configuration comes from
    // the base branch.
    let config = match base_config(&client, &pr.base.sha, &cx.registry).await? {
        Ok(config) => config,
        Err(problem) => {
            let check = client.start_check_run(&pr.head.sha, pr.number).await?;
            let output = CheckOutput {
                title: "invalid KubeHarden configuration".into(),
                summary: format!(
                    "The base branch's configuration does not load:\n\n```\n{problem}\n```"
                ),
                text: String::new(),
            };
            client
                .complete_check_run(check, "failure", &output, &[], &[])
                .await?;
            return Ok(Outcome::BadConfig);
        }
    };
    if pr.draft && !config.review_drafts {
        return Ok(Outcome::SkippedDraft);
    }
    // A newer push makes this review pointless: its own job reviews the newest head.
    if client.pull_request_head(pr.number).await? != pr.head.sha {
        return Ok(Outcome::Superseded);
    }
    // Publishing is idempotent: a job re-run after a crash finds what it already posted.
    let check = match client.find_check_run(&pr.head.sha).await? {
        Some((_, true)) => return Ok(Outcome::AlreadyDone),
        Some((id, false)) => id,
        None => client.start_check_run(&pr.head.sha, pr.number).await?,
    };
    let result = review_with_check(cx, &client, event, &config, check).await;
    if let Err(e) = &result
        && (last_attempt || crate::jobs::is_permanent(e))
    {
        let output = CheckOutput {
            title: "KubeHarden could not finish the review".into(),
            summary: format!("The review failed and will not be tried again:\n\n```\n{e:#}\n```"),
            text: String::new(),
        };
        if let Err(e) = client
            .complete_check_run(check, "failure", &output, &[], &[])
            .await
        {
            tracing::warn!(pr = pr.number, "cannot mark the check run failed: {e}");
        }
    }
    result
}

async fn review_with_check(
    cx: &JobContext,
    client: &Arc<RepoClient>,
    event: &PullRequestEvent,
    config: &Config,
    check: u64,
) -> Result<Outcome> {
    let pr = &event.pull_request;
    let files = fetch_files(cx, client, pr.number, config).await?;
    let linter = Linter::new(&cx.registry, config.settings());
    // Linting and fixing are CPU work: keep them off the async workers.
    let plan = {
        let registry = cx.registry.clone();
        let settings = linter.settings.clone();
        tokio::task::spawn_blocking(move || {
            let linter = Linter::new(&registry, settings);
            review::plan(&linter, &files)
        })
        .await
        .context("the review planner panicked")?
    };

    for (rule, n) in &plan.rule_counts {
        crate::metrics::findings(rule, *n);
    }
    // On a new push, post only what has no open thread yet; resolve ours that are gone.
    let threads = match client.review_threads(pr.number).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(
                pr = pr.number,
                "cannot list review threads, posting without them: {e}"
            );
            Vec::new()
        }
    };
    let open: HashSet<&str> = threads
        .iter()
        .filter(|t| !t.resolved)
        .map(|t| t.fingerprint.as_str())
        .collect();
    let first_review = threads.is_empty();
    let comments: Vec<_> = plan
        .comments
        .iter()
        .filter(|c| !open.contains(c.fingerprint.as_str()))
        .cloned()
        .collect();
    let wanted = !comments.is_empty() || (first_review && !plan.body.is_empty());
    // GraphQL being down must not stop reviews: then post (at worst once more).
    let posted = wanted
        && match client.has_review_for(pr.number, &pr.head.sha).await {
            Ok(posted) => posted,
            Err(e) => {
                tracing::warn!(
                    pr = pr.number,
                    "cannot look for an earlier review, posting: {e}"
                );
                false
            }
        };
    if wanted && !posted {
        client
            .post_review(pr.number, &pr.head.sha, &plan.body, &comments)
            .await
            .context("cannot post the review")?;
    }
    let current: HashSet<&str> = plan.fingerprints.iter().map(String::as_str).collect();
    let mut resolved = 0;
    for thread in threads.iter().filter(|t| !t.resolved) {
        if !current.contains(thread.fingerprint.as_str()) {
            match client.resolve_thread(&thread.id).await {
                Ok(()) => resolved += 1,
                Err(e) => tracing::warn!(
                    pr = pr.number,
                    "cannot resolve a stale thread, leaving it: {e}"
                ),
            }
        }
    }
    let conclusion = match plan.conclusion {
        Conclusion::Success => "success",
        Conclusion::Failure => "failure",
    };
    let mut summary = plan.check_summary.clone();
    if plan.annotations.len() > MAX_ANNOTATIONS {
        summary = format!(
            "{} of {} findings are shown as annotations; the table lists the first ones.\n\n{summary}",
            MAX_ANNOTATIONS,
            plan.annotations.len()
        );
    }
    let output = CheckOutput {
        title: plan.check_title.clone(),
        summary,
        text: plan.check_text.clone(),
    };
    let annotations = &plan.annotations[..plan.annotations.len().min(MAX_ANNOTATIONS)];
    client
        .complete_check_run(check, conclusion, &output, annotations, &[])
        .await
        .context("cannot complete the check run")?;
    Ok(Outcome::Reviewed {
        comments: comments.len(),
        resolved,
        conclusion: plan.conclusion,
    })
}

/// The configuration on the base branch: `Ok(Err(problem))` when it exists but does not load.
async fn base_config(
    client: &RepoClient,
    base: &str,
    registry: &Registry,
) -> Result<Result<Config, String>> {
    for path in CONFIG_PATHS {
        let Some(bytes) = client.file_at(path, base).await? else {
            continue;
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
/// the head, fetched by blob sha a few at a time.
async fn fetch_files(
    cx: &JobContext,
    client: &Arc<RepoClient>,
    pr: u64,
    config: &Config,
) -> Result<Vec<PrFile>> {
    let changed = client
        .changed_files(pr)
        .await
        .context("cannot list the changed files")?;
    let wanted: Vec<_> = changed
        .into_iter()
        .filter(|f| {
            matches!(
                f.status.as_str(),
                "added" | "modified" | "renamed" | "changed" | "copied"
            )
        })
        .filter(|f| config.lints_changed(&f.filename))
        .collect();
    let limit = Arc::new(tokio::sync::Semaphore::new(cx.fetch_concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, file) in wanted.into_iter().enumerate() {
        let client = client.clone();
        let limit = limit.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let bytes = client.blob(&file.sha).await;
            (index, file, bytes)
        });
    }
    let mut files = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (index, file, bytes) = done.context("a fetch task panicked")?;
        let bytes = bytes.with_context(|| format!("cannot fetch {}", file.filename))?;
        // Not UTF-8: reported at its line as invalid YAML by the linter, as the CLI does.
        let text = crate::source::SourceFile::text_from_bytes(bytes);
        files.push((
            index,
            PrFile {
                path: file.filename,
                text,
                patch: file.patch,
            },
        ));
    }
    files.sort_by_key(|(i, _)| *i);
    Ok(files.into_iter().map(|(_, f)| f).collect())
}
