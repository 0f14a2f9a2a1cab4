//! One review job, end to end: thin glue between GitHub (`github`) and the core (`review`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::github::events::{PullRequestAction, PullRequestEvent};
use crate::github::{Access, App, CheckAction, CheckOutput, RepoClient, TreeEntry};
use kubeharden_core::change::PrFile;
use kubeharden_core::commands::{self, Command, FixSet, Reply};
use kubeharden_core::config::{CONFIG_PATHS, Config};
use kubeharden_core::facts::{Facts, ImageFacts};
use kubeharden_core::lint::Linter;
use kubeharden_core::review::{self, Conclusion};
use kubeharden_core::rules::Registry;

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

/// Review a pull request at the head sha of the event.
/// The most annotations one check run gets (GitHub takes 50 a request; a hostile file must
/// not cost thousands of requests); the rest are counted in the summary.
pub const MAX_ANNOTATIONS: usize = 1000;

/// Review a pull request at the head sha of the event. On the job's last attempt (or an error
/// no retry can fix) a started check run is completed as failed rather than left in progress,
/// which would block the pull request forever.
/// `force` (a recheck) reviews again even when a check run for this head is complete.
pub async fn review_pull_request(
    cx: &JobContext,
    event: &PullRequestEvent,
    last_attempt: bool,
    force: bool,
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
        Some((_, true)) if !force => return Ok(Outcome::AlreadyDone),
        Some((id, false)) => id,
        _ => client.start_check_run(&pr.head.sha, pr.number).await?,
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
    let files: Vec<PrFile> = fetch_files(cx, client, pr.number, config)
        .await?
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    let settings = config.settings();
    let facts = image_facts(cx, config, &files, &settings, true).await;
    // Linting and fixing are CPU work: keep them off the async workers.
    let plan = {
        let registry = cx.registry.clone();
        tokio::task::spawn_blocking(move || {
            let linter = Linter::new(&registry, settings).with_facts(facts);
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
        .complete_check_run(check, conclusion, &output, annotations, &actions)
        .await
        .context("cannot complete the check run")?;
    Ok(Outcome::Reviewed {
        comments: comments.len(),
        resolved,
        conclusion: plan.conclusion,
    })
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
    if !scan && !pin {
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
    if !scan {
        return Facts {
            images: Arc::new(images),
        };
    }
    let mut scans = match &cx.scanner {
        Some(scanner) => scanner.scan_all(&changed).await,
        None => changed
            .into_iter()
            .map(|i| {
                (
                    i,
                    kubeharden_core::vuln::ScanOutcome::Failed(
                        "the repository asks for image scanning, but this KubeHarden server has no scanner (start it with --scanner trivy or grype)".into(),
                    ),
                )
            })
            .collect(),
    };
    scans.extend(refused);
    images.scans = scans;
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
        // Not UTF-8: linted whole, reported at the bad byte, never committed back.
        files.push((
            index,
            PrFile::from_bytes(file.filename, bytes, file.patch),
            file.sha,
        ));
    }
    files.sort_by_key(|(i, ..)| *i);
    Ok(files.into_iter().map(|(_, f, sha)| (f, sha)).collect())
}

/// A `/kubeharden` command or a check-run button, as stored for its job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommandJob {
    pub installation: u64,
    pub owner: String,
    pub repo: String,
    pub pr: u64,
    pub command: Command,
    pub requester: String,
    /// The comment that asked, to react to; `None` for a button.
    pub comment: Option<u64>,
    /// For a button: the commit its check run is about.
    #[serde(default)]
    pub head_sha: Option<String>,
    pub requested_at: chrono::DateTime<chrono::Utc>,
}

/// How often the app works the fixes out again when the branch moves under it.
const COMMIT_ROUNDS: usize = 3;

/// Run a command. `request` (the delivery id) ties the commit and the reply to it, so a job run
/// again after a crash neither commits nor replies twice.
pub async fn run_command(
    cx: &JobContext,
    job: &CommandJob,
    request: &str,
    last_attempt: bool,
) -> Result<Outcome> {
    let client = Arc::new(
        cx.app
            .repo_as(job.installation, &job.owner, &job.repo, Access::Commands)
            .await
            .with_context(|| {
                format!(
                    "cannot act as installation {} on {}/{}",
                    job.installation, job.owner, job.repo
                )
            })?,
    );
    let marker = commands::reply_marker(request);
    // Checked on every run, not only retries: a job released at shutdown after replying runs
    // again with its attempts given back.
    if client
        .has_comment_with(
            job.pr,
            &marker,
            job.requested_at - chrono::Duration::minutes(1),
        )
        .await?
    {
        return Ok(Outcome::AlreadyDone);
    }
    if let Some(comment) = job.comment {
        react(&client, comment, "eyes").await;
    }
    let result = answer(cx, &client, job, request, last_attempt).await;
    let (reply, set) = match result {
        Ok(answer) => answer,
        Err(e) if last_attempt || crate::jobs::is_permanent(&e) => {
            (Some(Reply::Failed(format!("{e:#}"))), None)
        }
        Err(e) => return Err(e),
    };
    let ok = !matches!(
        reply,
        Some(
            Reply::NotAllowed { .. }
                | Reply::Closed
                | Reply::Raced { .. }
                | Reply::BadConfig(_)
                | Reply::Failed(_)
                | Reply::Unknown(_)
                | Reply::Stale { .. }
        )
    );
    let tag = reply.as_ref().map_or("rechecked".to_string(), reply_tag);
    if let Some(reply) = &reply {
        let body = commands::reply(reply, &job.requester, request, set.as_ref());
        client
            .comment(job.pr, &body)
            .await
            .context("cannot reply to the command")?;
    }
    if let Some(comment) = job.comment {
        react(&client, comment, if ok { "rocket" } else { "confused" }).await;
    }
    Ok(Outcome::Answered(tag))
}

fn reply_tag(reply: &Reply) -> String {
    match reply {
        Reply::Help => "help",
        Reply::Unknown(_) => "unknown-command",
        Reply::NotAllowed { .. } => "not-allowed",
        Reply::Closed => "closed",
        Reply::NothingToFix { .. } => "nothing-to-fix",
        Reply::Committed { .. } => "committed",
        Reply::CommittedEarlier { .. } => "committed-earlier",
        Reply::ForkPatch => "fork-patch",
        Reply::Raced { .. } => "raced",
        Reply::BadConfig(_) => "bad-config",
        Reply::Failed(_) => "failed",
        Reply::Stale { .. } => "stale",
    }
    .to_string()
}

/// Reactions are courtesy: failing to add one never fails the command.
async fn react(client: &RepoClient, comment: u64, content: &str) {
    if let Err(e) = client.react(comment, content).await {
        tracing::warn!(comment, content, "cannot react to the command: {e}");
    }
}

/// What to reply (`None`: the command speaks through the check run), with the fix set the
/// reply is about.
async fn answer(
    cx: &JobContext,
    client: &Arc<RepoClient>,
    job: &CommandJob,
    request: &str,
    last_attempt: bool,
) -> Result<(Option<Reply>, Option<FixSet>)> {
    let unsafe_fixes = match &job.command {
        Command::Help => return Ok((Some(Reply::Help), None)),
        Command::Unknown { text } => return Ok((Some(Reply::Unknown(text.clone())), None)),
        Command::Recheck => {
            let pr = client.pull_request(job.pr).await?;
            let author = pr.user.as_ref().is_some_and(|u| u.login == job.requester);
            if !author {
                let permission = client.permission(&job.requester).await?;
                if !can_write(&permission) {
                    return Ok((
                        Some(Reply::NotAllowed {
                            permission,
                            recheck: true,
                        }),
                        None,
                    ));
                }
            }
            let event = PullRequestEvent {
                action: PullRequestAction::Synchronize,
                number: pr.number,
                repository: pr.base.repo.clone().unwrap_or_else(|| {
                    crate::github::events::Repository {
                        id: 0,
                        name: job.repo.clone(),
                        owner: crate::github::events::Owner {
                            login: job.owner.clone(),
                        },
                    }
                }),
                pull_request: pr,
                installation: Some(crate::github::events::Installation {
                    id: job.installation,
                }),
                changes: None,
            };
            review_pull_request(cx, &event, last_attempt, true).await?;
            return Ok((None, None));
        }
        Command::Fix { unsafe_fixes } => *unsafe_fixes,
    };
    let permission = client.permission(&job.requester).await?;
    if !can_write(&permission) {
        return Ok((
            Some(Reply::NotAllowed {
                permission,
                recheck: false,
            }),
            None,
        ));
    }
    let mut moved_from: Option<String> = None;
    let mut head = String::new();
    for round in 0..COMMIT_ROUNDS {
        if round > 0 {
            // GitHub updates a pull request's head a moment after a push: let it settle.
            tokio::time::sleep(std::time::Duration::from_millis(500 * round as u64)).await;
        }
        let pr = client.pull_request(job.pr).await?;
        if pr.state.as_deref() == Some("closed") {
            return Ok((Some(Reply::Closed), None));
        }
        head = pr.head.sha.clone();
        let config = match base_config(client, &pr.base.sha, &cx.registry).await? {
            Ok(config) => config,
            Err(problem) => return Ok((Some(Reply::BadConfig(problem)), None)),
        };
        let head_commit = client.git_commit(&pr.head.sha).await?;
        if commands::made_for(&head_commit.message, request) {
            return Ok((
                Some(Reply::CommittedEarlier {
                    sha: head_commit.sha,
                    url: head_commit.html_url,
                }),
                None,
            ));
        }
        // A button on an older commit's check run: its reviewer saw other content, so nothing
        // is committed on their behalf.
        if round == 0
            && let Some(clicked) = job.head_sha.as_deref()
            && clicked != pr.head.sha
        {
            return Ok((
                Some(Reply::Stale {
                    head: pr.head.sha.clone(),
                }),
                None,
            ));
        }
        let fetched = fetch_files(cx, client, pr.number, &config).await?;
        let shas: HashMap<String, String> = fetched
            .iter()
            .map(|(f, sha)| (f.path.clone(), sha.clone()))
            .collect();
        let files: Vec<PrFile> = fetched.into_iter().map(|(f, _)| f).collect();
        // The same digests the review suggested: the commit pins what the suggestions pin.
        let settings = config.settings();
        let facts = image_facts(cx, &config, &files, &settings, false).await;
        let mut set = {
            let registry = cx.registry.clone();
            tokio::task::spawn_blocking(move || {
                let linter = Linter::new(&registry, settings).with_facts(facts);
                commands::fix_change(&linter, &files, unsafe_fixes)
            })
            .await
            .context("the fixer panicked")?
        };
        if set.files.is_empty() {
            return Ok((
                Some(Reply::NothingToFix {
                    unsafe_left: set.unsafe_left,
                }),
                Some(set),
            ));
        }
        if pr.is_fork() {
            return Ok((Some(Reply::ForkPatch), Some(set)));
        }
        // Modes come from the head's tree: an executable bit stays, and a symlink or a
        // submodule is not replaced by a file.
        let paths: Vec<&str> = set.files.iter().map(|f| f.path.as_str()).collect();
        let entries = tree_entries(client, &head_commit.tree.sha, &paths).await?;
        // The file list and the head were read at different moments: a file whose blob is not
        // the head's means the branch moved in between.
        let consistent = set.files.iter().all(|f| {
            entries
                .get(&f.path)
                .is_none_or(|e| Some(&e.sha) == shas.get(&f.path))
        });
        if !consistent {
            moved_from.get_or_insert(head.clone());
            continue;
        }
        let mut kept = Vec::new();
        for f in std::mem::take(&mut set.files) {
            match entries.get(&f.path).map(|e| e.mode.as_str()) {
                Some(mode @ ("100644" | "100755")) => kept.push((f, mode.to_string())),
                Some(_) => set.skipped.push((
                    f.path.clone(),
                    "not a regular file (a symlink or a submodule)".into(),
                )),
                None => set
                    .skipped
                    .push((f.path.clone(), "not in the head commit's tree".into())),
            }
        }
        if kept.is_empty() {
            return Ok((
                Some(Reply::NothingToFix {
                    unsafe_left: set.unsafe_left,
                }),
                Some(set),
            ));
        }
        let mut tree = Vec::new();
        for (f, mode) in &kept {
            let blob = client
                .create_blob(f.fixed.as_bytes())
                .await
                .with_context(|| format!("cannot store the fixed {}", f.path))?;
            tree.push((f.path.clone(), mode.clone(), blob));
        }
        set.files = kept.into_iter().map(|(f, _)| f).collect();
        let tree = client
            .create_tree(&head_commit.tree.sha, &tree)
            .await
            .context("cannot create the tree")?;
        let message = commands::commit_message(&set, &job.requester, request);
        let commit = client
            .create_commit(&message, &tree, &pr.head.sha)
            .await
            .context("cannot create the commit")?;
        // GitHub's ref update checks fast-forward, not that the branch is still where it was:
        // a branch force-pushed back to an ancestor meanwhile would take the commit and bring
        // back what was removed. Look right before moving it (a window of one request remains).
        let now = client.branch_head(&pr.head.branch).await?;
        if now != pr.head.sha {
            tracing::info!(pr = job.pr, "the branch moved before the ref update");
            moved_from.get_or_insert(head.clone());
            continue;
        }
        match client.fast_forward(&pr.head.branch, &commit.sha).await {
            Ok(()) => {
                tracing::info!(commit = commit.sha, pr = job.pr, "fixes committed");
                return Ok((
                    Some(Reply::Committed {
                        sha: commit.sha,
                        url: commit.html_url,
                        moved_from,
                    }),
                    Some(set),
                ));
            }
            // Not a fast-forward: someone pushed meanwhile. Never force: start over on the new
            // head.
            Err(e) if e.status() == Some(422) => {
                // GitHub says 422 for a protected branch or a failed ref update too: only a
                // head that really moved is a race worth another round.
                let now = client.branch_head(&pr.head.branch).await?;
                if now == head {
                    return Err(crate::jobs::Permanent(format!(
                        "GitHub refused to move the branch `{}` to the fix commit: {e}",
                        pr.head.branch
                    ))
                    .into());
                }
                tracing::info!(pr = job.pr, "the branch moved while committing: {e}");
                moved_from.get_or_insert(head.clone());
            }
            Err(e) => return Err(e).context("cannot move the branch to the fix commit"),
        }
    }
    Ok((Some(Reply::Raced { head }), None))
}

fn can_write(permission: &str) -> bool {
    matches!(permission, "admin" | "maintain" | "write")
}

/// The tree entries of `paths` in the tree `root`, one directory listing at a time (a recursive
/// listing of a large monorepo is truncated by GitHub).
async fn tree_entries(
    client: &RepoClient,
    root: &str,
    paths: &[&str],
) -> Result<HashMap<String, TreeEntry>> {
    let mut listings: HashMap<String, Option<Vec<TreeEntry>>> = HashMap::new();
    let mut found = HashMap::new();
    for path in paths {
        let mut dir = String::new();
        let mut sha = Some(root.to_string());
        let parts: Vec<&str> = path.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            if !listings.contains_key(&dir) {
                let listing = match &sha {
                    Some(sha) => Some(
                        client
                            .tree(sha)
                            .await
                            .with_context(|| format!("cannot list the tree of `{dir}`"))?,
                    ),
                    None => None,
                };
                listings.insert(dir.clone(), listing);
            }
            let entry = listings[&dir]
                .as_ref()
                .and_then(|l| l.iter().find(|e| e.path == *part))
                .cloned();
            if i + 1 == parts.len() {
                if let Some(e) = entry {
                    found.insert(path.to_string(), e);
                }
            } else {
                sha = entry.filter(|e| e.kind == "tree").map(|e| e.sha);
                if !dir.is_empty() {
                    dir.push('/');
                }
                dir.push_str(part);
            }
        }
    }
    Ok(found)
}
