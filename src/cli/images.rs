//! What the CLI asks registries and scanners (feature `images`): digests for `fix
//! --pin-digests`, reports for `lint --scan-images`, and the flags both share with `serve`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use kubeharden::oci::{OciClient, OciError};
use kubeharden::scan::{Scanner, ScannerKind};
use kubeharden_core::source::SourceFile;

#[derive(clap::Args)]
pub(crate) struct ScannerArgs {
    /// The vulnerability scanner to run on images: trivy or grype.
    #[arg(long, env = "SCANNER", value_enum)]
    scanner: Option<ScannerKind>,
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
    pub fn scanner(&self, default: Option<ScannerKind>) -> Option<std::sync::Arc<Scanner>> {
        let kind = self.scanner.or(default)?;
        Some(Scanner::new(
            kind,
            self.scanner_path.clone(),
            self.trivy_server.clone(),
            std::time::Duration::from_secs(self.scan_timeout.max(1)),
            self.scan_concurrency,
        ))
    }
}

/// Scanners' reports for the images of the files, by image as written (Trivy unless the
/// flags name another scanner).
pub(crate) fn scan(
    args: &ScannerArgs,
    files: &[SourceFile],
    settings: &kubeharden_core::lint::Settings,
    kinds: &kubeharden_core::workloads::WorkloadKinds,
) -> Result<std::collections::BTreeMap<String, kubeharden_core::vuln::ScanOutcome>> {
    let Some(scanner) = args.scanner(Some(ScannerKind::Trivy)) else {
        return Ok(Default::default());
    };
    let images: Vec<String> = kubeharden_core::image::uses(files, &settings.limits, kinds)
        .into_iter()
        .map(|u| u.image)
        .filter(|i| kubeharden_core::image::parse(i).is_ok())
        .collect();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    Ok(runtime.block_on(scanner.scan_all(&images)))
}

/// The digests registries serve now for the tagged images of the files (the user's own
/// machine asks: no network guard), and what could not be resolved.
pub(crate) fn local_digests(
    files: &[SourceFile],
    settings: &kubeharden_core::lint::Settings,
    kinds: &kubeharden_core::workloads::WorkloadKinds,
    auth_file: Option<&Path>,
) -> Result<(std::collections::BTreeMap<String, String>, Vec<String>)> {
    let mut images: Vec<String> = kubeharden_core::image::uses(files, &settings.limits, kinds)
        .into_iter()
        .map(|u| u.image)
        .filter(|i| kubeharden_core::image::parse(i).is_ok_and(|r| r.digest.is_none()))
        .collect();
    images.sort();
    images.dedup();
    if images.is_empty() {
        return Ok(Default::default());
    }
    let auth = match auth_file {
        Some(path) => OciClient::auth_from_docker_config(path)?,
        None => Default::default(),
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let client = std::sync::Arc::new(OciClient::new(auth, std::time::Duration::from_secs(15))?);
        let mut tasks = tokio::task::JoinSet::new();
        let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(4));
        for image in images {
            let client = client.clone();
            let limit = limit.clone();
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let result = match kubeharden_core::image::parse(&image) {
                    Ok(r) => {
                        client
                            .resolve_digest(&r.domain, &r.path, r.effective_tag())
                            .await
                    }
                    Err(e) => Err(OciError::Config(e.to_string())),
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

/// What each image's configuration says, read from its registry for the platform its pod
/// runs on (the user's own machine asks: no network guard, as for digests), or from the scan
/// reports of the same run that carry it (`lint --scan-images` with Trivy). An image that
/// cannot be read is `NotChecked` with the reason, and its fixes stay as they are without it.
pub(crate) fn inspect_local(
    files: &[SourceFile],
    settings: &kubeharden_core::lint::Settings,
    kinds: &kubeharden_core::workloads::WorkloadKinds,
    auth_file: Option<&Path>,
    default_platform: &str,
    scans: &std::collections::BTreeMap<String, kubeharden_core::vuln::ScanOutcome>,
) -> Result<std::collections::BTreeMap<(String, String), kubeharden_core::facts::Inspection>> {
    let wanted = kubeharden_core::decision::images_to_inspect(
        files,
        &settings.limits,
        kinds,
        default_platform,
    );
    if wanted.is_empty() {
        return Ok(Default::default());
    }
    let auth = match auth_file {
        Some(path) => OciClient::auth_from_docker_config(path)?,
        None => Default::default(),
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let client = std::sync::Arc::new(OciClient::new(auth, std::time::Duration::from_secs(15))?);
        Ok(kubeharden::oci::inspect_with_scans(&client, wanted, scans).await)
    })
}

/// The registry client's flags, shared by `serve` and `admission`.
#[cfg(any(feature = "app", feature = "admission"))]
#[derive(clap::Args)]
pub(crate) struct OciArgs {
    /// Talk to container registries. `serve`: the configurations of the images a pull request
    /// changes are read (user, volumes, ports) for the fixes, and repositories that ask for it
    /// (`images.pin-digests: true`) have tags resolved to digests. `admission`: mutations read
    /// each image's configuration and make the same image decision as `fix --inspect-images`.
    #[arg(long, env = "REGISTRY_ACCESS")]
    registry_access: bool,
    /// A Docker `config.json` with credentials for private registries (`auths`).
    #[arg(long, env = "REGISTRY_AUTH_FILE")]
    registry_auth_file: Option<PathBuf>,
    /// Registries on loopback or private addresses that may be contacted, as `host[:port]`
    /// (comma-separated); plain http is used for them. Others of that kind are never asked.
    #[arg(long, env = "REGISTRY_PRIVATE_HOSTS", value_delimiter = ',')]
    pub registry_private_hosts: Vec<String>,
    /// Seconds a registry request may take.
    #[arg(long, env = "REGISTRY_TIMEOUT", default_value_t = 10)]
    registry_timeout: u64,
}

#[cfg(any(feature = "app", feature = "admission"))]
impl OciArgs {
    pub fn client(&self) -> Result<Option<std::sync::Arc<OciClient>>> {
        if !self.registry_access {
            return Ok(None);
        }
        let auth = match &self.registry_auth_file {
            Some(path) => OciClient::auth_from_docker_config(path)?,
            None => Default::default(),
        };
        let mut client = OciClient::new(
            auth,
            std::time::Duration::from_secs(self.registry_timeout.max(1)),
        )?;
        client.set_insecure_http_hosts(self.registry_private_hosts.clone());
        client.guard_network(self.registry_private_hosts.clone());
        Ok(Some(std::sync::Arc::new(client)))
    }
}

/// The admission webhook's registry flags: the registry client's, a per-request budget and
/// the platform of pods that name none.
#[cfg(feature = "admission")]
#[derive(clap::Args)]
pub(crate) struct AdmissionImageArgs {
    #[command(flatten)]
    oci: OciArgs,
    /// Milliseconds one admission request waits for registries; keep it well under the
    /// webhook's `timeoutSeconds`. An image not read by then is mutated as without registry
    /// access, and its read goes on to fill the cache for the next request.
    #[arg(long, env = "REGISTRY_BUDGET_MS", default_value_t = 2000)]
    registry_budget_ms: u64,
    /// The platform images are read for when a pod names no `kubernetes.io/arch`.
    #[arg(long, default_value = kubeharden_core::facts::DEFAULT_PLATFORM)]
    default_platform: String,
}

#[cfg(feature = "admission")]
impl AdmissionImageArgs {
    pub fn inspector(
        &self,
    ) -> Result<Option<std::sync::Arc<kubeharden::admission::images::ImageInspector>>> {
        Ok(self.oci.client()?.map(|client| {
            kubeharden::admission::images::ImageInspector::new(
                client,
                std::time::Duration::from_millis(self.registry_budget_ms.max(1)),
                self.default_platform.clone(),
            )
        }))
    }
}
