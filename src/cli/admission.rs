//! `kubeharden admission`: the admission webhook server; `admission manifests` prints its
//! webhook configurations.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};

use kubeharden::admission::{self, Options, review::Judge};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AdmissionArgs {
    #[command(subcommand)]
    command: Option<AdmissionCommand>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(clap::Subcommand)]
enum AdmissionCommand {
    /// Print the ValidatingWebhookConfiguration and MutatingWebhookConfiguration (one entry
    /// per mode and profile, routed by namespace labels) for `kubectl apply -f -`.
    Manifests(ManifestsArgs),
    /// Print a ValidatingAdmissionPolicy and its binding whose CEL implements the profile's
    /// rules, for clusters that enforce without the webhook (Kubernetes 1.30 or later).
    Policy(PolicyArgs),
}

#[derive(clap::Args)]
struct PolicyArgs {
    /// The rules' profile: baseline, restricted or nsa.
    #[arg(long)]
    profile: kubeharden_core::rules::Profile,
    /// The Kubernetes version whose controls apply (the newest known by default); the
    /// binding then selects namespaces labelled with it.
    #[arg(long)]
    version: Option<kubeharden_core::k8s::KubeVersion>,
    /// What the binding does with a failed rule: enforce (Deny), warn or audit; it selects
    /// namespaces labelled `kubeharden.dev/<mode>=<profile>`.
    #[arg(long, default_value = "enforce")]
    mode: kubeharden_core::policy_cel::Action,
    /// Directory of rule files that add to or override the built-in rules.
    #[arg(long)]
    rules: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ManifestsArgs {
    /// Namespace the webhook runs in (never sent to it, as kube-system is not).
    #[arg(long, default_value = "kubeharden")]
    namespace: String,
    /// The webhook's Service.
    #[arg(long, default_value = "kubeharden-admission")]
    service: String,
    /// The cert-manager Certificate whose CA is injected as the caBundle.
    #[arg(long, default_value = "kubeharden-admission")]
    certificate: String,
    /// Seconds the API server waits for an answer (1 to 30).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=30))]
    timeout_seconds: u32,
    /// A Kubernetes version namespaces may pin with a `…-version` label (repeatable).
    #[arg(long = "version")]
    versions: Vec<kubeharden_core::k8s::KubeVersion>,
    /// The server's `--rules` directory: its `workloads/` kinds are routed too.
    #[arg(long)]
    rules: Option<PathBuf>,
    /// The server's `--config`: its `workloads` kinds are routed too.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "LISTEN", default_value = "0.0.0.0:8443")]
    listen: String,
    /// PEM certificate chain (a cert-manager Secret's tls.crt); reloaded when it changes.
    #[arg(long, env = "TLS_CERT", default_value = "/tls/tls.crt")]
    tls_cert: PathBuf,
    /// PEM private key (tls.key); reloaded when it changes.
    #[arg(long, env = "TLS_KEY", default_value = "/tls/tls.key")]
    tls_key: PathBuf,
    /// Configuration: the keys of `.github/kubeharden.yaml` (rules, fail-on, limits, …) plus
    /// an `admission:` section (static exemptions, unsafe-fixes). The profile and version come
    /// from each request's path.
    #[arg(long, env = "KUBEHARDEN_CONFIG")]
    config: Option<PathBuf>,
    /// Directory of rule files that add to or override the built-in rules.
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Seconds between checks of the certificate files for a change.
    #[arg(long, default_value_t = 10)]
    reload_seconds: u64,
    /// Seconds a client may take to finish its TLS handshake.
    #[arg(long, default_value_t = 5)]
    handshake_timeout_seconds: u64,
    /// Seconds requests in flight get to finish after SIGTERM.
    #[arg(long, default_value_t = 20)]
    shutdown_grace: u64,
    /// Log format: text or json.
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    log_format: String,
    #[command(flatten)]
    images: super::images::AdmissionImageArgs,
}

pub fn run(args: AdmissionArgs) -> Result<ExitCode> {
    match args.command {
        Some(AdmissionCommand::Manifests(m)) => {
            // The kinds the server judges with the same `--rules` and `--config`.
            let judge = Judge::load(m.config.as_deref(), super::registry(m.rules.as_deref())?)?;
            let mut sources = String::new();
            if let Some(dir) = &m.rules {
                sources += &format!(" --rules {}", dir.display());
            }
            if let Some(file) = &m.config {
                sources += &format!(" --config {}", file.display());
            }
            let text = admission::manifests::render(&admission::manifests::Target {
                kinds: judge.workload_kinds().clone(),
                sources,
                namespace: m.namespace,
                service: m.service,
                certificate: m.certificate,
                timeout_seconds: m.timeout_seconds,
                versions: m.versions,
            });
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Some(AdmissionCommand::Policy(p)) => policy(p),
        None => serve(args.serve),
    }
}

fn policy(args: PolicyArgs) -> Result<ExitCode> {
    let registry = super::registry(args.rules.as_deref())?;
    let policy = kubeharden_core::policy_cel::generate(&registry, args.profile, args.version)
        .context("cannot write the policy")?;
    let mut command = format!(
        "kubeharden admission policy --profile {}",
        args.profile.as_str()
    );
    if let Some(v) = args.version {
        command += &format!(" --version {v}");
    }
    if args.mode != kubeharden_core::policy_cel::Action::Enforce {
        command += &format!(" --mode {}", args.mode.as_str());
    }
    if let Some(dir) = &args.rules {
        command += &format!(" --rules {}", dir.display());
    }
    print!("{}", policy.render(args.mode, &command));
    Ok(ExitCode::SUCCESS)
}

fn serve(args: ServeArgs) -> Result<ExitCode> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format.as_str() {
        "json" => logs.json().init(),
        _ => logs.with_ansi(false).init(),
    }
    let judge = Judge::load(
        args.config.as_deref(),
        super::registry(args.rules.as_deref())?,
    )?;
    let images = args.images.inspector()?;
    let options = Options {
        listen: args.listen,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        reload_interval: Duration::from_secs(args.reload_seconds.max(1)),
        handshake_timeout: Duration::from_secs(args.handshake_timeout_seconds.max(1)),
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let server = admission::Server::bind_with_images(options, judge, images).await?;
        server.serve(super::shutdown_signal()).await
    })?;
    Ok(ExitCode::SUCCESS)
}
