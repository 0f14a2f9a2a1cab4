//! The composition root of `kubeharden serve`: the GitHub client, the job context, the server
//! state, the workers and the redelivery loop, put together in one place. `kubeharden serve`
//! and the tests' harness both start the app through [`Launch::start`], so the tests run what
//! production runs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use kubeharden_core::rules::Registry;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::edge;
use crate::github::{App, RetryPolicy};
use crate::jobs::Store;
use crate::oci::OciClient;
use crate::pipeline::JobContext;
use crate::scan::Scanner;
use crate::server::{self, ServerState};
use crate::setup::Credentials;

/// Everything needed to start the app once its credentials are known (at start-up, or when the
/// setup flow has registered it).
pub struct Launch {
    pub registry: Arc<Registry>,
    pub store: Arc<Store>,
    /// Turns true when the server stops taking deliveries: the workers finish and return.
    pub stopped: watch::Receiver<bool>,
    /// The workers started so far, for the caller to wait on at shutdown.
    pub workers: Arc<Mutex<Vec<JoinHandle<()>>>>,
    pub api_url: String,
    pub retry: RetryPolicy,
    /// First delay before a failed job runs again.
    pub retry_base: Duration,
    pub lease: Duration,
    pub worker_count: usize,
    /// Workers are named `<prefix>-<n>` in the job table.
    pub worker_prefix: String,
    /// Time running jobs get to finish once `stopped` turns true.
    pub grace: Duration,
    /// Seconds between asking GitHub to redeliver failed deliveries; off when `None` or 0.
    pub redeliver_interval: Option<u64>,
    pub scanner: Option<Arc<Scanner>>,
    pub oci_client: Option<Arc<OciClient>>,
    pub oci_private_hosts: Vec<String>,
    /// How pull requests' charts and kustomizations are rendered.
    pub render: Arc<crate::pipeline::RenderSettings>,
    /// What a client may cost; [`edge::serve`] serves the router under them.
    pub limits: edge::Limits,
}

impl Launch {
    /// Start the workers (and the redelivery loop); the router that serves the app, and the
    /// state its handlers share.
    pub fn start(&self, credentials: &Credentials) -> Result<(axum::Router, Arc<ServerState>)> {
        let app = App::new(
            credentials.app_id,
            &credentials.private_key(),
            &self.api_url,
            self.retry,
        )
        .context("cannot start the GitHub App")?;
        let jobs = Arc::new(JobContext {
            app,
            registry: self.registry.clone(),
            fetch_concurrency: 8,
            retry_base: self.retry_base,
            lease: self.lease,
            scanner: self.scanner.clone(),
            oci_client: self.oci_client.clone(),
            oci_private_hosts: self.oci_private_hosts.clone(),
            render: self.render.clone(),
        });
        let state = ServerState::new(
            credentials.webhook_secret(),
            jobs,
            self.store.clone(),
            self.limits.body_buffer,
        );
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        for i in 0..self.worker_count {
            workers.push(tokio::spawn(server::work(
                state.clone(),
                format!("{}-{i}", self.worker_prefix),
                self.stopped.clone(),
                self.grace,
            )));
        }
        if let Some(every) = self.redeliver_interval.filter(|s| *s > 0) {
            let app = state.jobs.app.clone();
            let period = Duration::from_secs(every);
            // Look back over two periods (at least ten minutes), so nothing falls between runs.
            let window = chrono::Duration::seconds((2 * every).max(600) as i64);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                loop {
                    tick.tick().await;
                    if let Err(e) = app.redeliver_failed(window).await {
                        tracing::warn!("cannot reconcile webhook deliveries: {e}");
                    }
                }
            });
        }
        tracing::info!(
            app_id = credentials.app_id,
            workers = self.worker_count,
            "serving the GitHub App"
        );
        Ok((server::router(state.clone()), state))
    }
}
