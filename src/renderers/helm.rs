//! `helm template`: Helm 3 and 4 print the same `# Source:` stream.

use std::path::Path;

use kubeharden_core::roots::{Root, Variant};

use super::Options;
use super::sandbox::{self, Scratch};

pub(super) fn render(
    program: &Path,
    root: &Root,
    variant: &Variant,
    scratch: &Scratch,
    options: &Options,
) -> Result<String, String> {
    let chart = scratch.repo().join(root.dir.as_str());
    let mut cmd = scratch.command(program);
    // The chart is a directory path, never a repository reference; `--` keeps a release name
    // that starts with `-` from passing for a flag. No --post-renderer, no --validate (which
    // would talk to a cluster): `lookup` returns nothing, as in any `helm template`.
    cmd.arg("template")
        .arg("--namespace")
        .arg(variant.namespace.as_deref().unwrap_or("default"))
        .arg("--kube-version")
        .arg(format!("v{}.0", options.kube_version));
    for f in &variant.values_files {
        cmd.arg("--values").arg(scratch.repo().join(f));
    }
    if let Some(values) = &variant.inline_values {
        let path = scratch.path().join("inline-values.yaml");
        std::fs::write(&path, values).map_err(|e| format!("cannot write inline values: {e}"))?;
        cmd.arg("--values").arg(path);
    }
    cmd.arg("--").arg(&variant.release).arg(chart);
    sandbox::run(cmd, "helm template", options.timeout, options.max_output)
}
