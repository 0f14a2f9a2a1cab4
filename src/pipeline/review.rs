//! A review job: lint the pull request's changed files, post what is new as one review,
//! resolve the app's threads whose finding is gone, and complete the check run.

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::{Context, Result};

use super::{
    JobContext, Outcome, Permanent, base_config, fetch_changed, image_facts, is_permanent,
};
use crate::github::events::{PullRequest, PullRequestEvent};
use crate::github::{CheckAction, CheckConclusion, CheckOutput, RepoClient};
use kubeharden_core::change::PrFile;
use kubeharden_core::commands;
use kubeharden_core::config::Config;
use kubeharden_core::lint::Linter;
use kubeharden_core::review;

/// The most annotations one check run gets (GitHub takes 50 a request; a hostile file must
/// not cost thousands of requests); the rest are counted in the summary.
pub const MAX_ANNOTATIONS: usize = 1000;

/// What a review job reviews: one pull request of an installation's repository, at the head
/// the pull request names. From a `pull_request` delivery, or built by a recheck from the pull
/// request as GitHub has it now.
#[derive(Debug, Clone)]
pub struct ReviewRequest {
    pub installation: u64,
    pub owner: String,
    pub repo: String,
    pub pull_request: PullRequest,
}

impl ReviewRequest {
    /// The review a `pull_request` delivery asks for; a delivery without an installation can
    /// never be acted on.
    pub fn from_event(event: &PullRequestEvent) -> Result<Self, Permanent> {
        let installation = event
            .installation
            .as_ref()
            .ok_or_else(|| Permanent("the delivery names no installation".into()))?;
        Ok(Self {
            installation: installation.id,
            owner: event.repository.owner.login.clone(),
            repo: event.repository.name.clone(),
            pull_request: event.pull_request.clone(),
        })
    }
}

/// Review a pull request at the head sha of the request. On the job's last attempt (or an error
/// no retry can fix) a started check run is completed as failed rather than left in progress,
/// which would block the pull request forever.
/// `force` (a recheck) reviews again even when a check run for this head is complete.
pub async fn review_pull_request(
    cx: &JobContext,
    request: &ReviewRequest,
    last_attempt: bool,
    force: bool,
) -> Result<Outcome> {
    let installation = request.installation;
    let pr = &request.pull_request;
    let client = Arc::new(
        cx.app
            .repo(installation, &request.owner, &request.repo)
            .await
            .with_context(|| {
                format!(
                    "cannot act as installation {installation} on {}/{}",
                    request.owner, request.repo
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
                .complete_check_run(check, CheckConclusion::Failure, &output, &[], &[])
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
        Some((_, true)) if !force => return Ok(Outcome::AlreadyDone),
        Some((id, false)) => id,
        _ => client.start_check_run(&pr.head.sha, pr.number).await?,
    };
    let result = review_with_check(cx, &client, pr, &config, check).await;
    if let Err(e) = &result
        && (last_attempt || is_permanent(e))
    {
        let output = CheckOutput {
            title: "KubeHarden could not finish the review".into(),
            summary: format!("The review failed and will not be tried again:\n\n```\n{e:#}\n```"),
            text: String::new(),
        };
        if let Err(e) = client
            .complete_check_run(check, CheckConclusion::Failure, &output, &[], &[])
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
    pr: &PullRequest,
    config: &Config,
    check: u64,
) -> Result<Outcome> {
    let changed = client
        .changed_files(pr.number)
        .await
        .context("cannot list the changed files")?;
    let files: Vec<PrFile> = fetch_changed(cx, client, changed.clone(), config)
        .await?
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    let settings = config.settings();
    let rendered =
        super::render::render_change(cx, client, &pr.head.sha, config, &changed, settings.clone())
            .await?
            .unwrap_or_default();
    let facts = image_facts(cx, config, &files, &settings, true).await;
    // Linting and fixing are CPU work: keep them off the async workers.
    let plan = {
        let registry = cx.registry.clone();
        tokio::task::spawn_blocking(move || {
            let linter = Linter::new(&registry, settings).with_facts(facts);
            review::plan_rendered(&linter, &files, &rendered)
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
    // The buttons commit to the branch, which the app never does on a fork.
    let mut actions = Vec::new();
    if !pr.is_fork() {
        let button = |(identifier, label, description): (&str, &str, &str)| CheckAction {
            label: label.into(),
            description: description.into(),
            identifier: identifier.into(),
        };
        if plan.safe_fixable > 0 {
            actions.push(button(commands::APPLY_FIXES));
        }
        if plan.committable > plan.safe_fixable {
            actions.push(button(commands::APPLY_ALL_FIXES));
        }
    }
    client
        .complete_check_run(
            check,
            plan.conclusion.into(),
            &output,
            annotations,
            &actions,
        )
        .await
        .context("cannot complete the check run")?;
    Ok(Outcome::Reviewed {
        comments: comments.len(),
        resolved,
        conclusion: plan.conclusion,
    })
}
