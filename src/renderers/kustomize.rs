//! `kustomize build` or `kubectl kustomize`, with everything that runs code or reads outside
//! the root off.

use std::path::Path;

use kubeharden_core::roots::Root;

use super::sandbox::{self, Scratch};
use super::{Kustomize, Options};

pub(super) fn render(
    tool: &Kustomize,
    helm: Option<&Path>,
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
    // Plugins, exec and container functions stay off (their defaults), named anyway so that a
    // changed default cannot turn them on. Helm inflation only when the repository opts in;
    // the roots then name only charts vendored in the kustomization (others are blocked), and
    // the proxy that refuses every connection stays in place for helm too.
    let dir: &Path = &scratch.repo().join(root.dir.as_str());
    ask_for_origins(&scratch.repo().join(&root.file))?;
    cmd.arg("--load-restrictor")
        .arg("LoadRestrictionsRootOnly")
        .arg("--enable-alpha-plugins=false");
    match helm {
        Some(helm) => cmd
            .arg("--enable-helm=true")
            .arg("--helm-command")
            .arg(helm_shim(helm, scratch)?)
            .arg("--helm-kube-version")
            .arg(format!("v{}.0", options.kube_version)),
        None => cmd.arg("--enable-helm=false"),
    };
    cmd.arg(dir);
    sandbox::run(cmd, name, options.timeout, options.max_output)
}

/// Kustomize (v5.6, also inside kubectl 1.33) asks `helm version -c --short` before it
/// inflates and refuses any major version but 3; Helm 4 knows no `-c` and renders the same
/// `helm template` flags Kustomize passes. A script in the scratch directory answers the version
/// question as a Helm 3 would (naming the real version beside it) and hands every other call to
/// helm unchanged.
fn helm_shim(helm: &Path, scratch: &Scratch) -> Result<std::path::PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let quoted = format!("'{}'", helm.display().to_string().replace('\'', "'\\''"));
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = version ]; then\n  case \"$({quoted} version --short)\" in\n    v3.*) exec {quoted} version --short ;;\n    *) echo \"v3.0.0 (helm $({quoted} version --short), for kustomize)\"; exit 0 ;;\n  esac\nfi\nexec {quoted} \"$@\"\n"
    );
    let path = scratch.path().join("home/helm-for-kustomize");
    std::fs::write(&path, script)
        .and_then(|()| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| format!("cannot write the helm wrapper for Kustomize: {e}"))?;
    Ok(path)
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
