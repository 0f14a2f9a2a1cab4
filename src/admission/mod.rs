//! The admission webhook: the same engine at the cluster's door.
//!
//! An HTTPS server (the API server calls webhooks over TLS only) that answers
//! `admission.k8s.io/v1` AdmissionReviews on `POST /validate/{enforce|warn|audit}/{profile}`
//! and `POST /mutate/{profile}`, each with an optional `?version=1.N`. The webhook
//! configurations route by namespace label, so the server needs no Kubernetes API access.
//!
//! - `review`: the AdmissionReview types and the decision, on the core engine;
//! - `mutate`: fixed object → RFC 6902 JSON Patch;
//! - `tls`: certificates from files, reloaded when they change; handshake deadlines;
//! - `metrics`: decisions and latency in the Prometheus text format;
//! - `manifests`: the webhook configurations, routed by namespace label;
//! - `images`: image configurations for the mutation's image decision (`--registry-access`),
//!   within a per-request budget, cached by image.

pub mod images;
pub mod manifests;
pub mod metrics;
pub mod mutate;
pub mod review;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use kubeharden_core::k8s::KubeVersion;
use kubeharden_core::rules::Profile;

use review::{Action, AdmissionReview, Judge, Mode, ReviewResponse};

/// An object is at most what etcd stores (1.5 MiB by default) and a request body at most the
/// API server's 3 MiB; an UPDATE's review carries the object and the old object, so up to
/// about 3 MiB of objects plus the review around them. 4 MiB takes every review the API
/// server can send and refuses what only an attacker would.
pub const BODY_LIMIT: usize = 4 * 1024 * 1024;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub listen: String,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// How often the certificate files are checked for a change.
    pub reload_interval: Duration,
    /// How long a client may take to finish its TLS handshake.
    pub handshake_timeout: Duration,
    /// How long requests in flight may take to finish after a shutdown begins.
    pub shutdown_grace: Duration,
}

struct AppState {
    judge: Judge,
    metrics: metrics::Metrics,
    ready: AtomicBool,
    /// Decisions running at once: one per core. More would only share the cores while each
    /// holds its object's parse in memory (a 4 MiB object parses to far more).
    decisions: Arc<tokio::sync::Semaphore>,
    /// With registry access, what the mutation learns about images.
    images: Option<Arc<images::ImageInspector>>,
}

/// A server bound to its address, not yet serving.
pub struct Server {
    listener: TcpListener,
    state: Arc<AppState>,
    certificates: Arc<tls::Certificates>,
    options: Options,
}

impl Server {
    pub async fn bind(options: Options, judge: Judge) -> Result<Server> {
        Self::bind_with_images(options, judge, None).await
    }

    /// A server whose mutations read image configurations through `images`.
    pub async fn bind_with_images(
        options: Options,
        judge: Judge,
        images: Option<Arc<images::ImageInspector>>,
    ) -> Result<Server> {
        let certificates = tls::Certificates::load(&options.tls_cert, &options.tls_key)?;
        let listener = TcpListener::bind(&options.listen)
            .await
            .with_context(|| format!("cannot listen on {}", options.listen))?;
        Ok(Server {
            listener,
            state: Arc::new(AppState {
                judge,
                metrics: metrics::Metrics::default(),
                ready: AtomicBool::new(false),
                decisions: Arc::new(tokio::sync::Semaphore::new(
                    std::thread::available_parallelism().map_or(2, |n| n.get()),
                )),
                images,
            }),
            certificates,
            options,
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serve until `shutdown` completes, then stop accepting, report not ready, and give the
    /// requests in flight the grace period to finish.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        let Server {
            listener,
            state,
            certificates,
            options,
        } = self;
        let acceptor = tokio_rustls::TlsAcceptor::from(certificates.server_config()?);
        certificates.watch(options.reload_interval);
        let app = router(state.clone());
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        state.ready.store(true, Ordering::SeqCst);
        tracing::info!(address = %listener.local_addr()?, "admission webhook listening");
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, do not spin.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let app = app.clone();
            let timeout = options.handshake_timeout;
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, "TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(30))
                    .keep_alive(true);
                let conn = builder.serve_connection(TokioIo::new(tls), service);
                if let Err(e) = watcher.watch(conn).await {
                    tracing::debug!(%peer, "connection ended: {e}");
                }
            });
        }
        state.ready.store(false, Ordering::SeqCst);
        tracing::info!("shutting down");
        drop(listener);
        if tokio::time::timeout(options.shutdown_grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("requests still in flight after the grace period; stopping anyway");
        }
        Ok(())
    }
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/validate/{mode}/{profile}", post(validate))
        .route(
            "/validate/{mode}/{profile}/{version}",
            post(validate_pinned),
        )
        .route("/mutate/{profile}", post(mutate))
        .route("/mutate/{profile}/{version}", post(mutate_pinned))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response()
    }
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct Params {
    version: Option<String>,
}

async fn validate(
    State(state): State<Arc<AppState>>,
    Path((mode, profile)): Path<(String, String)>,
    Query(params): Query<Params>,
    body: Bytes,
) -> Response {
    let Some(mode) = Mode::parse(&mode) else {
        return bad_request(format!(
            "unknown mode `{mode}`; expected enforce, warn or audit"
        ));
    };
    handle(state, Action::Validate(mode), &profile, params, body).await
}

/// The version as a path segment: the API server allows no query in a webhook's service path
/// (each segment must be a DNS-1123 subdomain, which `1.33` is), so the generated
/// configurations use this form.
async fn validate_pinned(
    State(state): State<Arc<AppState>>,
    Path((mode, profile, version)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let Some(mode) = Mode::parse(&mode) else {
        return bad_request(format!(
            "unknown mode `{mode}`; expected enforce, warn or audit"
        ));
    };
    let params = Params {
        version: Some(version),
    };
    handle(state, Action::Validate(mode), &profile, params, body).await
}

async fn mutate_pinned(
    State(state): State<Arc<AppState>>,
    Path((profile, version)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let params = Params {
        version: Some(version),
    };
    handle(state, Action::Mutate, &profile, params, body).await
}

async fn mutate(
    State(state): State<Arc<AppState>>,
    Path(profile): Path<String>,
    Query(params): Query<Params>,
    body: Bytes,
) -> Response {
    handle(state, Action::Mutate, &profile, params, body).await
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response()
}

async fn handle(
    state: Arc<AppState>,
    action: Action,
    profile: &str,
    params: Params,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let profile: Profile = match profile.parse() {
        Ok(p) => p,
        Err(e) => return bad_request(e),
    };
    let version: Option<KubeVersion> = match params.version.as_deref().map(str::parse) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(e)) => return bad_request(format!("`version`: {e}")),
    };
    let review: AdmissionReview = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            state.metrics.rejected("malformed");
            return bad_request(format!("not an AdmissionReview: {e}"));
        }
    };
    if review.api_version.as_deref() != Some(review::API_VERSION)
        || review.kind.as_deref() != Some("AdmissionReview")
    {
        state.metrics.rejected("malformed");
        return bad_request(format!(
            "expected apiVersion {} and kind AdmissionReview",
            review::API_VERSION
        ));
    }
    let Some(request) = review.request else {
        state.metrics.rejected("malformed");
        return bad_request("the AdmissionReview has no request".into());
    };
    let (uid, kind, namespace, name, operation, dry_run) = (
        request.uid.clone(),
        request.kind.kind.clone(),
        request.namespace.clone().unwrap_or_default(),
        request.name.clone().unwrap_or_default(),
        request.operation.clone(),
        request.dry_run.unwrap_or(false),
    );
    // Linting is CPU work; keep it off the threads that move bytes. The permit goes with the
    // work, so a client that hangs up does not free a core still busy with its object. The
    // semaphore is never closed, so acquiring only waits.
    let Ok(permit) = state.decisions.clone().acquire_owned().await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    };
    // With registry access, a mutation first learns its images' configurations, within the
    // budget; the permit is not held while registries answer.
    let (request, facts, permit) = match &state.images {
        Some(inspector) if Judge::mutates(action, &request) => {
            let Some((request, facts)) = image_facts(&state, inspector, permit, request).await
            else {
                tracing::error!(%uid, "finding the object's images failed");
                return (StatusCode::INTERNAL_SERVER_ERROR, "the decision failed\n")
                    .into_response();
            };
            let Ok(permit) = state.decisions.clone().acquire_owned().await else {
                return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
            };
            (request, facts, permit)
        }
        _ => (request, kubeharden_core::facts::Facts::default(), permit),
    };
    let judge_state = state.clone();
    let decision = match tokio::task::spawn_blocking(move || {
        let _permit = permit;
        judge_state
            .judge
            .decide_with(action, profile, version, request, facts)
    })
    .await
    {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(%uid, "the decision failed: {e}");
            return (StatusCode::INTERNAL_SERVER_ERROR, "the decision failed\n").into_response();
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    state.metrics.decision(
        action.as_str(),
        profile.as_str(),
        &namespace,
        decision.outcome,
        &decision.rules,
        seconds,
    );
    // Who and what, never the object's contents.
    tracing::info!(
        %uid, kind, namespace, name, operation, dry_run,
        path = action.as_str(), profile = profile.as_str(),
        outcome = decision.outcome, findings = decision.rules.values().sum::<usize>(),
        ms = seconds * 1000.0,
        "admission review"
    );
    let body = serde_json::to_vec(&ReviewResponse::new(decision.response)).unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The configurations of the images of a mutation's object that are known within the
/// inspector's budget, and the request back. Finding the images is CPU work, done under the
/// decision `permit`; the wait for registries is not. `None` if that work failed.
async fn image_facts(
    state: &Arc<AppState>,
    inspector: &Arc<images::ImageInspector>,
    permit: tokio::sync::OwnedSemaphorePermit,
    request: review::Request,
) -> Option<(review::Request, kubeharden_core::facts::Facts)> {
    let judge_state = state.clone();
    let platform = inspector.default_platform().to_string();
    let (request, wanted) = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let wanted = judge_state.judge.images(&request, &platform);
        (request, wanted)
    })
    .await
    .ok()?;
    let mut facts = kubeharden_core::facts::ImageFacts {
        default_platform: inspector.default_platform().to_string(),
        ..Default::default()
    };
    if !wanted.is_empty() {
        facts.configs = inspector.configs(wanted).await;
    }
    let facts = kubeharden_core::facts::Facts {
        images: Arc::new(facts),
    };
    Some((request, facts))
}
