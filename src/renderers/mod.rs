//! Rendering Helm charts and Kustomize roots with the real tools, as child processes, safely
//! enough for an untrusted pull request: each render runs in a scratch copy of just the files
//! its root reads, with a clean environment, no network, no plugins, a timeout and an output
//! cap. Roots that would need the network are never run (`Root::blocked`, found by reading
//! the kustomization or `Chart.yaml` first).

mod helm;
mod kustomize;
mod sandbox;

use std::path::{Path, PathBuf};
use std::time::Duration;

use kubeharden_core::k8s::KubeVersion;
use kubeharden_core::provenance::{Sentinel, sentinel};
use kubeharden_core::roots::{Root, RootKind};
use kubeharden_core::source::SourceFile;

pub use sandbox::which;

/// A Kustomize program: the `kustomize` binary, or `kubectl` with its built-in Kustomize.
#[derive(Debug, Clone)]
pub struct Kustomize {
    pub program: PathBuf,
    pub kubectl: bool,
}

/// The tools, found on `PATH` or named; `None` when absent (each render then fails saying so).
#[derive(Debug, Clone, Default)]
pub struct Tools {
    pub helm: Option<PathBuf>,
    pub kustomize: Option<Kustomize>,
}

impl Tools {
    /// `helm` and `kustomize` (else `kubectl`) from `PATH`, unless named.
    pub fn find(helm: Option<&Path>, kustomize: Option<&Path>) -> Tools {
        let kustomize = match kustomize {
            Some(p) => Some(Kustomize {
                program: p.to_path_buf(),
                kubectl: p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("kubectl")),
            }),
            None => which("kustomize")
                .map(|program| Kustomize {
                    program,
                    kubectl: false,
                })
                .or_else(|| {
                    which("kubectl").map(|program| Kustomize {
                        program,
                        kubectl: true,
                    })
                }),
        };
        Tools {
            helm: helm.map(Path::to_path_buf).or_else(|| which("helm")),
            kustomize,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub timeout: Duration,
    /// Largest output of one render, in bytes.
    pub max_output: usize,
    /// Most bytes of repository files copied for one render.
    pub max_copy: u64,
    /// The Kubernetes version charts see in `.Capabilities`.
    pub kube_version: KubeVersion,
    /// Renders run at once.
    pub concurrency: usize,
    /// Kustomize's `--enable-helm` (the repository's `render.enable-helm`): charts of
    /// `helmCharts` inflated with `helm`, from the kustomization's vendored `charts/` only.
    pub kustomize_helm: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout: Duration::from_secs(60),
            max_output: 64 * 1024 * 1024,
            max_copy: 256 * 1024 * 1024,
            kube_version: KubeVersion::NEWEST,
            concurrency: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kustomize_helm: false,
        }
    }
}

/// What one variant of one root rendered to, or why it did not.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub root: usize,
    pub variant: usize,
    pub output: Result<Output, String>,
}

#[derive(Debug, Clone)]
pub struct Output {
    pub text: String,
    /// For a chart with a `values.yaml`: what its sentinel render showed (`None` when that
    /// render failed; findings then stay in the templates).
    pub sentinel: Option<Sentinel>,
}

/// Render every variant of every root that is not blocked, `options.concurrency` at once.
/// `repo` is the directory the roots' paths are relative to.
pub fn render_all(repo: &Path, roots: &[Root], tools: &Tools, options: &Options) -> Vec<Rendered> {
    let jobs: Vec<(usize, usize)> = roots
        .iter()
        .enumerate()
        .filter(|(_, r)| r.blocked.is_empty() && r.problems.is_empty())
        .flat_map(|(i, r)| (0..r.variants.len()).map(move |v| (i, v)))
        .collect();
    kubeharden_core::lint::parallel_map_on(options.concurrency, &jobs, |&(root, variant)| {
        Rendered {
            root,
            variant,
            output: render(repo, &roots[root], variant, tools, options),
        }
    })
}

/// Render one variant of `root`.
pub fn render(
    repo: &Path,
    root: &Root,
    variant: usize,
    tools: &Tools,
    options: &Options,
) -> Result<Output, String> {
    let v = &root.variants[variant];
    let scratch = sandbox::Scratch::new()?;
    let values = v.values_files.iter();
    scratch.copy_in(repo, root.loads.iter().chain(values), options.max_copy)?;
    match root.kind {
        RootKind::Helm => {
            let helm = tools.helm.as_deref().ok_or(
                "helm is not installed (or not on PATH); install it or name it with --helm",
            )?;
            let text = helm::render(helm, root, v, &scratch, options)?;
            Ok(Output {
                sentinel: sentinel_render(helm, root, v, &scratch, options),
                text,
            })
        }
        RootKind::Kustomize => {
            let kustomize = tools.kustomize.as_ref().ok_or(
                "neither kustomize nor kubectl is installed (or on PATH); install one or name it with --kustomize",
            )?;
            let helm = tools.helm.as_deref().filter(|_| options.kustomize_helm);
            let text = kustomize::render(kustomize, helm, root, &scratch, options)?;
            Ok(Output {
                text,
                sentinel: None,
            })
        }
    }
}

/// Render the chart once more with its `values.yaml` replaced by the sentinel version (in the
/// scratch copy, which `copy_in` checked), to learn which values keys feed which fields.
fn sentinel_render(
    helm: &Path,
    root: &Root,
    variant: &kubeharden_core::roots::Variant,
    scratch: &sandbox::Scratch,
    options: &Options,
) -> Option<Sentinel> {
    let rel = if root.dir.is_empty() {
        "values.yaml".to_string()
    } else {
        format!("{}/values.yaml", root.dir)
    };
    let copy = scratch.repo().join(&rel);
    let values = SourceFile::new(rel, std::fs::read_to_string(&copy).ok()?);
    let (text, markers) = sentinel::sentinel_values(&values)?;
    std::fs::write(&copy, text).ok()?;
    let rendered = helm::render(helm, root, variant, scratch, options).ok()?;
    Some(Sentinel {
        landings: sentinel::landings(&rendered),
        values,
        markers,
    })
}
