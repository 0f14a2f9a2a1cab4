//! The HTTP edge of the GitHub App: the webhook route (after rust-lang/bors, an extractor that
//! limits the body, checks the HMAC in constant time and parses into our own event types) and
//! the health check. Handled events answer 202 at once; the work runs in the background.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Notify;

use crate::github::Secret;
use crate::github::events::Event;
use crate::pipeline::{self, JobContext};

/// GitHub's cap on a webhook payload.
pub const MAX_BODY: usize = 25 * 1024 * 1024;

pub struct ServerState {
    pub webhook_secret: Secret,
    pub jobs: Arc<JobContext>,
    running: AtomicUsize,
    idle: Notify,
}

impl ServerState {
    pub fn new(webhook_secret: Secret, jobs: Arc<JobContext>) -> Arc<Self> {
        Arc::new(Self {
            webhook_secret,
            jobs,
            running: AtomicUsize::new(0),
            idle: Notify::new(),
        })
    }

    /// Wait until no background job runs (for shutdown and for tests).
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.running.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

pub fn router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/api/github/webhooks", post(webhook))
        .route("/healthz", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(MAX_BODY))
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
    pub event: Event,
}

pub enum WebhookRejection {
    /// Missing or wrong signature: nothing else happens.
    Unauthorized,
    BadRequest(String),
}

impl IntoResponse for WebhookRejection {
    fn into_response(self) -> Response {
        match self {
            WebhookRejection::Unauthorized => {
                (StatusCode::UNAUTHORIZED, "signature does not match").into_response()
            }
            WebhookRejection::BadRequest(m) => (StatusCode::BAD_REQUEST, m).into_response(),
        }
    }
}

impl FromRequest<Arc<ServerState>> for Webhook {
    type Rejection = WebhookRejection;

    async fn from_request(req: Request, state: &Arc<ServerState>) -> Result<Self, Self::Rejection> {
        let headers: HeaderMap = req.headers().clone();
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|e| WebhookRejection::BadRequest(format!("cannot read the body: {e}")))?;
        let signature = header("x-hub-signature-256").ok_or(WebhookRejection::Unauthorized)?;
        if !verify_signature(state.webhook_secret.expose().as_bytes(), &body, &signature) {
            return Err(WebhookRejection::Unauthorized);
        }
        let name = header("x-github-event")
            .ok_or_else(|| WebhookRejection::BadRequest("no X-GitHub-Event header".into()))?;
        let event = Event::parse(&name, &body)
            .map_err(|e| WebhookRejection::BadRequest(format!("malformed {name} payload: {e}")))?;
        Ok(Webhook {
            delivery: header("x-github-delivery").unwrap_or_default(),
            event,
        })
    }
}

async fn webhook(State(state): State<Arc<ServerState>>, hook: Webhook) -> Response {
    match hook.event {
        Event::PullRequest(event) => {
            // Drafts are decided with the base branch's configuration, inside the job.
            if !event.wants_review(true) {
                return (StatusCode::OK, "ignored").into_response();
            }
            tracing::info!(delivery = hook.delivery, pr = event.number, repo = event.repository.full_name(), action = ?event.action, "review queued");
            state.running.fetch_add(1, Ordering::SeqCst);
            let task_state = state.clone();
            tokio::spawn(async move {
                let result = pipeline::review_pull_request(&task_state.jobs, &event).await;
                match result {
                    Ok(outcome) => tracing::info!(pr = event.number, ?outcome, "review done"),
                    Err(e) => tracing::error!(pr = event.number, "review failed: {e:#}"),
                }
                if task_state.running.fetch_sub(1, Ordering::SeqCst) == 1 {
                    task_state.idle.notify_waiters();
                }
            });
            (StatusCode::ACCEPTED, "queued").into_response()
        }
        Event::Ping => (StatusCode::OK, "pong").into_response(),
        Event::Other { event } => {
            tracing::debug!(delivery = hook.delivery, event, "ignored event");
            (StatusCode::OK, "ignored").into_response()
        }
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
