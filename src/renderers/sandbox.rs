//! The scratch directory a render runs in, and the child process itself: a copy of only the
//! files the root reads (symbolic links that leave the repository refused), a clean
//! environment, a timeout and a cap on output.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A scratch copy of some repository files; removed when dropped.
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Result<Scratch, String> {
        let dir = tempfile::Builder::new()
            .prefix("kubeharden-render-")
            .tempdir()
            .map_err(|e| format!("cannot create a scratch directory: {e}"))?;
        for sub in [
            "repo",
            "home",
            "tmp",
            "helm/cache",
            "helm/config",
            "helm/data",
            "helm/plugins",
        ] {
            std::fs::create_dir_all(dir.path().join(sub))
                .map_err(|e| format!("cannot create a scratch directory: {e}"))?;
        }
        Ok(Scratch { dir })
    }

    /// Where the repository's files are copied.
    pub fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Copy `paths` (repository-relative) from `repo` into the scratch repository. A file that
    /// is, or lies under, a symbolic link resolving outside `repo` is refused before it is read;
    /// links inside become plain copies. At most `budget` bytes are copied.
    pub fn copy_in<'p>(
        &self,
        repo: &Path,
        paths: impl IntoIterator<Item = &'p String>,
        mut budget: u64,
    ) -> Result<(), String> {
        let top = repo
            .canonicalize()
            .map_err(|e| format!("cannot read {}: {e}", repo.display()))?;
        for rel in paths {
            let source = repo.join(rel);
            let real = source
                .canonicalize()
                .map_err(|e| format!("cannot read {rel}: {e}"))?;
            if !real.starts_with(&top) {
                return Err(format!(
                    "{rel} is a symbolic link to {}, outside the repository; it was not read",
                    real.display()
                ));
            }
            let meta = std::fs::metadata(&real).map_err(|e| format!("cannot read {rel}: {e}"))?;
            if !meta.is_file() {
                return Err(format!("{rel} is not a regular file"));
            }
            budget = budget.checked_sub(meta.len()).ok_or_else(|| {
                format!("the files this root reads exceed the copy limit (at {rel})")
            })?;
            let target = self.repo().join(rel);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("cannot copy {rel} into the scratch directory: {e}"))?;
            }
            std::fs::copy(&real, &target)
                .map_err(|e| format!("cannot copy {rel} into the scratch directory: {e}"))?;
        }
        Ok(())
    }

    /// Write `text` as the repository file `rel` of the scratch copy (a fix being confirmed);
    /// a path that could leave the copy is refused.
    pub fn write(&self, rel: &str, text: &str) -> Result<(), String> {
        let inside = Path::new(rel)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !inside || rel.is_empty() {
            return Err(format!("{rel} is no path inside the repository"));
        }
        let target = self.repo().join(rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot write {rel} into the scratch directory: {e}"))?;
        }
        // A link copied in would be written through: replace it with a plain file.
        let _ = std::fs::remove_file(&target);
        std::fs::write(&target, text)
            .map_err(|e| format!("cannot write {rel} into the scratch directory: {e}"))
    }

    /// A command that sees only the scratch directory's environment: no variable of ours (no
    /// credentials, no proxies, no kubeconfig), Helm's cache, configuration, data and plugin
    /// directories empty in the scratch directory, and a proxy that refuses every connection,
    /// so anything that would still reach for the network fails at once.
    pub fn command(&self, program: &Path) -> Command {
        let s = self.path();
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .current_dir(self.repo())
            .env("HOME", s.join("home"))
            .env("TMPDIR", s.join("tmp"))
            .env("XDG_CACHE_HOME", s.join("home/.cache"))
            .env("XDG_CONFIG_HOME", s.join("home/.config"))
            .env("XDG_DATA_HOME", s.join("home/.local/share"))
            .env("HELM_CACHE_HOME", s.join("helm/cache"))
            .env("HELM_CONFIG_HOME", s.join("helm/config"))
            .env("HELM_DATA_HOME", s.join("helm/data"))
            .env("HELM_PLUGINS", s.join("helm/plugins"))
            .env("KUBECONFIG", s.join("home/no-kubeconfig"))
            .env("PATH", s.join("home/no-bin"))
            .env("HTTP_PROXY", "http://127.0.0.1:9")
            .env("HTTPS_PROXY", "http://127.0.0.1:9")
            .env("NO_PROXY", "")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }
}

/// Run `cmd`; its standard output, or why it failed: not started, killed at `timeout`, more
/// than `max_output` bytes, a non-zero exit (with the last lines of its standard error).
pub fn run(
    mut cmd: Command,
    name: &str,
    timeout: Duration,
    max_output: usize,
) -> Result<String, String> {
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {name}: {e}"))?;
    let too_big = Arc::new(AtomicBool::new(false));
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let flag = too_big.clone();
    let out = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) if out.len() + n > max_output => {
                    // Stop reading: the child is killed and the pipe closed.
                    flag.store(true, Ordering::SeqCst);
                    break;
                }
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        out
    });
    let err = std::thread::spawn(move || {
        let mut err = Vec::new();
        let mut buf = vec![0u8; 8192];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            // The end explains a failure.
            err.extend_from_slice(&buf[..n]);
            if err.len() > 16384 {
                err.drain(..err.len() - 16384);
            }
        }
        err
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(e) => return Err(format!("cannot wait for {name}: {e}")),
        }
        if too_big.load(Ordering::SeqCst) || Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    if too_big.load(Ordering::SeqCst) {
        return Err(format!(
            "{name} printed more than {} MiB; the render was stopped",
            max_output / 1024 / 1024
        ));
    }
    let Some(status) = status else {
        return Err(format!(
            "{name} did not finish within {} s and was stopped",
            timeout.as_secs_f64()
        ));
    };
    if !status.success() {
        let text = String::from_utf8_lossy(&err);
        let last: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let tail = last[last.len().saturating_sub(3)..].join(" ");
        let tail: String = tail.chars().take(600).collect();
        return Err(match status.code() {
            Some(code) => format!("{name} exited with status {code}: {tail}"),
            None => format!("{name} was killed by a signal: {tail}"),
        });
    }
    String::from_utf8(out).map_err(|_| format!("{name} printed output that is not UTF-8"))
}

/// `name` looked up on our own `PATH`, as the child's environment has none.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
