//! The HTTP edge of the GitHub App: the webhook route (after rust-lang/bors, an extractor that
//! limits the body, checks the HMAC in constant time and parses into our own event types), the
//! health and readiness checks, and the workers that run stored jobs. A delivery is answered 202
//! only once it and its job are stored; the work runs in the background.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Notify;

use tokio::sync::watch;

use crate::edge::{self, BodyBudget};
use crate::github::Secret;
use crate::github::events::{Event, PullRequestEvent};
use crate::jobs::{self, Accepted, JobKind, JobState, NewJob, Store};
use crate::pipeline::{self, CommandJob, JobContext, ReviewRequest};
use kubeharden_core::commands::{self, Command};

pub use crate::edge::MAX_BODY;

pub struct ServerState {
    pub webhook_secret: Secret,
    pub jobs: Arc<JobContext>,
    pub store: Arc<Store>,
    /// Wakes idle workers when a job is stored.
    wake: Notify,
    running: AtomicUsize,
    /// Webhook bodies buffered at once, over all connections.
    pub body_budget: BodyBudget,
}

impl ServerState {
    pub fn new(
        webhook_secret: Secret,
        jobs: Arc<JobContext>,
        store: Arc<Store>,
        body_buffer: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            webhook_secret,
            jobs,
            store,
            wake: Notify::new(),
            running: AtomicUsize::new(0),
            body_budget: BodyBudget::new(body_buffer),
        })
    }

    /// Wait until no job is due or running (for tests and benchmarks).
    pub async fn wait_idle(&self) {
        loop {
            let pending = self.store.pending().await.unwrap_or(1);
            if pending == 0 && self.running.load(Ordering::SeqCst) == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

/// Run stored jobs until `stop` turns true, then let the running job finish within `grace`
/// and give it back otherwise.
pub async fn work(
    state: Arc<ServerState>,
    worker: String,
    mut stop: watch::Receiver<bool>,
    grace: std::time::Duration,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        let job = match state.store.claim(&worker, state.jobs.lease).await {
            Ok(Some(job)) => job,
            Ok(None) => {
                tokio::select! {
                    _ = state.wake.notified() => {}
                    _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            Err(e) => {
                tracing::error!(worker, "cannot claim jobs: {e:#}");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        };
        state.running.fetch_add(1, Ordering::SeqCst);
        let id = job.id;
        let run = run_job(&state, &worker, job);
        tokio::pin!(run);
        let finished = tokio::select! {
            _ = &mut run => true,
            _ = stop.changed() => {
                // Shutting down: the job gets the grace period, then goes back to the queue.
                tokio::time::timeout(grace, &mut run).await.is_ok()
            }
        };
        if !finished {
            tracing::warn!(job = id, "shutting down: job released for another run");
            if let Err(e) = state.store.release(id).await {
                tracing::error!(job = id, "cannot release the job: {e:#}");
            }
        }
        state.running.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn run_job(state: &ServerState, worker: &str, job: jobs::Job) {
    use tracing::Instrument;
    // Every log line of the job carries its ids, across awaits and only for this job.
    let span = tracing::info_span!(
        "job",
        job = job.id,
        delivery = job.delivery,
        repo = job.repo,
        pr = job.pr
    );
    run_job_in_span(state, worker, job).instrument(span).await;
}

/// Renew `worker`'s lease on a job every third of it; return once it is lost: another
/// worker holds the job, or no renewal got through before the lease ran out.
async fn hold_lease(store: &Store, id: i64, worker: &str, lease: std::time::Duration) {
    let mut held_until = tokio::time::Instant::now() + lease;
    loop {
        tokio::time::sleep(lease / 3).await;
        match store.heartbeat(id, worker, lease).await {
            Ok(true) => held_until = tokio::time::Instant::now() + lease,
            Ok(false) => return,
            Err(e) if tokio::time::Instant::now() + lease / 3 >= held_until => {
                tracing::error!("cannot renew the job's lease before it runs out: {e:#}");
                return;
            }
            Err(e) => tracing::warn!("cannot renew the job's lease, trying again: {e:#}"),
        }
    }
}

/// What a stored job runs.
enum Work {
    Review(Box<PullRequestEvent>),
    Command(Box<CommandJob>),
}

async fn run_job_in_span(state: &ServerState, worker: &str, job: jobs::Job) {
    let work = match job.kind {
        JobKind::Review => serde_json::from_str(&job.payload).map(Work::Review),
        JobKind::Command => serde_json::from_str(&job.payload).map(Work::Command),
    };
    let work = match work {
        Ok(w) => w,
        Err(e) => {
            let _ = state
                .store
                .finish(
                    job.id,
                    JobState::Dead,
                    Some(&format!("stored payload does not parse: {e}")),
                )
                .await;
            return;
        }
    };
    let started = std::time::Instant::now();
    let last_attempt = job.attempts >= jobs::MAX_ATTEMPTS;
    let run = async {
        match &work {
            Work::Review(event) => match ReviewRequest::from_event(event) {
                Ok(request) => {
                    pipeline::review_pull_request(&state.jobs, &request, last_attempt, false).await
                }
                Err(e) => Err(e.into()),
            },
            Work::Command(command) => {
                pipeline::run_command(&state.jobs, command, &job.delivery, last_attempt).await
            }
        }
    };
    // The lease is renewed while the job runs, so a long review is not taken for a dead one;
    // once it is lost the job stops here, as if this process had died, and its new holder
    // (which finds what was already posted) carries it on.
    let result = tokio::select! {
        result = run => result,
        () = hold_lease(&state.store, job.id, worker, state.jobs.lease) => {
            tracing::warn!("the job's lease is lost: stopped, left to the worker that holds it");
            return;
        }
    };
    crate::metrics::job_finished(started.elapsed().as_secs_f64());
    let stored = match result {
        Ok(pipeline::Outcome::Superseded) => {
            tracing::info!("a newer head exists: job superseded");
            state.store.finish(job.id, JobState::Superseded, None).await
        }
        Ok(outcome) => {
            tracing::info!(?outcome, "job done");
            state.store.finish(job.id, JobState::Done, None).await
        }
        Err(e) if pipeline::is_permanent(&e) || job.attempts >= jobs::MAX_ATTEMPTS => {
            tracing::error!(attempts = job.attempts, "job dead: {e:#}");
            state
                .store
                .finish(job.id, JobState::Dead, Some(&format!("{e:#}")))
                .await
        }
        Err(e) => {
            let delay = jobs::backoff(state.jobs.retry_base, job.attempts);
            tracing::warn!(
                attempts = job.attempts,
                retry_in_ms = delay.as_millis() as u64,
                "job failed, will retry: {e:#}"
            );
            state
                .store
                .retry_later(job.id, delay, &format!("{e:#}"))
                .await
        }
    };
    if let Err(e) = stored {
        // The lease runs out and another worker picks the job up again.
        tracing::error!("cannot record the job's outcome: {e:#}");
    }
}

pub fn router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/api/github/webhooks", post(webhook))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Whether `signature` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under `secret`, compared
/// in constant time.
pub fn verify_signature(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let Some(hex_sig) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// A delivery whose signature checked out, parsed.
pub struct Webhook {
    pub delivery: String,
    pub name: String,
    pub event: Event,
    /// Holds its share of the body budget until the delivery is answered.
    pub body: edge::Buffered,
}

pub enum WebhookRejection {
    /// Missing or wrong signature: nothing else happens.
    Unauthorized,
    BadRequest(String),
    /// Over the size limit, too slow, or more bodies at once than the server buffers.
    Body(edge::BodyError),
}

impl IntoResponse for WebhookRejection {
    fn into_response(self) -> Response {
        match self {
            WebhookRejection::Unauthorized => {
                (StatusCode::UNAUTHORIZED, "signature does not match").into_response()
            }
            WebhookRejection::BadRequest(m) => (StatusCode::BAD_REQUEST, m).into_response(),
            WebhookRejection::Body(e) => (e.status(), e.to_string()).into_response(),
        }
    }
}

impl FromRequest<Arc<ServerState>> for Webhook {
    type Rejection = WebhookRejection;

    async fn from_request(req: Request, state: &Arc<ServerState>) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        // Everything the headers can decide is decided before a byte of the body is read.
        let signature = header("x-hub-signature-256").ok_or(WebhookRejection::Unauthorized)?;
        let name = header("x-github-event")
            .ok_or_else(|| WebhookRejection::BadRequest("no X-GitHub-Event header".into()))?;
        let delivery = header("x-github-delivery")
            .filter(|d| !d.is_empty())
            .ok_or_else(|| WebhookRejection::BadRequest("no X-GitHub-Delivery header".into()))?;
        let body = edge::buffer(body, &state.body_budget)
            .await
            .map_err(WebhookRejection::Body)?;
        if !verify_signature(
            state.webhook_secret.expose().as_bytes(),
            &body.bytes,
            &signature,
        ) {
            return Err(WebhookRejection::Unauthorized);
        }
        let event = Event::parse(&name, &body.bytes)
            .map_err(|e| WebhookRejection::BadRequest(format!("malformed {name} payload: {e}")))?;
        Ok(Webhook {
            delivery,
            name,
            event,
            body,
        })
    }
}

async fn metrics(State(state): State<Arc<ServerState>>) -> Response {
    let jobs = state.store.counts().await.unwrap_or_default();
    (
        [("content-type", "text/plain; version=0.0.4")],
        crate::metrics::render(&jobs),
    )
        .into_response()
}

/// Ready when the database answers.
async fn ready(State(state): State<Arc<ServerState>>) -> Response {
    if state.store.ping().await {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response()
    }
}

async fn webhook(State(state): State<Arc<ServerState>>, hook: Webhook) -> Response {
    let job = match &hook.event {
        Event::PullRequest(event) => {
            // Drafts are decided with the base branch's configuration, inside the job.
            event.wants_review(true).then(|| NewJob {
                kind: JobKind::Review,
                repo: event.repository.full_name(),
                pr: event.number,
                head_sha: Some(event.pull_request.head.sha.clone()),
                payload: String::from_utf8_lossy(&hook.body.bytes).into_owned(),
            })
        }
        Event::CheckRun(_) | Event::IssueComment(_) => command_of(&hook.event, state.jobs.app.id())
            .map(|(head_sha, command)| NewJob {
                kind: JobKind::Command,
                repo: format!("{}/{}", command.owner, command.repo),
                pr: command.pr,
                head_sha,
                payload: serde_json::to_string(&command).unwrap_or_default(),
            }),
        Event::Ping => return (StatusCode::OK, "pong").into_response(),
        Event::Other { event } => {
            tracing::debug!(delivery = hook.delivery, event, "ignored event");
            None
        }
    };
    let Some(job) = job else {
        crate::metrics::delivery(&hook.name, "ignored");
        return (StatusCode::OK, "ignored").into_response();
    };
    match state
        .store
        .accept(&hook.delivery, &hook.name, Some(&job))
        .await
    {
        Ok(Accepted::Stored) => {
            crate::metrics::delivery(&hook.name, "queued");
            tracing::info!(
                delivery = hook.delivery,
                pr = job.pr,
                repo = job.repo,
                kind = job.kind.as_str(),
                "job queued"
            );
            state.wake.notify_one();
            (StatusCode::ACCEPTED, "queued").into_response()
        }
        Ok(Accepted::Duplicate) => {
            crate::metrics::delivery(&hook.name, "duplicate");
            (StatusCode::OK, "already received").into_response()
        }
        Err(e) => {
            crate::metrics::delivery(&hook.name, "store_failed");
            // GitHub records the failed delivery, and it can be redelivered.
            tracing::error!(delivery = hook.delivery, "cannot store the delivery: {e:#}");
            (StatusCode::SERVICE_UNAVAILABLE, "cannot store the delivery").into_response()
        }
    }
}

/// The command a delivery carries, with the head sha it names (if any): a button on one of
/// the app's own check runs, a "Re-run" of one, or a new `/kubeharden` comment on a pull
/// request by a person. Everything else, bots' comments included, is no command.
fn command_of(event: &Event, app_id: u64) -> Option<(Option<String>, CommandJob)> {
    match event {
        Event::CheckRun(e) => {
            // GitHub sends these to the app that made the run; a forged app id changes nothing.
            if e.check_run.app.as_ref().map(|a| a.id) != Some(app_id) || e.sender.is_bot() {
                return None;
            }
            let action = e.action.as_deref();
            let command = match (action, &e.requested_action) {
                (Some("requested_action"), Some(pressed)) => {
                    commands::from_action(pressed.identifier.as_deref()?)?
                }
                (Some("rerequested"), _) => Command::Recheck,
                _ => return None,
            };
            Some((
                Some(e.check_run.head_sha.clone()),
                CommandJob {
                    installation: e.installation.as_ref()?.id,
                    owner: e.repository.owner.login.clone(),
                    repo: e.repository.name.clone(),
                    pr: e.check_run.pull_request()?,
                    command,
                    requester: e.sender.login.clone(),
                    comment: None,
                    head_sha: (action == Some("requested_action"))
                        .then(|| e.check_run.head_sha.clone()),
                    requested_at: chrono::Utc::now(),
                },
            ))
        }
        Event::IssueComment(e) => {
            // A deleted user's comment (`user: null`) asks for nothing.
            let user = e.comment.user.as_ref()?;
            if e.action != "created" || e.issue.pull_request.is_none() || user.is_bot() {
                return None;
            }
            let command = commands::parse(&e.comment.body)?;
            Some((
                None,
                CommandJob {
                    installation: e.installation.as_ref()?.id,
                    owner: e.repository.owner.login.clone(),
                    repo: e.repository.name.clone(),
                    pr: e.issue.number,
                    command,
                    requester: user.login.clone(),
                    comment: Some(e.comment.id),
                    head_sha: None,
                    requested_at: e.comment.created_at,
                },
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn githubs_published_test_vector() {
        let secret = b"It's a Secret to Everybody";
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(verify_signature(secret, b"Hello, World!", sig));
        assert!(!verify_signature(secret, b"Hello, World?", sig));
        assert!(!verify_signature(b"another secret", b"Hello, World!", sig));
        assert!(!verify_signature(secret, b"Hello, World!", "sha1=757107ea"));
        assert!(!verify_signature(secret, b"Hello, World!", "sha256=zz"));
    }
}
