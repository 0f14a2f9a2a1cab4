//! Runs a vulnerability scanner (Trivy or Grype) on images, as child processes with a timeout,
//! bounded concurrency and a cache keyed by the image and the scanner's database, so a busy
//! server scans each image once per database update. Any failure becomes a
//! `ScanOutcome::Failed` that the `image-scan-failed` rule puts on the image's line.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use kubeharden_core::vuln::{self, ScanOutcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScannerKind {
    Trivy,
    Grype,
}

impl ScannerKind {
    fn name(self) -> &'static str {
        match self {
            ScannerKind::Trivy => "trivy",
            ScannerKind::Grype => "grype",
        }
    }
}

/// A report larger than this is refused rather than read into memory.
const MAX_REPORT: usize = 256 * 1024 * 1024;
/// Cache entries kept; the oldest go first.
const CACHE_ENTRIES: usize = 2000;

pub struct Scanner {
    pub kind: ScannerKind,
    program: PathBuf,
    /// Trivy's client/server mode: the server holds the database.
    server: Option<String>,
    timeout: Duration,
    limit: tokio::sync::Semaphore,
    cache: std::sync::Mutex<HashMap<(String, String), (Instant, ScanOutcome)>>,
}

impl Scanner {
    pub fn new(
        kind: ScannerKind,
        program: Option<PathBuf>,
        server: Option<String>,
        timeout: Duration,
        concurrency: usize,
    ) -> Arc<Scanner> {
        Arc::new(Scanner {
            kind,
            program: program.unwrap_or_else(|| PathBuf::from(kind.name())),
            server,
            timeout,
            limit: tokio::sync::Semaphore::new(concurrency.max(1)),
            cache: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Scan each distinct image once; the outcome of each.
    pub async fn scan_all(self: &Arc<Self>, images: &[String]) -> BTreeMap<String, ScanOutcome> {
        let mut distinct: Vec<String> = images.to_vec();
        distinct.sort();
        distinct.dedup();
        // The database's age is part of the cache key: a new database means new findings.
        let db = self.database_version().await;
        let mut tasks = tokio::task::JoinSet::new();
        for image in distinct {
            let scanner = self.clone();
            let db = db.clone();
            tasks.spawn(async move {
                let outcome = scanner.scan_cached(&image, &db).await;
                (image, outcome)
            });
        }
        let mut out = BTreeMap::new();
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok((image, outcome)) => {
                    out.insert(image, outcome);
                }
                Err(e) => tracing::error!("a scan task failed: {e}"),
            }
        }
        out
    }

    async fn scan_cached(&self, image: &str, db: &str) -> ScanOutcome {
        // A tag can move: its result is good for an hour; a digest's for a day.
        let ttl = if image.contains('@') {
            Duration::from_secs(24 * 3600)
        } else {
            Duration::from_secs(3600)
        };
        let key = (image.to_string(), db.to_string());
        if !db.is_empty()
            && let Some((at, outcome)) = self.lock().get(&key)
            && at.elapsed() < ttl
        {
            crate::metrics::scan("cached");
            return outcome.clone();
        }
        let _permit = self.limit.acquire().await;
        let outcome = self.scan(image).await;
        crate::metrics::scan(match &outcome {
            ScanOutcome::Report(_) => "scanned",
            ScanOutcome::Failed(_) => "failed",
        });
        // Failures are not cached: the next review tries again.
        if matches!(outcome, ScanOutcome::Report(_)) && !db.is_empty() {
            let mut cache = self.lock();
            if cache.len() >= CACHE_ENTRIES
                && let Some(oldest) = cache
                    .iter()
                    .min_by_key(|(_, (at, _))| *at)
                    .map(|(k, _)| k.clone())
            {
                cache.remove(&oldest);
            }
            cache.insert(key, (Instant::now(), outcome.clone()));
        }
        outcome
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), (Instant, ScanOutcome)>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When the scanner's vulnerability database was built; empty when it cannot say (then
    /// nothing is cached).
    pub async fn database_version(&self) -> String {
        let args: Vec<String> = match self.kind {
            ScannerKind::Trivy => vec!["version".into(), "--format".into(), "json".into()],
            ScannerKind::Grype => vec!["db".into(), "status".into(), "-o".into(), "json".into()],
        };
        let Ok(output) = self.run(&args, Duration::from_secs(30)).await else {
            return String::new();
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&output) else {
            return String::new();
        };
        let built = match self.kind {
            ScannerKind::Trivy => &v["VulnerabilityDB"]["UpdatedAt"],
            ScannerKind::Grype => &v["built"],
        };
        built.as_str().unwrap_or_default().to_string()
    }

    async fn scan(&self, image: &str) -> ScanOutcome {
        let mut args: Vec<String> = match self.kind {
            ScannerKind::Trivy => {
                let mut a = vec![
                    "image".to_string(),
                    "--format".into(),
                    "json".into(),
                    "--quiet".into(),
                    "--scanners".into(),
                    "vuln".into(),
                    "--timeout".into(),
                    format!("{}s", self.timeout.as_secs().max(1)),
                ];
                if let Some(server) = &self.server {
                    a.push("--server".into());
                    a.push(server.clone());
                }
                a
            }
            // `registry:` reads the image from its registry, with no container daemon.
            ScannerKind::Grype => vec!["-o".into(), "json".into(), "-q".into()],
        };
        // The image can never pass for an option.
        args.push("--".into());
        args.push(match self.kind {
            ScannerKind::Trivy => image.to_string(),
            ScannerKind::Grype => format!("registry:{image}"),
        });
        let name = self.kind.name();
        let output = match self.run(&args, self.timeout).await {
            Ok(o) => o,
            Err(why) => return ScanOutcome::Failed(why),
        };
        let parsed = match self.kind {
            ScannerKind::Trivy => vuln::parse_trivy(&output),
            ScannerKind::Grype => vuln::parse_grype(&output),
        };
        match parsed {
            Ok(report) => ScanOutcome::Report(Arc::new(report)),
            Err(e) => ScanOutcome::Failed(format!("{name} printed no usable report: {e}")),
        }
    }

    /// Run the scanner; its standard output, or why it failed.
    async fn run(&self, args: &[String], timeout: Duration) -> Result<Vec<u8>, String> {
        let name = self.kind.name();
        let mut child = tokio::process::Command::new(&self.program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => format!(
                    "the scanner `{}` is not installed (or not on PATH)",
                    self.program.display()
                ),
                _ => format!("cannot start {name}: {e}"),
            })?;
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let work = async {
            let mut out = Vec::new();
            let mut err = Vec::new();
            let read_out = async {
                let mut buf = vec![0u8; 65536];
                loop {
                    let n = stdout.read(&mut buf).await?;
                    if n == 0 {
                        return Ok::<bool, std::io::Error>(true);
                    }
                    if out.len() + n > MAX_REPORT {
                        return Ok(false);
                    }
                    out.extend_from_slice(&buf[..n]);
                }
            };
            let read_err = async {
                let mut buf = vec![0u8; 8192];
                loop {
                    let n = stderr.read(&mut buf).await?;
                    if n == 0 {
                        return Ok::<(), std::io::Error>(());
                    }
                    // The last 8 KiB are what explains a failure.
                    err.extend_from_slice(&buf[..n]);
                    if err.len() > 8192 {
                        err.drain(..err.len() - 8192);
                    }
                }
            };
            let (fits, _) = tokio::try_join!(read_out, read_err)?;
            let status = child.wait().await?;
            Ok::<_, std::io::Error>((fits, status, out, err))
        };
        let (fits, status, out, err) = match tokio::time::timeout(timeout, Box::pin(work)).await {
            Err(_) => {
                return Err(format!(
                    "{name} did not finish within {} s",
                    timeout.as_secs()
                ));
            }
            Ok(Err(e)) => return Err(format!("cannot read {name}'s output: {e}")),
            Ok(Ok(done)) => done,
        };
        if !fits {
            return Err(format!(
                "{name}'s report is larger than {} MiB",
                MAX_REPORT / 1024 / 1024
            ));
        }
        if !status.success() {
            let last = String::from_utf8_lossy(&err)
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(|l| kubeharden_core::source::one_line(l.trim()))
                .unwrap_or_default();
            let last: String = last.chars().take(300).collect();
            return Err(match status.code() {
                Some(code) => format!("{name} exited with status {code}: {last}"),
                None => format!("{name} was killed by a signal: {last}"),
            });
        }
        Ok(out)
    }
}
