//! KubeHarden: Kubernetes pod-security linting with format-preserving fixes.
//!
//! The core (`source` → `yaml` → `k8s` → `rules` → `lint` → `render`) is pure: no async, no
//! network, no global state. The shell (the CLI today; the GitHub App later) only reads inputs
//! and prints or posts what the core produced.

pub mod commands;
pub mod config;
pub mod fix;
pub mod github;
pub mod image;
pub mod jobs;
pub mod k8s;
pub mod lint;
pub mod metrics;
pub mod pipeline;
pub mod registry;
pub mod render;
pub mod review;
pub mod rules;
pub mod scan;
pub mod server;
pub mod setup;
pub mod source;
pub mod vuln;
pub mod yaml;
