//! What the shell learned about the world outside the manifests, handed to the linter as
//! facts: the digest a registry serves for an image's tag, a scanner's report on it. The core
//! never fetches any of it; rules that use a fact find nothing to say without it.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::vuln::ScanOutcome;

/// Facts about images, each keyed by the `image` value as written in the manifest.
#[derive(Debug, Clone, Default)]
pub struct ImageFacts {
    /// The manifest digest (`sha256:…`) the image's registry serves for its tag now.
    pub digests: BTreeMap<String, String>,
    /// A scanner's verdict on the image.
    pub scans: BTreeMap<String, ScanOutcome>,
}

/// Everything the linter is told; cheap to share between the linters of one change.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub images: Arc<ImageFacts>,
}
