//! KubeHarden's shell: everything that reads, waits or talks, around the pure core
//! (`kubeharden-core`, which lints and fixes text it is handed).
//!
//! - always: the command line's inputs and outputs (`main.rs` and `cli/`), and the Helm and
//!   Kustomize renderers run as child processes (`renderers`), and one rendering job as the
//!   command line and the app both run it (`render_job`: render, then place the findings);
//! - feature `images`: the OCI registry client (`oci`) and the vulnerability scanners run
//!   as child processes (`scan`);
//! - feature `app`: the GitHub App: the connections' timeouts and limits
//!   (`edge`), the webhook route and workers (`server`), the durable queue
//!   (`jobs`), the only code that talks to GitHub (`github`), one job end to end (`pipeline`,
//!   with `inspect` for the images' configurations),
//!   the setup flow (`setup`);
//! - feature `admission`: the admission webhook (`admission`), the same engine as an HTTPS
//!   server the API server calls.

pub mod metrics;
pub mod render_job;
pub mod renderers;

#[cfg(feature = "admission")]
pub mod admission;

#[cfg(feature = "images")]
pub mod oci;
#[cfg(feature = "images")]
pub mod scan;

#[cfg(feature = "app")]
pub mod edge;
#[cfg(feature = "app")]
pub mod github;
#[cfg(feature = "app")]
mod inspect;
#[cfg(feature = "app")]
pub mod jobs;
#[cfg(feature = "app")]
pub mod pipeline;
#[cfg(feature = "app")]
pub mod server;
#[cfg(feature = "app")]
pub mod service;
#[cfg(feature = "app")]
pub mod setup;
