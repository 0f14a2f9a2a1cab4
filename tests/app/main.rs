//! The GitHub App and the image clients, end to end: the real server against a stateful fake
//! GitHub on loopback, the real binary killed mid-job, a real registry, stand-in scanners. One
//! test binary, so the app is linked once.

#[path = "../../core/tests/common/mod.rs"]
mod common;
#[path = "../registry/mod.rs"]
mod registry;
#[path = "../render/mod.rs"]
mod render_support;
mod support;

mod commands;
mod crash;
mod edge;
mod image_config;
mod oci;
mod payloads;
mod recovery;
mod render;
mod reviews;
mod scan;
mod setup;
