//! `kubeharden serve`: the GitHub App.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;

use kubeharden::github::{RetryPolicy, Secret};
use kubeharden::service::Launch;
use kubeharden::setup::{CREDENTIALS_FILE, Credentials, Setup};

use super::images::{OciArgs, ScannerArgs};
use super::registry;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The GitHub App's id.
    #[arg(long, env = "APP_ID")]
    app_id: Option<u64>,
    /// File holding the app's private key (PEM), as GitHub's app settings download it.
    #[arg(long, env = "PRIVATE_KEY_PATH")]
    private_key_path: Option<PathBuf>,
    /// The private key itself (PEM), instead of a file.
    #[arg(long, env = "PRIVATE_KEY", hide_env_values = true)]
    private_key: Option<String>,
    /// The secret GitHub signs webhook deliveries with.
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
    /// REST API root: https://api.github.com, or https://HOST/api/v3 for Enterprise Server.
    #[arg(long, env = "GITHUB_API_URL", default_value = "https://api.github.com")]
    github_api_url: String,
    /// Address to listen on.
    #[arg(long, env = "LISTEN", default_value = "0.0.0.0:3000")]
    listen: String,
    #[command(flatten)]
    database: DatabaseArgs,
    /// Jobs run at once by this process.
    #[arg(long, env = "WORKERS", default_value_t = 2)]
    workers: usize,
    /// Log lines as text or as JSON objects (for log collectors).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Every so many seconds, ask GitHub to redeliver the app's webhook deliveries that failed
    /// (for instance while the app was down). Off when absent.
    #[arg(long, env = "REDELIVER_INTERVAL")]
    redeliver_interval: Option<u64>,
    /// Seconds running jobs get to finish on SIGTERM/SIGINT before they are given back.
    #[arg(long, default_value_t = 30)]
    shutdown_grace: u64,
    /// Seconds a worker's claim on a job holds without a heartbeat (renewed every third of it
    /// while the job runs); after a crash another replica takes the job up once it runs out.
    /// A lone SQLite replica requeues its dead predecessor's jobs at start without waiting.
    #[arg(long, env = "JOB_LEASE_SECONDS", default_value_t = 15)]
    job_lease_seconds: u64,
    /// Directory of rule files that add to or override the built-in rules.
    #[arg(long)]
    rules: Option<PathBuf>,
    /// The helm program pull requests' charts are rendered with (default: `helm` on PATH).
    #[arg(long, env = "HELM", value_name = "PATH")]
    helm: Option<PathBuf>,
    /// The kustomize program, or kubectl (default: `kustomize` on PATH, else `kubectl`).
    #[arg(long, env = "KUSTOMIZE", value_name = "PATH")]
    kustomize: Option<PathBuf>,
    /// Seconds one render may take before it is stopped and reported as render-failed.
    #[arg(long, env = "RENDER_TIMEOUT", default_value_t = 60.0)]
    render_timeout: f64,
    /// The largest output one render may print (e.g. 64MiB, the default).
    #[arg(long, env = "RENDER_MAX_OUTPUT", value_name = "SIZE")]
    render_max_output: Option<kubeharden_core::config::ByteSize>,
    /// Renders run at once by this process, over all its jobs' pull requests.
    #[arg(long, env = "RENDER_CONCURRENCY", default_value_t = 2)]
    render_concurrency: usize,
    /// Lint pull requests' files as written: charts and kustomizations are not rendered.
    #[arg(long, env = "NO_RENDER")]
    no_render: bool,
    /// Where the app keeps its state: the credentials file written by the setup flow.
    #[arg(long, env = "DATA_DIR", default_value = ".")]
    data_dir: PathBuf,
    /// The address GitHub and browsers reach this server at (https://kubeharden.example.com).
    /// Needed for the setup flow, which puts it into the app it registers.
    #[arg(long, env = "PUBLIC_URL")]
    public_url: Option<String>,
    /// GitHub's web root for the setup flow; derived from --github-api-url when absent.
    #[arg(long, env = "GITHUB_URL")]
    github_url: Option<String>,
    /// The token the setup page asks for (at least 16 characters); a random one, printed in
    /// the log, when absent.
    #[arg(long, env = "SETUP_TOKEN", hide_env_values = true)]
    setup_token: Option<String>,
    /// Image scanning for repositories that turn it on (`images.scan: true`).
    #[command(flatten)]
    scanner: ScannerArgs,
    #[command(flatten)]
    oci: OciArgs,
    #[command(flatten)]
    limits: LimitArgs,
}

/// What one client may cost the server (docs/configuration.md, "Slow and idle clients").
#[derive(clap::Args)]
struct LimitArgs {
    /// Seconds a client has to send a request's head, from connecting (or from the first byte
    /// of its next request).
    #[arg(long, env = "HEADER_TIMEOUT", default_value_t = 10)]
    header_timeout: u64,
    /// Seconds a kept-alive connection may wait for its next request.
    #[arg(long, env = "IDLE_TIMEOUT", default_value_t = 30)]
    idle_timeout: u64,
    /// Seconds a request body may take, from the end of its head.
    #[arg(long, env = "BODY_TIMEOUT", default_value_t = 20)]
    body_timeout: u64,
    /// Bytes per second a request body must average after its first second; 0 turns it off.
    #[arg(long, env = "BODY_MIN_RATE", default_value_t = 16384)]
    body_min_rate: u64,
    /// The largest request body, in bytes; larger ones are answered 413 unread.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = kubeharden::server::MAX_BODY)]
    max_body_bytes: usize,
    /// Bytes of webhook bodies held in memory at once over all connections; a delivery that
    /// would need more is answered 503 (GitHub can redeliver it).
    #[arg(long, env = "BODY_BUFFER_BYTES", default_value_t = 64 * 1024 * 1024)]
    body_buffer_bytes: usize,
    /// Connections open at once; at the limit new ones wait in the listen backlog. Default: the
    /// open-file limit less an eighth (at least 64) kept for the rest, at most 1024.
    #[arg(long, env = "MAX_CONNECTIONS")]
    max_connections: Option<usize>,
}

impl LimitArgs {
    fn limits(&self) -> Result<kubeharden::edge::Limits> {
        use std::time::Duration;
        let secs = |name: &str, v: u64| {
            if v == 0 {
                bail!("--{name} must be at least 1 second");
            }
            Ok(Duration::from_secs(v))
        };
        let max_body = self.max_body_bytes.max(1);
        if self.body_buffer_bytes < max_body {
            bail!(
                "--body-buffer-bytes ({}) must hold at least one body of --max-body-bytes ({max_body})",
                self.body_buffer_bytes
            );
        }
        Ok(kubeharden::edge::Limits {
            header_timeout: secs("header-timeout", self.header_timeout)?,
            idle_timeout: secs("idle-timeout", self.idle_timeout)?,
            body_timeout: secs("body-timeout", self.body_timeout)?,
            body_min_rate: self.body_min_rate,
            max_body,
            body_buffer: self.body_buffer_bytes,
            max_connections: self
                .max_connections
                .unwrap_or_else(kubeharden::edge::default_max_connections)
                .max(1),
        })
    }
}

#[derive(clap::Args)]
pub(crate) struct DatabaseArgs {
    /// Where deliveries and jobs are kept: sqlite://FILE (the default, created on first start)
    /// or postgres://… for several replicas.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://kubeharden.db",
        hide_env_values = true
    )]
    pub database_url: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

pub fn run(args: ServeArgs) -> Result<ExitCode> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        // Each line a JSON object, with the job's span fields (delivery, job, repo, pr).
        LogFormat::Json => logs.json().with_current_span(true).init(),
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
    }
    let registry = std::sync::Arc::new(registry(args.rules.as_deref())?);
    let credentials_path = args.data_dir.join(CREDENTIALS_FILE);
    // Credentials given explicitly win; then the file the setup flow wrote; else the setup.
    let given = args.app_id.is_some()
        || args.private_key.is_some()
        || args.private_key_path.is_some()
        || args.webhook_secret.is_some();
    let credentials = if given {
        let app_id = args.app_id.context(
            "no app id: pass --app-id or set APP_ID (the number on the app's settings page)",
        )?;
        let key = match (&args.private_key, &args.private_key_path) {
            (Some(key), _) => Secret::new(key.clone()),
            (None, Some(path)) => {
                Secret::new(std::fs::read_to_string(path).with_context(|| {
                    format!("cannot read the private key file {}", path.display())
                })?)
            }
            (None, None) => bail!(
                "no private key: pass --private-key-path or set PRIVATE_KEY_PATH (or PRIVATE_KEY)"
            ),
        };
        let webhook_secret = args
            .webhook_secret
            .clone()
            .filter(|s| !s.is_empty())
            .context("no webhook secret: pass --webhook-secret or set WEBHOOK_SECRET")?;
        Some(Credentials {
            app_id,
            slug: String::new(),
            html_url: String::new(),
            private_key: key.expose().to_string(),
            webhook_secret,
            client_id: String::new(),
            client_secret: String::new(),
        })
    } else {
        Credentials::load(&credentials_path)?
    };
    if credentials.is_none() && args.public_url.is_none() {
        bail!(
            "no credentials: set APP_ID, PRIVATE_KEY_PATH and WEBHOOK_SECRET, or set PUBLIC_URL (the address GitHub reaches this server at) and open PUBLIC_URL/setup to register the app"
        );
    }
    let limits = args.limits.limits()?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    // octocrab's client needs the runtime to exist when it is built.
    let _runtime = runtime.enter();
    runtime.block_on(async move {
        let store = kubeharden::jobs::Store::open(&args.database.database_url).await?;
        let orphans = store
            .requeue_orphans()
            .await
            .context("cannot requeue the jobs a previous run left running")?;
        if orphans > 0 {
            tracing::info!(
                jobs = orphans,
                "requeued the jobs a previous run left running"
            );
        }
        let store = std::sync::Arc::new(store);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let workers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let launch = Launch {
            registry,
            store,
            stopped,
            workers: workers.clone(),
            api_url: args.github_api_url.clone(),
            retry: RetryPolicy::default(),
            retry_base: std::time::Duration::from_secs(30),
            lease: std::time::Duration::from_secs(args.job_lease_seconds.max(1)),
            worker_count: args.workers.max(1),
            worker_prefix: format!(
                "{}-{}",
                std::env::var("HOSTNAME").unwrap_or_else(|_| "kubeharden".into()),
                std::process::id()
            ),
            grace: std::time::Duration::from_secs(args.shutdown_grace),
            redeliver_interval: args.redeliver_interval,
            scanner: args.scanner.scanner(None),
            oci_client: args.oci.client()?,
            oci_private_hosts: args.oci.registry_private_hosts.clone(),
            render: std::sync::Arc::new(kubeharden::pipeline::RenderSettings {
                tools: kubeharden::renderers::Tools::find(
                    args.helm.as_deref(),
                    args.kustomize.as_deref(),
                ),
                options: kubeharden::renderers::Options {
                    timeout: std::time::Duration::from_secs_f64(args.render_timeout.max(0.001)),
                    max_output: args
                        .render_max_output
                        .map_or(kubeharden::renderers::Options::default().max_output, |s| {
                            s.0
                        }),
                    concurrency: args.render_concurrency.max(1),
                    ..kubeharden::renderers::Options::default()
                },
                disabled: args.no_render,
            }),
            limits: limits.clone(),
        };
        let router = match credentials {
            Some(c) => launch.start(&c)?.0,
            None => {
                let public = args.public_url.clone().unwrap_or_default();
                let github_url = args
                    .github_url
                    .clone()
                    .unwrap_or_else(|| kubeharden::setup::web_url(&args.github_api_url));
                let launch = std::sync::Arc::new(launch);
                let setup = Setup::new(
                    &public,
                    &github_url,
                    &args.github_api_url,
                    credentials_path,
                    args.setup_token.clone(),
                    std::sync::Arc::new(move |c| {
                        let launch = launch.clone();
                        Box::pin(async move { launch.start(&c).map(|(router, _)| router) })
                    }),
                )?;
                // The one secret this log line carries on purpose: the operator needs it once.
                tracing::info!(
                    "no credentials yet: open {} to register the GitHub App",
                    setup.link()
                );
                kubeharden::setup::router(setup)
            }
        };
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        tracing::info!(
            address = %listener.local_addr()?,
            max_connections = limits.max_connections,
            "KubeHarden is listening"
        );
        kubeharden::edge::serve(listener, router, limits, super::shutdown_signal()).await;
        // No more deliveries: let the workers finish or give back what they hold.
        let _ = stop.send(true);
        let handles: Vec<_> =
            std::mem::take(&mut *workers.lock().unwrap_or_else(|e| e.into_inner()));
        for w in handles {
            let _ = w.await;
        }
        tracing::info!("stopped");
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
