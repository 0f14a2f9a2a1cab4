//! The command line: one module per subcommand; what they share (the rules, the repository
//! configuration and the common flags) lives here.

#[cfg(feature = "admission")]
mod admission;
mod fix;
#[cfg(feature = "images")]
mod images;
mod inputs;
#[cfg(feature = "app")]
mod jobs;
mod lint;
mod render;
mod review;
mod rules;
#[cfg(feature = "app")]
mod serve;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use kubeharden_core::config::{CONFIG_PATHS, Config};
use kubeharden_core::k8s::KubeVersion;
use kubeharden_core::lint::Settings;
use kubeharden_core::rules::{Profile, Registry, Severity};

#[derive(Parser)]
#[command(
    name = "kubeharden",
    version,
    about = "Kubernetes pod-security linting with one-click fixes"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Lint Kubernetes manifests (files, directories, or - for standard input).
    Lint(lint::LintArgs),
    /// Fix what can be fixed with minimal edits; prints a unified diff unless --write.
    Fix(fix::FixArgs),
    /// Print the review the GitHub App would post for the changes from --base to --head, in a
    /// local git checkout, without any GitHub access.
    Review(review::ReviewArgs),
    /// Run the GitHub App: review pull requests that change Kubernetes YAML.
    #[cfg(feature = "app")]
    Serve(Box<serve::ServeArgs>),
    /// See and re-run the app's jobs: `jobs list [--state dead]`, `jobs retry ID`.
    #[cfg(feature = "app")]
    Jobs(jobs::JobsArgs),
    /// Run the GitHub App (not in this build: it was built without the `app` feature).
    #[cfg(not(feature = "app"))]
    Serve(NotBuilt),
    /// See and re-run the app's jobs (not in this build: it was built without the `app` feature).
    #[cfg(not(feature = "app"))]
    Jobs(NotBuilt),
    /// Run the admission webhook: the same rules at the cluster's door.
    #[cfg(feature = "admission")]
    Admission(Box<admission::AdmissionArgs>),
    /// Run the admission webhook (not in this build: it was built without the `admission`
    /// feature).
    #[cfg(not(feature = "admission"))]
    Admission(NotBuilt),
    /// List the rules.
    Rules(rules::RulesArgs),
    /// Print a rule's documentation.
    Explain {
        rule: String,
        /// Directory of rule files that add to or override the built-in rules.
        #[arg(long)]
        rules: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
pub(crate) struct CommonArgs {
    /// baseline, restricted or nsa (the default: restricted plus the NSA/CISA guidance).
    #[arg(long)]
    pub profile: Option<Profile>,
    /// Configuration file; by default .github/kubeharden.yaml or .kubeharden.yaml is looked up
    /// from the current directory upwards.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Directory of rule files that add to or override the built-in rules.
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// Kubernetes version the manifests target, e.g. 1.33 (default: the newest known).
    #[arg(long)]
    pub kubernetes_version: Option<KubeVersion>,
    /// Lowest severity that makes the exit code 1: note, warning or error.
    #[arg(long)]
    pub fail_on: Option<Severity>,
    /// The largest file parsed, e.g. 8MiB (default 2MiB, at most 64MiB); larger files are
    /// reported as yaml-limit.
    #[arg(long, value_name = "SIZE")]
    pub max_file_size: Option<kubeharden_core::config::ByteSize>,
}

/// Arguments of a subcommand this build leaves out; using it says how to get it.
#[cfg(any(not(feature = "app"), not(feature = "admission")))]
#[derive(clap::Args)]
pub struct NotBuilt {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    _args: Vec<String>,
}

/// Parse the command line, run the subcommand, and turn its outcome into the exit code: 0, 1
/// when findings reach the threshold, 2 on usage or I/O errors.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Lint(args) => lint::run(args),
        Command::Fix(args) => fix::run(args),
        Command::Review(args) => review::run(args),
        #[cfg(feature = "app")]
        Command::Serve(args) => serve::run(*args),
        #[cfg(feature = "app")]
        Command::Jobs(args) => jobs::run(args),
        #[cfg(not(feature = "app"))]
        Command::Serve(_) | Command::Jobs(_) => Err(not_built("app", "the GitHub App")),
        #[cfg(feature = "admission")]
        Command::Admission(args) => admission::run(*args),
        #[cfg(not(feature = "admission"))]
        Command::Admission(_) => Err(not_built("admission", "the admission webhook")),
        Command::Rules(args) => rules::list(args),
        Command::Explain { rule, rules } => rules::explain(&rule, rules.as_deref()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kubeharden: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The built-in rules, with the rule files of `dir` added or overriding them, and the kinds
/// that run pods of its `workloads/` folder.
pub(crate) fn registry(dir: Option<&Path>) -> Result<Registry> {
    let mut registry = Registry::builtin().context("built-in rules are broken")?;
    if let Some(dir) = dir {
        let files = yaml_files_in(dir)?;
        registry.extend(files.iter().map(|(o, t)| (o.clone(), t.as_str())))?;
        let workloads = dir.join("workloads");
        if workloads.is_dir() {
            let files = yaml_files_in(&workloads)?;
            registry.extend_workloads(files.iter().map(|(o, t)| (o.clone(), t.as_str())))?;
        }
    }
    Ok(registry)
}

/// The YAML files directly in `dir`, as (path, text), in name order.
fn yaml_files_in(dir: &Path) -> Result<Vec<(String, String)>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read rules from {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && kubeharden_core::config::is_yaml(&p.to_string_lossy()))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Ok((path.display().to_string(), text))
        })
        .collect()
}

/// The configuration file named on the command line, or the one found from here upwards.
fn find_config(explicit: Option<&Path>) -> Result<Option<(PathBuf, PathBuf)>> {
    if let Some(p) = explicit {
        let root = p
            .parent()
            .map(|d| {
                if d.ends_with(".github") {
                    d.parent().unwrap_or(d)
                } else {
                    d
                }
            })
            .unwrap_or(Path::new("."))
            .to_path_buf();
        return Ok(Some((p.to_path_buf(), root)));
    }
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    for dir in cwd.ancestors() {
        for candidate in CONFIG_PATHS {
            let p = dir.join(candidate);
            if p.is_file() {
                return Ok(Some((p, dir.to_path_buf())));
            }
        }
        if dir.join(".git").exists() {
            break;
        }
    }
    Ok(None)
}

/// The rules, the repository configuration and the settings the command line asks for.
pub(crate) struct Setup {
    pub registry: Registry,
    pub config: Config,
    pub config_root: Option<PathBuf>,
    pub settings: Settings,
}

pub(crate) fn setup(common: &CommonArgs) -> Result<Setup> {
    let registry = registry(common.rules.as_deref())?;
    let (config, config_root) = match find_config(common.config.as_deref())? {
        Some((path, root)) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let config = Config::parse(&path.display().to_string(), &text, &registry)?;
            (config, Some(root))
        }
        None => (Config::default(), None),
    };
    let mut settings: Settings = config.settings();
    if let Some(p) = common.profile {
        settings.profile = p;
    }
    if let Some(v) = common.kubernetes_version {
        settings.kube_version = v;
    }
    if let Some(f) = common.fail_on {
        settings.fail_on = f;
    }
    if let Some(size) = common.max_file_size {
        settings.limits.max_bytes = size.0;
    }
    Ok(Setup {
        registry,
        config,
        config_root,
        settings,
    })
}

/// `--inspect-images` and what it reads with, shared by `lint`, `fix` and `review`.
#[derive(clap::Args, Debug)]
pub(crate) struct InspectArgs {
    /// Read each image's configuration from its registry (user, volumes, ports) and let it
    /// decide what is safe: `runAsNonRoot` for a non-root image, the IDs of a named user,
    /// emptyDirs for the volumes it writes; `--format json` lists each container's `image`.
    #[arg(long)]
    pub inspect_images: bool,
    /// The platform images are read for when a pod names no `kubernetes.io/arch`.
    #[arg(long, default_value = kubeharden_core::facts::DEFAULT_PLATFORM)]
    pub default_platform: String,
    /// A Docker `config.json` with credentials for private registries (`auths`).
    #[arg(long, env = "REGISTRY_AUTH_FILE")]
    pub registry_auth_file: Option<PathBuf>,
}

impl InspectArgs {
    /// With `--inspect-images`, each image's configuration (by image and platform) into `images`.
    pub(crate) fn read_into(
        &self,
        files: &[kubeharden_core::source::SourceFile],
        settings: &Settings,
        registry: &Registry,
        images: &mut kubeharden_core::facts::ImageFacts,
    ) -> Result<()> {
        if !self.inspect_images {
            return Ok(());
        }
        let kinds = registry.workloads_with(&settings.workloads);
        images.configs = self.inspect(files, settings, &kinds, &images.scans)?;
        images.default_platform = self.default_platform.clone();
        Ok(())
    }

    #[cfg(feature = "images")]
    fn inspect(
        &self,
        files: &[kubeharden_core::source::SourceFile],
        settings: &Settings,
        kinds: &kubeharden_core::workloads::WorkloadKinds,
        scans: &std::collections::BTreeMap<String, kubeharden_core::vuln::ScanOutcome>,
    ) -> Result<std::collections::BTreeMap<(String, String), kubeharden_core::facts::Inspection>>
    {
        images::inspect_local(
            files,
            settings,
            kinds,
            self.registry_auth_file.as_deref(),
            &self.default_platform,
            scans,
        )
    }

    #[cfg(not(feature = "images"))]
    fn inspect(
        &self,
        _: &[kubeharden_core::source::SourceFile],
        _: &Settings,
        _: &kubeharden_core::workloads::WorkloadKinds,
        _: &std::collections::BTreeMap<String, kubeharden_core::vuln::ScanOutcome>,
    ) -> Result<std::collections::BTreeMap<(String, String), kubeharden_core::facts::Inspection>>
    {
        Err(not_built("images", "registry access (`--inspect-images`)"))
    }
}

/// The error for a flag or subcommand whose feature this build was made without.
#[cfg_attr(
    all(feature = "app", feature = "images", feature = "admission"),
    allow(dead_code)
)]
pub(crate) fn not_built(feature: &str, what: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "this kubeharden was built without {what}; build it with `cargo build --release --features {feature}` (the release image has every feature)"
    )
}

/// SIGTERM (Kubernetes stopping the pod) or SIGINT: when the servers begin a graceful shutdown.
#[cfg(any(feature = "app", feature = "admission"))]
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}
