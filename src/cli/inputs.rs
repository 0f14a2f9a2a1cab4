//! Reading the files a command is pointed at: paths, directories (`*.yaml`, `*.yml`) and `-`.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use kubeharden_core::config::Config;
use kubeharden_core::source::SourceFile;

pub(crate) fn collect_inputs(
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
    SourceFile::from_bytes(path, bytes)
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
        } else if kubeharden_core::config::is_yaml(&name) {
            out.push(path);
        }
    }
    Ok(())
}
