//! The app's image inspection (`--registry-access`): the configurations of the images a pull
//! request changes, read through the guarded registry client, each for the platform its pod
//! runs on; a Trivy report of the same review that carries the configuration is used instead
//! of fetching it again. Images the server may not contact are "not checked", with the reason.

use std::collections::BTreeMap;
use std::sync::Arc;

use kubeharden_core::facts::{DEFAULT_PLATFORM, Inspection};
use kubeharden_core::vuln::ScanOutcome;

use crate::pipeline::JobContext;

pub(crate) async fn configs(
    cx: &JobContext,
    client: &Arc<crate::oci::OciClient>,
    sources: &[kubeharden_core::source::SourceFile],
    settings: &kubeharden_core::lint::Settings,
    changed: &[String],
    refused: &BTreeMap<String, ScanOutcome>,
    scans: &BTreeMap<String, ScanOutcome>,
) -> BTreeMap<(String, String), Inspection> {
    let kinds = cx.registry.workloads_with(&settings.workloads);
    let all = kubeharden_core::decision::images_to_inspect(
        sources,
        &settings.limits,
        &kinds,
        DEFAULT_PLATFORM,
    );
    let mut out = BTreeMap::new();
    let mut wanted = Vec::new();
    for (image, platform) in all {
        if changed.contains(&image) {
            wanted.push((image, platform));
        } else if let Some(ScanOutcome::Failed(why)) = refused.get(&image) {
            let why = why.strip_prefix("not scanned: ").unwrap_or(why).to_string();
            out.insert((image, platform), Inspection::NotChecked(why));
        }
    }
    out.extend(crate::oci::inspect_with_scans(client, wanted, scans).await);
    out
}
