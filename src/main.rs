use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};

use kubeharden::config::{CONFIG_PATHS, Config};
use kubeharden::fix::fix_file;
use kubeharden::k8s::KubeVersion;
use kubeharden::lint::{Linter, Settings};
use kubeharden::render;
use kubeharden::rules::{Applicability, Profile, Registry, Severity};
use kubeharden::source::SourceFile;

#[derive(Parser)]
#[command(
    name = "kubeharden",
    version,
    about = "Kubernetes pod-security linting with one-click fixes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Lint Kubernetes manifests (files, directories, or - for standard input).
    Lint(LintArgs),
    /// Fix what can be fixed with minimal edits; prints a unified diff unless --write.
    Fix(FixArgs),
    /// Print the review the GitHub App would post for the changes from --base to --head, in a
    /// local git checkout, without any GitHub access.
    Review(ReviewArgs),
    /// Run the GitHub App: review pull requests that change Kubernetes YAML.
    Serve(Box<ServeArgs>),
    /// See and re-run the app's jobs: `jobs list [--state dead]`, `jobs retry ID`.
    Jobs(JobsArgs),
    /// List the rules.
    Rules(RulesArgs),
    /// Print a rule's documentation.
    Explain {
        rule: String,
        /// Directory of rule files that add to or override the built-in rules.
        #[arg(long)]
        rules: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
    Sarif,
    Github,
}

#[derive(clap::Args)]
struct LintArgs {
    /// Files or directories (searched for *.yaml and *.yml); `-` reads standard input.
    #[arg(default_value = ".")]
    paths: Vec<String>,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    #[command(flatten)]
    common: CommonArgs,
    /// Also list the documents that were skipped and why.
    #[arg(long, short)]
    verbose: bool,
    /// Scan every container image with a vulnerability scanner (Trivy by default) and report
    /// what it finds as `image-vulnerable` on the image's line.
    #[arg(long)]
    scan_images: bool,
    #[command(flatten)]
    scanner: ScannerArgs,
}

#[derive(clap::Args)]
struct ScannerArgs {
    /// The vulnerability scanner to run on images: trivy or grype.
    #[arg(long, env = "SCANNER", value_enum)]
    scanner: Option<kubeharden::scan::ScannerKind>,
    /// The scanner's executable (default: `trivy` or `grype` on PATH).
    #[arg(long, env = "SCANNER_PATH")]
    scanner_path: Option<PathBuf>,
    /// Trivy in client/server mode: the Trivy server's URL.
    #[arg(long, env = "TRIVY_SERVER")]
    trivy_server: Option<String>,
    /// Seconds the scan of one image may take.
    #[arg(long, env = "SCAN_TIMEOUT", default_value_t = 300)]
    scan_timeout: u64,
    /// Images scanned at once.
    #[arg(long, env = "SCAN_CONCURRENCY", default_value_t = 2)]
    scan_concurrency: usize,
}

impl ScannerArgs {
    fn scanner(
        &self,
        default: Option<kubeharden::scan::ScannerKind>,
    ) -> Option<std::sync::Arc<kubeharden::scan::Scanner>> {
        let kind = self.scanner.or(default)?;
        Some(kubeharden::scan::Scanner::new(
            kind,
            self.scanner_path.clone(),
            self.trivy_server.clone(),
            std::time::Duration::from_secs(self.scan_timeout.max(1)),
            self.scan_concurrency,
        ))
    }
}

#[derive(clap::Args)]
struct FixArgs {
    /// Files or directories (searched for *.yaml and *.yml); `-` reads standard input.
    #[arg(default_value = ".")]
    paths: Vec<String>,
    /// Print a unified diff of the fixes (the default).
    #[arg(long, conflicts_with = "write")]
    diff: bool,
    /// Rewrite the files (for `-`, print the fixed text) instead of printing a diff.
    #[arg(long)]
    write: bool,
    /// Also apply unsafe fixes (ones that can stop a workload from working; see `explain`).
    #[arg(long)]
    unsafe_fixes: bool,
    /// Only these rules (comma-separated ids).
    #[arg(long, value_delimiter = ',')]
    select: Vec<String>,
    /// Not these rules (comma-separated ids).
    #[arg(long, value_delimiter = ',')]
    ignore: Vec<String>,
    /// Pin every tagged image to the digest its registry serves now (asks the registries;
    /// credentials from --registry-auth-file).
    #[arg(long)]
    pin_digests: bool,
    /// A Docker `config.json` with credentials for private registries (`auths`).
    #[arg(long, env = "REGISTRY_AUTH_FILE")]
    registry_auth_file: Option<PathBuf>,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(clap::Args)]
struct ServeArgs {
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
    /// Seconds a worker's claim on a job holds without a heartbeat; after a crash the job is
    /// taken up again once it runs out.
    #[arg(long, env = "JOB_LEASE_SECONDS", default_value_t = 120)]
    job_lease_seconds: u64,
    /// Directory of rule files that add to or override the built-in rules.
    #[arg(long)]
    rules: Option<PathBuf>,
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
    registries: RegistryArgs,
}

#[derive(clap::Args)]
struct RegistryArgs {
    /// Let repositories that ask for it (`images.pin-digests: true`) have their image tags
    /// resolved to digests through the registries' API.
    #[arg(long, env = "REGISTRY_ACCESS")]
    registry_access: bool,
    /// A Docker `config.json` with credentials for private registries (`auths`).
    #[arg(long, env = "REGISTRY_AUTH_FILE")]
    registry_auth_file: Option<PathBuf>,
    /// Registries on loopback or private addresses that may be contacted, as `host[:port]`
    /// (comma-separated); plain http is used for them. Others of that kind are never asked.
    #[arg(long, env = "REGISTRY_PRIVATE_HOSTS", value_delimiter = ',')]
    registry_private_hosts: Vec<String>,
    /// Seconds a registry request may take.
    #[arg(long, env = "REGISTRY_TIMEOUT", default_value_t = 10)]
    registry_timeout: u64,
}

impl RegistryArgs {
    fn client(&self) -> Result<Option<std::sync::Arc<kubeharden::registry::RegistryClient>>> {
        use kubeharden::registry::RegistryClient;
        if !self.registry_access {
            return Ok(None);
        }
        let auth = match &self.registry_auth_file {
            Some(path) => RegistryClient::auth_from_docker_config(path)?,
            None => Default::default(),
        };
        let mut client = RegistryClient::new(
            auth,
            std::time::Duration::from_secs(self.registry_timeout.max(1)),
        )?;
        client.set_insecure_http_hosts(self.registry_private_hosts.clone());
        client.guard_network(self.registry_private_hosts.clone());
        Ok(Some(std::sync::Arc::new(client)))
    }
}

#[derive(clap::Args)]
struct DatabaseArgs {
    /// Where deliveries and jobs are kept: sqlite://FILE (the default, created on first start)
    /// or postgres://… for several replicas.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://kubeharden.db",
        hide_env_values = true
    )]
    database_url: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args)]
struct JobsArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(subcommand)]
    action: JobsAction,
}

#[derive(Subcommand)]
enum JobsAction {
    /// The newest jobs, with their state, attempts and last error.
    List {
        /// Only jobs in this state: queued, running, done, superseded or dead.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Queue a finished or dead job again, with fresh attempts.
    Retry { id: i64 },
}

#[derive(clap::Args)]
struct ReviewArgs {
    /// The branch the pull request merges into (its configuration applies, as in the app).
    #[arg(long)]
    base: String,
    /// The pull request's head.
    #[arg(long, default_value = "HEAD")]
    head: String,
    /// Print the review as JSON (the payload the app would send).
    #[arg(long)]
    json: bool,
    /// Directory of rule files that add to or override the built-in rules.
    #[arg(long)]
    rules: Option<PathBuf>,
}

#[derive(clap::Args)]
struct CommonArgs {
    /// baseline, restricted or nsa (the default: restricted plus the NSA/CISA guidance).
    #[arg(long)]
    profile: Option<Profile>,
    /// Configuration file; by default .github/kubeharden.yaml or .kubeharden.yaml is looked up
    /// from the current directory upwards.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Directory of rule files that add to or override the built-in rules.
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Kubernetes version the manifests target, e.g. 1.33 (default: the newest known).
    #[arg(long)]
    kubernetes_version: Option<KubeVersion>,
    /// Lowest severity that makes the exit code 1: note, warning or error.
    #[arg(long)]
    fail_on: Option<Severity>,
}

#[derive(clap::Args)]
struct RulesArgs {
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Print the rules as JSON.
    #[arg(long)]
    json: bool,
    /// Write each rule's documentation page to DIR/<rule-id>.md.
    #[arg(long, value_name = "DIR")]
    write_docs: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Lint(args) => lint(args),
        Command::Fix(args) => fix(args),
        Command::Review(args) => review(args),
        Command::Serve(args) => serve(*args),
        Command::Jobs(args) => jobs(args),
        Command::Rules(args) => list_rules(args),
        Command::Explain { rule, rules } => explain(&rule, rules.as_deref()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kubeharden: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn registry(dir: Option<&Path>) -> Result<Registry> {
    let mut registry = Registry::builtin().context("built-in rules are broken")?;
    if let Some(dir) = dir {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read rules from {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| kubeharden::config::is_yaml(&p.to_string_lossy()))
            .collect();
        paths.sort();
        let mut files = Vec::new();
        for path in paths {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            files.push((path.display().to_string(), text));
        }
        registry.extend(
            files
                .iter()
                .map(|(origin, text)| (origin.clone(), text.as_str())),
        )?;
    }
    Ok(registry)
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
struct Setup {
    registry: Registry,
    config: Config,
    config_root: Option<PathBuf>,
    settings: Settings,
}

fn setup(common: &CommonArgs) -> Result<Setup> {
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
    Ok(Setup {
        registry,
        config,
        config_root,
        settings,
    })
}

fn lint(args: LintArgs) -> Result<ExitCode> {
    let Setup {
        registry,
        config,
        config_root,
        settings,
    } = setup(&args.common)?;
    let (files, io_errors) = collect_inputs(&args.paths, &config, config_root.as_deref());
    let mut settings = settings;
    if args.scan_images
        && let Some(scanner) = args
            .scanner
            .scanner(Some(kubeharden::scan::ScannerKind::Trivy))
    {
        let images: Vec<String> = kubeharden::image::uses(&files, &settings.limits)
            .into_iter()
            .map(|u| u.image)
            .filter(|i| kubeharden::image::parse(i).is_ok())
            .collect();
        let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
        let scans = runtime.block_on(scanner.scan_all(&images));
        settings.images.scans = std::sync::Arc::new(scans);
    }
    let linter = Linter::new(&registry, settings);
    let report = linter.lint_files(&files);
    let output = match args.format {
        Format::Text => {
            let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            render::text(&report, color, args.verbose)
        }
        Format::Json => render::json(&report),
        Format::Sarif => render::sarif(&report, linter.active_rules()),
        Format::Github => render::github(&report),
    };
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`| head`) is not an error worth a message.
    let _ = stdout.write_all(output.as_bytes());
    let _ = stdout.flush();
    for e in &io_errors {
        eprintln!("kubeharden: {e:#}");
    }
    Ok(if !io_errors.is_empty() {
        ExitCode::from(2)
    } else if report.failed(linter.settings.fail_on) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn fix(args: FixArgs) -> Result<ExitCode> {
    let Setup {
        registry,
        config,
        config_root,
        mut settings,
    } = setup(&args.common)?;
    for id in args.select.iter().chain(&args.ignore) {
        if registry.get(id).is_none() {
            bail!("unknown rule `{id}`; `kubeharden rules` lists them");
        }
    }
    if !args.select.is_empty() {
        let all: Vec<String> = registry.iter().map(|r| r.id.clone()).collect();
        settings
            .disable
            .extend(all.into_iter().filter(|id| !args.select.contains(id)));
        settings.enable.extend(args.select.iter().cloned());
    }
    settings.disable.extend(args.ignore.iter().cloned());
    let min = if args.unsafe_fixes {
        Applicability::Unsafe
    } else {
        Applicability::Safe
    };
    let (files, mut io_errors) = collect_inputs(&args.paths, &config, config_root.as_deref());
    if args.pin_digests {
        settings.enable.insert("image-not-pinned".into());
        settings.disable.remove("image-not-pinned");
        let (digests, problems) =
            local_digests(&files, &settings, args.registry_auth_file.as_deref())?;
        // A registry that cannot answer leaves its images unpinned, and says so.
        for p in problems {
            eprintln!("kubeharden: {p}");
        }
        settings.images.digests = std::sync::Arc::new(digests);
    }
    let linter = Linter::new(&registry, settings);
    let mut out = String::new();
    let mut remaining = false;
    let mut fixed_count = 0;
    let mut unsafe_left = 0;
    let mut unsafe_applied = std::collections::BTreeSet::new();
    let mut notes = Vec::new();
    // Each file is reduced to what is printed as soon as it is fixed, so the whole corpus of
    // results is never held at once.
    let outcomes = kubeharden::lint::parallel_map(&files, |file| {
        fix_file(&linter, file, min).map(|result| {
            let output = if result.fixed == file.text {
                Output::Unchanged
            } else if !args.write {
                Output::Diff(kubeharden::commands::unified_diff(
                    &file.path,
                    &file.text,
                    &result.fixed,
                ))
            } else {
                Output::Fixed(result.fixed.clone())
            };
            FileOutcome {
                output,
                fixed: result.fixed_findings.len(),
                unsafe_left: result
                    .remaining
                    .findings
                    .iter()
                    .filter(|f| f.applicability == Some(Applicability::Unsafe))
                    .count(),
                failed: result.remaining.failed(linter.settings.fail_on),
                unsafe_rules: result.unsafe_rules,
                notes: result.notes,
            }
        })
    });
    for (file, outcome) in files.iter().zip(outcomes) {
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                io_errors.push(e.into());
                continue;
            }
        };
        fixed_count += outcome.fixed;
        unsafe_left += outcome.unsafe_left;
        remaining |= outcome.failed;
        unsafe_applied.extend(outcome.unsafe_rules);
        notes.extend(outcome.notes.iter().map(|n| format!("{}: {n}", file.path)));
        match outcome.output {
            Output::Unchanged => {}
            Output::Diff(diff) => out += &diff,
            Output::Fixed(text) if file.path == "<stdin>" => out += &text,
            Output::Fixed(text) => {
                if let Err(e) = std::fs::write(&file.path, text) {
                    io_errors
                        .push(anyhow::Error::new(e).context(format!("cannot write {}", file.path)));
                }
            }
        }
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
    let verb = if args.write { "Fixed" } else { "Would fix" };
    eprintln!(
        "{verb} {fixed_count} finding{}.",
        if fixed_count == 1 { "" } else { "s" }
    );
    for note in notes {
        eprintln!("note: {note}");
    }
    // Unsafe fixes can stop a workload from working: say how, once per rule.
    for id in &unsafe_applied {
        if let Some(fix) = registry.get(id).and_then(|r| r.fix.as_ref()) {
            eprintln!(
                "warning: [{id}] {}",
                kubeharden::source::one_line(&fix.safety)
            );
        }
    }
    if unsafe_left > 0 && !args.unsafe_fixes {
        eprintln!(
            "{unsafe_left} more can be fixed with --unsafe-fixes (read `kubeharden explain RULE` first)."
        );
    }
    for e in &io_errors {
        eprintln!("kubeharden: {e:#}");
    }
    Ok(if !io_errors.is_empty() {
        ExitCode::from(2)
    } else if remaining {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn serve(args: ServeArgs) -> Result<ExitCode> {
    use kubeharden::github::Secret;
    use kubeharden::setup::{CREDENTIALS_FILE, Credentials, Setup};
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
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    // octocrab's client needs the runtime to exist when it is built.
    let _runtime = runtime.enter();
    runtime.block_on(async move {
        let store =
            std::sync::Arc::new(kubeharden::jobs::Store::open(&args.database.database_url).await?);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let workers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let launch = Launch {
            registry,
            store,
            stopped,
            workers: workers.clone(),
            api_url: args.github_api_url.clone(),
            lease: std::time::Duration::from_secs(args.job_lease_seconds.max(1)),
            worker_count: args.workers.max(1),
            grace: std::time::Duration::from_secs(args.shutdown_grace),
            redeliver_interval: args.redeliver_interval,
            scanner: args.scanner.scanner(None),
            registry_client: args.registries.client()?,
            private_registry_hosts: args.registries.registry_private_hosts.clone(),
        };
        let router = match credentials {
            Some(c) => launch.start(c)?,
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
                        Box::pin(async move { launch.start(c) })
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
        tracing::info!(address = %listener.local_addr()?, "KubeHarden is listening");
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("the server stopped")?;
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

/// Everything needed to start the app once its credentials are known (at start-up, or when the
/// setup flow has registered it).
struct Launch {
    registry: std::sync::Arc<Registry>,
    store: std::sync::Arc<kubeharden::jobs::Store>,
    stopped: tokio::sync::watch::Receiver<bool>,
    workers: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    api_url: String,
    lease: std::time::Duration,
    worker_count: usize,
    grace: std::time::Duration,
    redeliver_interval: Option<u64>,
    scanner: Option<std::sync::Arc<kubeharden::scan::Scanner>>,
    registry_client: Option<std::sync::Arc<kubeharden::registry::RegistryClient>>,
    private_registry_hosts: Vec<String>,
}

impl Launch {
    /// Start the workers (and the redelivery loop); the router that serves the app.
    fn start(&self, credentials: kubeharden::setup::Credentials) -> Result<axum::Router> {
        use kubeharden::github::{App, RetryPolicy};
        let app = App::new(
            credentials.app_id,
            &credentials.private_key(),
            &self.api_url,
            RetryPolicy::default(),
        )
        .context("cannot start the GitHub App")?;
        let jobs = std::sync::Arc::new(kubeharden::pipeline::JobContext {
            app,
            registry: self.registry.clone(),
            fetch_concurrency: 8,
            retry_base: std::time::Duration::from_secs(30),
            lease: self.lease,
            scanner: self.scanner.clone(),
            registry_client: self.registry_client.clone(),
            private_registry_hosts: self.private_registry_hosts.clone(),
        });
        let state = kubeharden::server::ServerState::new(
            credentials.webhook_secret(),
            jobs,
            self.store.clone(),
        );
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "kubeharden".into());
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        for i in 0..self.worker_count {
            let worker = format!("{host}-{}-{i}", std::process::id());
            workers.push(tokio::spawn(kubeharden::server::work(
                state.clone(),
                worker,
                self.stopped.clone(),
                self.grace,
            )));
        }
        if let Some(every) = self.redeliver_interval.filter(|s| *s > 0) {
            let app = state.jobs.app.clone();
            let period = std::time::Duration::from_secs(every);
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
        Ok(kubeharden::server::router(state))
    }
}

/// The digests registries serve now for the tagged images of the files (the user's own
/// machine asks: no network guard), and what could not be resolved.
fn local_digests(
    files: &[SourceFile],
    settings: &kubeharden::lint::Settings,
    auth_file: Option<&Path>,
) -> Result<(std::collections::BTreeMap<String, String>, Vec<String>)> {
    use kubeharden::registry::RegistryClient;
    let mut images: Vec<String> = kubeharden::image::uses(files, &settings.limits)
        .into_iter()
        .map(|u| u.image)
        .filter(|i| kubeharden::image::parse(i).is_ok_and(|r| r.digest.is_none()))
        .collect();
    images.sort();
    images.dedup();
    if images.is_empty() {
        return Ok(Default::default());
    }
    let auth = match auth_file {
        Some(path) => RegistryClient::auth_from_docker_config(path)?,
        None => Default::default(),
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let client = std::sync::Arc::new(RegistryClient::new(
            auth,
            std::time::Duration::from_secs(15),
        )?);
        let mut tasks = tokio::task::JoinSet::new();
        let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(4));
        for image in images {
            let client = client.clone();
            let limit = limit.clone();
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let result = match kubeharden::image::parse(&image) {
                    Ok(r) => {
                        client
                            .resolve_digest(&r.domain, &r.path, r.effective_tag())
                            .await
                    }
                    Err(e) => Err(kubeharden::registry::RegistryError::Config(e.to_string())),
                };
                (image, result)
            });
        }
        let mut digests = std::collections::BTreeMap::new();
        let mut problems = Vec::new();
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok((image, Ok(digest))) => {
                    digests.insert(image, digest);
                }
                Ok((image, Err(e))) => problems.push(format!("{image} not pinned: {e}")),
                Err(e) => problems.push(format!("a digest lookup failed: {e}")),
            }
        }
        problems.sort();
        anyhow::Ok((digests, problems))
    })
}

/// SIGTERM (Kubernetes stopping the pod) or SIGINT.
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

fn jobs(args: JobsArgs) -> Result<ExitCode> {
    use kubeharden::jobs::{JobState, Store};
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let store = Store::open(&args.database.database_url).await?;
        match args.action {
            JobsAction::List { state, limit } => {
                let state = match state.as_deref() {
                    None => None,
                    Some("queued") => Some(JobState::Queued),
                    Some("running") => Some(JobState::Running),
                    Some("done") => Some(JobState::Done),
                    Some("superseded") => Some(JobState::Superseded),
                    Some("dead") => Some(JobState::Dead),
                    Some(other) => bail!("unknown state `{other}`"),
                };
                println!(
                    "{:>6}  {:<8}  {:<10}  {:>8}  {:<30}  {:>6}  {:<12}  LAST ERROR",
                    "ID", "KIND", "STATE", "ATTEMPTS", "REPOSITORY", "PR", "HEAD"
                );
                for j in store.list(state, limit).await? {
                    println!(
                        "{:>6}  {:<8}  {:<10}  {:>8}  {:<30}  {:>6}  {:<12}  {}",
                        j.id,
                        j.kind.as_str(),
                        j.state.as_str(),
                        j.attempts,
                        j.repo,
                        j.pr,
                        &j.head_sha[..j.head_sha.len().min(12)],
                        j.last_error
                            .unwrap_or_default()
                            .lines()
                            .next()
                            .unwrap_or("")
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            JobsAction::Retry { id } => {
                if store.requeue(id).await? {
                    println!("job {id} queued again");
                    Ok(ExitCode::SUCCESS)
                } else {
                    bail!("job {id} does not exist or is queued or running already")
                }
            }
        }
    })
}

fn git(args: &[&str]) -> Result<String> {
    let out = std::process::Command::new("git")
        .args(args)
        .output()
        .context("cannot run git")?;
    if !out.status.success() {
        bail!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout)
        .with_context(|| format!("git {} printed something that is not UTF-8", args.join(" ")))
}

/// What the app would post for a pull request from `base` to `head`: the same files (added,
/// modified or renamed YAML inside the configured paths), the same hunks (GitHub diffs against
/// the merge base), the base branch's configuration.
fn review(args: ReviewArgs) -> Result<ExitCode> {
    let registry = registry(args.rules.as_deref())?;
    let merge_base = git(&["merge-base", &args.base, &args.head])?
        .trim()
        .to_string();
    let config = CONFIG_PATHS
        .iter()
        .find_map(|p| {
            git(&["show", &format!("{}:{p}", args.base)])
                .ok()
                .map(|text| (p, text))
        })
        .map(|(p, text)| Config::parse(p, &text, &registry))
        .transpose()?
        .unwrap_or_default();
    let names = git(&["diff", "--name-status", "-M", "-z", &merge_base, &args.head])?;
    let mut fields = names.split('\0').filter(|s| !s.is_empty());
    let mut files = Vec::new();
    while let Some(status) = fields.next() {
        // Renames and copies name two paths; the second is the new one.
        let path = match status.chars().next() {
            Some('R' | 'C') => fields.nth(1),
            _ => fields.next(),
        };
        let Some(path) = path else { break };
        if !matches!(status.chars().next(), Some('A' | 'M' | 'R' | 'C'))
            || !config.lints_changed(path)
        {
            continue;
        }
        let text = git(&["show", &format!("{}:{path}", args.head)])?;
        let patch = git(&[
            "diff",
            "-M",
            "--unified=3",
            &merge_base,
            &args.head,
            "--",
            path,
        ])?;
        files.push(kubeharden::review::PrFile {
            path: path.to_string(),
            text,
            patch: Some(patch),
        });
    }
    let linter = Linter::new(&registry, config.settings());
    let plan = kubeharden::review::plan(&linter, &files);
    let mut out = String::new();
    if args.json {
        let value = serde_json::json!({
            "review": {
                "event": "COMMENT",
                "body": plan.body,
                "comments": plan.comments,
            },
            "check_run": {
                "conclusion": plan.conclusion,
                "title": plan.check_title,
                "summary": plan.check_summary,
                "annotations": plan.annotations,
            }
        });
        out = serde_json::to_string_pretty(&value)? + "\n";
    } else {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "Check run \"KubeHarden\": {:?}: {}",
            plan.conclusion, plan.check_title
        );
        if plan.body.is_empty() {
            let _ = writeln!(out, "\nNo review: nothing to say.");
        } else {
            let _ = writeln!(out, "\n=== review ===\n{}", plan.body);
        }
        for c in &plan.comments {
            let lines = match c.start_line {
                Some(s) => format!("{s}-{}", c.line),
                None => c.line.to_string(),
            };
            let _ = writeln!(out, "\n=== comment on {}:{lines} ===\n{}", c.path, c.body);
        }
        let _ = writeln!(out, "\n=== annotations ===");
        for a in &plan.annotations {
            let _ = writeln!(
                out,
                "{}:{}: {:?} {}: {}",
                a.path, a.start_line, a.annotation_level, a.title, a.message
            );
        }
    }
    let _ = std::io::stdout().write_all(out.as_bytes());
    Ok(match plan.conclusion {
        kubeharden::review::Conclusion::Success => ExitCode::SUCCESS,
        kubeharden::review::Conclusion::Failure => ExitCode::from(1),
    })
}

enum Output {
    Unchanged,
    Diff(String),
    Fixed(String),
}

struct FileOutcome {
    output: Output,
    fixed: usize,
    unsafe_left: usize,
    failed: bool,
    unsafe_rules: std::collections::BTreeSet<String>,
    notes: Vec<String>,
}

fn collect_inputs(
    paths: &[String],
    config: &Config,
    root: Option<&Path>,
) -> (Vec<SourceFile>, Vec<anyhow::Error>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        if p == "-" {
            let mut bytes = Vec::new();
            match std::io::stdin().read_to_end(&mut bytes) {
                Ok(_) => files.push(decode("<stdin>", bytes)),
                Err(e) => errors.push(anyhow::Error::new(e).context("cannot read standard input")),
            }
            continue;
        }
        let path = Path::new(p);
        if path.is_dir() {
            let mut found = Vec::new();
            if let Err(e) = walk(path, &mut found) {
                errors.push(e);
            }
            found.sort();
            for f in found {
                let relative = root
                    .and_then(|r| {
                        let abs = std::path::absolute(&f).ok()?;
                        let root = std::path::absolute(r).ok()?;
                        abs.strip_prefix(root).ok().map(Path::to_path_buf)
                    })
                    .unwrap_or_else(|| f.clone());
                if !config.selects(&relative) {
                    continue;
                }
                read_into(&f, &mut files, &mut errors);
            }
        } else {
            read_into(path, &mut files, &mut errors);
        }
    }
    (files, errors)
}

fn read_into(path: &Path, files: &mut Vec<SourceFile>, errors: &mut Vec<anyhow::Error>) {
    let display = path
        .strip_prefix("./")
        .unwrap_or(path)
        .display()
        .to_string();
    match std::fs::read(path) {
        Ok(bytes) => files.push(decode(&display, bytes)),
        Err(e) => errors.push(anyhow::Error::new(e).context(format!("cannot read {display}"))),
    }
}

/// YAML is UTF-8 here; other bytes are reported at their line as invalid YAML, not guessed at.
fn decode(path: &str, bytes: Vec<u8>) -> SourceFile {
    SourceFile::new(path, SourceFile::text_from_bytes(bytes))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            // Hidden directories (.git, .github) hold no manifests; symlinked ones may loop.
            if !name.starts_with('.') {
                walk(&path, out)?;
            }
        } else if kubeharden::config::is_yaml(&name) {
            out.push(path);
        }
    }
    Ok(())
}

fn list_rules(args: RulesArgs) -> Result<ExitCode> {
    let registry = registry(args.rules.as_deref())?;
    if let Some(dir) = &args.write_docs {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for rule in registry.iter() {
            let path = dir.join(format!("{}.md", rule.id));
            std::fs::write(&path, rule.doc_page())
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        println!(
            "wrote {} rule pages to {}",
            registry.iter().count(),
            dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = String::new();
    if args.json {
        let rules: Vec<_> = registry.iter().collect();
        out = serde_json::to_string_pretty(&rules)? + "\n";
    } else {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "{:<30} {:<10} {:<8} {:<7} TITLE",
            "RULE", "PROFILE", "SEVERITY", "FIX"
        );
        for r in registry.iter() {
            let fix = match (&r.fix, r.is_fixable()) {
                (Some(f), true) => format!("{:?}", f.applicability).to_lowercase(),
                _ => "-".into(),
            };
            let _ = writeln!(
                out,
                "{:<30} {:<10} {:<8} {:<7} {}",
                r.id,
                r.profile.as_str(),
                r.severity.as_str(),
                fix,
                r.title
            );
        }
    }
    let _ = std::io::stdout().write_all(out.as_bytes());
    Ok(ExitCode::SUCCESS)
}

fn explain(id: &str, dir: Option<&Path>) -> Result<ExitCode> {
    let registry = registry(dir)?;
    let Some(rule) = registry.get(id) else {
        bail!("unknown rule `{id}`; `kubeharden rules` lists them");
    };
    let mut out = format!("# {} ({})\n\n", rule.title, rule.id);
    out += &format!(
        "Profile: {}. Default severity: {}.",
        rule.profile.as_str(),
        rule.severity
    );
    if let Some(c) = &rule.pss_control {
        out += &format!(" Pod Security Standards control: {c}.");
    }
    if let Some(n) = &rule.nsa_section {
        out += &format!(" NSA/CISA guidance: {n}.");
    }
    if let Some(v) = rule.since {
        out += &format!(" Applies from Kubernetes {v}.");
    }
    out += "\n\n";
    out += &rule.docs;
    if !out.ends_with('\n') {
        out.push('\n');
    }
    let _ = std::io::stdout().write_all(out.as_bytes());
    Ok(ExitCode::SUCCESS)
}
