//! `kustomize build` or `kubectl kustomize`, with everything that runs code or reads outside
//! the root off.

use std::path::Path;

use kubeharden_core::roots::Root;

use super::sandbox::{self, Scratch};
use super::{Kustomize, Options};

pub(super) fn render(
    tool: &Kustomize,
    root: &Root,
    scratch: &Scratch,
    options: &Options,
) -> Result<String, String> {
    let mut cmd = scratch.command(&tool.program);
    let name = if tool.kubectl {
        cmd.arg("kustomize");
        "kubectl kustomize"
    } else {
        cmd.arg("build");
        "kustomize build"
    };
    // Plugins, exec and container functions and Helm inflation stay off (their defaults),
    // named anyway so that a changed default cannot turn them on.
    let dir: &Path = &scratch.repo().join(root.dir.as_str());
    ask_for_origins(&scratch.repo().join(&root.file))?;
    cmd.arg("--load-restrictor")
        .arg("LoadRestrictionsRootOnly")
        .arg("--enable-alpha-plugins=false")
        .arg("--enable-helm=false")
        .arg(dir);
    sandbox::run(cmd, name, options.timeout, options.max_output)
}

/// Add `buildMetadata: [originAnnotations]` to the scratch copy of the kustomization, so that
/// each rendered object names the file it came from. A kustomization that sets
/// `buildMetadata` itself, or is written as one flow mapping, is left as it is.
fn ask_for_origins(file: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read the scratch copy of {}: {e}", file.display()))?;
    if text.trim_start().starts_with('{') || text.lines().any(|l| l.starts_with("buildMetadata:")) {
        return Ok(());
    }
    let sep = if text.ends_with('\n') || text.is_empty() {
        ""
    } else {
        "\n"
    };
    std::fs::write(
        file,
        format!("{text}{sep}buildMetadata: [originAnnotations]\n"),
    )
    .map_err(|e| format!("cannot write the scratch copy of {}: {e}", file.display()))
}
