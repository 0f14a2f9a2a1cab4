//! A command job: a `/kubeharden` comment or a check-run button. Fixes are committed on the
//! pull request's branch (fast-forward only, never forced), and every command is answered with
//! a reply tied to its delivery.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::{
    JobContext, Outcome, Permanent, ReviewRequest, base_config, fetch_files, image_facts,
    is_permanent, review_pull_request,
};
use crate::github::{Access, RepoClient, TreeEntry};
use kubeharden_core::change::PrFile;
use kubeharden_core::commands::{self, Command, FixSet, Reply};
use kubeharden_core::lint::Linter;

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
        Err(e) if last_attempt || is_permanent(&e) => (Some(Reply::Failed(format!("{e:#}"))), None),
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
            .reply(
                job.pr,
                &body,
                &marker,
                job.requested_at - chrono::Duration::minutes(1),
            )
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
            let request = ReviewRequest {
                installation: job.installation,
                owner: job.owner.clone(),
                repo: job.repo.clone(),
                pull_request: pr,
            };
            review_pull_request(cx, &request, last_attempt, true).await?;
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
                    return Err(Permanent(format!(
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
