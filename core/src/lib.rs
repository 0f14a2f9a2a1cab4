//! KubeHarden's core: Kubernetes pod-security linting with format-preserving fixes, as pure
//! functions of the text it is handed.
//!
//! `source` → `yaml` (spans) → `k8s` (objects) and `workloads` (where their pods are, as data)
//! → `rules` (data, evaluated) → `lint` → `fix` (edits) → `review` and `commands` (what a pull
//! request is told) → `render`. No async, no network, no database, no child processes, no global state: the
//! compiler keeps it so, as this crate depends on none of them. The shell around it (the CLI,
//! the GitHub App) reads inputs, fetches facts, and prints or posts what the core produced.

pub mod change;
pub mod commands;
pub mod config;
pub mod constraints;
pub mod decision;
pub mod facts;
pub mod fix;
pub mod image;
pub mod k8s;
pub mod lint;
pub mod markdown;
pub mod object;
pub mod parsed;
pub mod policy_cel;
pub mod provenance;
pub mod render;
pub mod review;
pub mod roots;
pub mod rules;
pub mod source;
pub mod vuln;
pub mod workloads;
pub mod yaml;
