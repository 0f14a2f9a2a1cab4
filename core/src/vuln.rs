//! Vulnerability reports of the scanners teams already run (Trivy, Grype), read into one model.
//! KubeHarden keeps no vulnerability database of its own: it runs a scanner (`scan`, in the
//! shell) and puts what the report says on the `image:` line that brought the image in.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::facts::{ConfigSource, ImageConfig, OciImageConfig};

/// Severities as both scanners grade them, lowest first. Trivy has no `Negligible`; anything a
/// report spells otherwise is `Unknown`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum VulnSeverity {
    #[default]
    Unknown,
    Negligible,
    Low,
    Medium,
    High,
    Critical,
}

impl VulnSeverity {
    /// A report's spelling (any case); unknown words are `Unknown`, never an error.
    pub fn from_report(s: &str) -> VulnSeverity {
        match s.to_ascii_lowercase().as_str() {
            "negligible" => VulnSeverity::Negligible,
            "low" => VulnSeverity::Low,
            "medium" | "moderate" => VulnSeverity::Medium,
            "high" | "important" => VulnSeverity::High,
            "critical" => VulnSeverity::Critical,
            _ => VulnSeverity::Unknown,
        }
    }

    pub const ALL: [VulnSeverity; 6] = [
        VulnSeverity::Critical,
        VulnSeverity::High,
        VulnSeverity::Medium,
        VulnSeverity::Low,
        VulnSeverity::Negligible,
        VulnSeverity::Unknown,
    ];
}

impl fmt::Display for VulnSeverity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VulnSeverity::Unknown => "unknown",
            VulnSeverity::Negligible => "negligible",
            VulnSeverity::Low => "low",
            VulnSeverity::Medium => "medium",
            VulnSeverity::High => "high",
            VulnSeverity::Critical => "critical",
        })
    }
}

impl std::str::FromStr for VulnSeverity {
    type Err = String;

    /// A configured threshold: the exact words only.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "unknown" => Ok(VulnSeverity::Unknown),
            "negligible" => Ok(VulnSeverity::Negligible),
            "low" => Ok(VulnSeverity::Low),
            "medium" => Ok(VulnSeverity::Medium),
            "high" => Ok(VulnSeverity::High),
            "critical" => Ok(VulnSeverity::Critical),
            other => Err(format!(
                "unknown severity `{other}` (expected negligible, low, medium, high or critical)"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vulnerability {
    pub id: String,
    pub package: String,
    pub installed: String,
    /// The versions that fix it, as the scanner lists them.
    pub fixed: Option<String>,
    pub severity: VulnSeverity,
    pub url: Option<String>,
}

impl Vulnerability {
    /// Where to read about it: the scanner's link, else the advisory database's page.
    pub fn link(&self) -> Option<String> {
        if let Some(u) = self
            .url
            .as_ref()
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
        {
            return Some(u.clone());
        }
        if self.id.starts_with("CVE-") {
            Some(format!("https://nvd.nist.gov/vuln/detail/{}", self.id))
        } else if self.id.starts_with("GHSA-") {
            Some(format!("https://github.com/advisories/{}", self.id))
        } else {
            None
        }
    }
}

/// What a scanner found in one image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageReport {
    pub scanner: String,
    /// Distinct (id, package, installed version) findings.
    pub vulnerabilities: Vec<Vulnerability>,
    /// False when the scanner found nothing it could read (no OS, no packages): "no
    /// vulnerabilities" then means "not scanned", and is said so.
    pub packages_found: bool,
    /// The image's configuration as the scanner read it (Trivy's `Metadata.ImageConfig`), so
    /// that image inspection need not fetch it a second time; `None` for Grype, which does not
    /// report it, and for reports without one.
    pub config: Option<ImageConfig>,
}

impl ImageReport {
    pub fn counts(&self) -> BTreeMap<VulnSeverity, usize> {
        let mut counts = BTreeMap::new();
        for v in &self.vulnerabilities {
            *counts.entry(v.severity).or_default() += 1;
        }
        counts
    }

    pub fn worst(&self) -> Option<VulnSeverity> {
        self.vulnerabilities.iter().map(|v| v.severity).max()
    }

    /// The `n` worst: by severity, then those with a fix first, then by id.
    pub fn worst_n(&self, n: usize) -> Vec<&Vulnerability> {
        let mut all: Vec<&Vulnerability> = self.vulnerabilities.iter().collect();
        all.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then(b.fixed.is_some().cmp(&a.fixed.is_some()))
                .then(a.id.cmp(&b.id))
                .then(a.package.cmp(&b.package))
        });
        all.truncate(n);
        all
    }

    fn dedup(mut self) -> Self {
        self.vulnerabilities.sort_by(|a, b| {
            (&a.id, &a.package, &a.installed).cmp(&(&b.id, &b.package, &b.installed))
        });
        self.vulnerabilities
            .dedup_by(|a, b| a.id == b.id && a.package == b.package && a.installed == b.installed);
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("the {scanner} report is not JSON of the expected shape: {message}")]
    Shape {
        scanner: &'static str,
        message: String,
    },
    #[error("unsupported Trivy report schema version {0} (KubeHarden reads version 2)")]
    TrivySchema(i64),
}

/// A `trivy image --format json` report (schema version 2). Every field but `SchemaVersion`
/// may be missing: Trivy omits empty ones.
pub fn parse_trivy(json: &[u8]) -> Result<ImageReport, ReportError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Report {
        schema_version: Option<i64>,
        #[serde(default)]
        results: Vec<Result_>,
        #[serde(default)]
        metadata: Option<Metadata>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Metadata {
        #[serde(default)]
        repo_digests: Option<Vec<String>>,
        #[serde(default)]
        image_config: Option<OciImageConfig>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Result_ {
        #[serde(default)]
        class: String,
        #[serde(default)]
        vulnerabilities: Option<Vec<Vuln>>,
        #[serde(default)]
        packages: Option<Vec<serde::de::IgnoredAny>>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Vuln {
        #[serde(rename = "VulnerabilityID")]
        vulnerability_id: String,
        #[serde(default)]
        pkg_name: String,
        #[serde(default)]
        installed_version: String,
        #[serde(default)]
        fixed_version: Option<String>,
        #[serde(default)]
        severity: Option<String>,
        #[serde(rename = "PrimaryURL", default)]
        primary_url: Option<String>,
    }
    let report: Report = serde_json::from_slice(json).map_err(|e| ReportError::Shape {
        scanner: "Trivy",
        message: e.to_string(),
    })?;
    match report.schema_version {
        Some(2) => {}
        Some(v) => return Err(ReportError::TrivySchema(v)),
        None => {
            return Err(ReportError::Shape {
                scanner: "Trivy",
                message: "no SchemaVersion".into(),
            });
        }
    }
    let packages_found = report.results.iter().any(|r| {
        r.class == "os-pkgs"
            || r.vulnerabilities.as_ref().is_some_and(|v| !v.is_empty())
            || r.packages.as_ref().is_some_and(|p| !p.is_empty())
    });
    let vulnerabilities = report
        .results
        .into_iter()
        .flat_map(|r| r.vulnerabilities.unwrap_or_default())
        .map(|v| Vulnerability {
            id: v.vulnerability_id,
            package: v.pkg_name,
            installed: v.installed_version,
            fixed: v.fixed_version.filter(|f| !f.is_empty()),
            severity: VulnSeverity::from_report(v.severity.as_deref().unwrap_or("")),
            url: v.primary_url.filter(|u| !u.is_empty()),
        })
        .collect();
    let config = report.metadata.and_then(|m| {
        let image = m.image_config?;
        // A report of something that is not an image (a file system, a repository) has no
        // platform: it says nothing about a container's user.
        if image.os.is_empty() || image.architecture.is_empty() {
            return None;
        }
        // `repo@sha256:…`: the digest Trivy resolved the reference to.
        let digest = m
            .repo_digests
            .unwrap_or_default()
            .iter()
            .find_map(|d| d.rsplit_once('@').map(|(_, d)| d.to_string()))
            .filter(|d| d.starts_with("sha256:"));
        Some(ImageConfig::from_oci(image, digest, ConfigSource::Trivy))
    });
    Ok(ImageReport {
        scanner: "Trivy".into(),
        vulnerabilities,
        packages_found,
        config,
    }
    .dedup())
}

/// A `grype -o json` report.
pub fn parse_grype(json: &[u8]) -> Result<ImageReport, ReportError> {
    #[derive(Deserialize)]
    struct Report {
        matches: Option<Vec<Match>>,
        #[serde(default)]
        distro: Option<serde_json::Value>,
    }
    #[derive(Deserialize)]
    struct Match {
        vulnerability: Vuln,
        artifact: Artifact,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Vuln {
        id: String,
        #[serde(default)]
        severity: Option<String>,
        #[serde(default)]
        data_source: Option<String>,
        #[serde(default)]
        urls: Option<Vec<String>>,
        #[serde(default)]
        fix: Option<Fix>,
    }
    #[derive(Deserialize)]
    struct Fix {
        #[serde(default)]
        versions: Option<Vec<String>>,
    }
    #[derive(Deserialize)]
    struct Artifact {
        #[serde(default)]
        name: String,
        #[serde(default)]
        version: String,
    }
    let report: Report = serde_json::from_slice(json).map_err(|e| ReportError::Shape {
        scanner: "Grype",
        message: e.to_string(),
    })?;
    let Some(matches) = report.matches else {
        return Err(ReportError::Shape {
            scanner: "Grype",
            message: "no `matches`".into(),
        });
    };
    let distro = report
        .distro
        .as_ref()
        .and_then(|d| d.get("name"))
        .and_then(|n| n.as_str())
        .is_some_and(|n| !n.is_empty());
    let packages_found = distro || !matches.is_empty();
    let vulnerabilities = matches
        .into_iter()
        .map(|m| {
            let fixed = m
                .vulnerability
                .fix
                .and_then(|f| f.versions)
                .filter(|v| !v.is_empty())
                .map(|v| v.join(", "));
            let url = m
                .vulnerability
                .data_source
                .filter(|u| u.starts_with("http"))
                .or_else(|| m.vulnerability.urls.and_then(|u| u.into_iter().next()));
            Vulnerability {
                id: m.vulnerability.id,
                package: m.artifact.name,
                installed: m.artifact.version,
                fixed,
                severity: VulnSeverity::from_report(
                    m.vulnerability.severity.as_deref().unwrap_or(""),
                ),
                url,
            }
        })
        .collect();
    Ok(ImageReport {
        scanner: "Grype".into(),
        vulnerabilities,
        packages_found,
        config: None,
    }
    .dedup())
}

/// What became of scanning one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanOutcome {
    Report(std::sync::Arc<ImageReport>),
    /// The scanner is missing, failed, timed out or printed something unreadable: said on the
    /// image's line, never a silent pass.
    Failed(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::ExposedPort;

    #[test]
    fn severities_order_and_read_leniently() {
        assert!(VulnSeverity::Critical > VulnSeverity::High);
        assert!(VulnSeverity::Negligible > VulnSeverity::Unknown);
        assert_eq!(
            VulnSeverity::from_report("CRITICAL"),
            VulnSeverity::Critical
        );
        assert_eq!(
            VulnSeverity::from_report("Negligible"),
            VulnSeverity::Negligible
        );
        assert_eq!(VulnSeverity::from_report("whatever"), VulnSeverity::Unknown);
        assert!("High".parse::<VulnSeverity>().is_err());
        assert_eq!("high".parse::<VulnSeverity>(), Ok(VulnSeverity::High));
    }

    #[test]
    fn trivy_reports_carry_the_image_configuration() {
        let r = parse_trivy(include_bytes!(
            "../tests/fixtures/scanners/trivy-config-numeric.json"
        ))
        .unwrap();
        let c = r.config.unwrap();
        assert_eq!(c.user.as_deref(), Some("1000:1000"));
        assert_eq!(c.volumes, vec!["/var/cache/api".to_string()]);
        assert_eq!(
            c.exposed_ports,
            vec![ExposedPort::parse("8080/tcp").unwrap()]
        );
        assert_eq!(c.working_dir.as_deref(), Some("/app"));
        assert_eq!(c.platform, "linux/amd64");
        assert_eq!(c.source, Some(ConfigSource::Trivy));
        assert_eq!(
            c.digest.as_deref(),
            Some("sha256:0e6c0d7e2f5b3a7b1d9f5e8c4a2b6d0f1e3c5a7b9d1f3e5c7a9b1d3f5e7c9a1b")
        );
        assert_eq!(c.names, None, "a report carries no /etc/passwd");
        let clean = parse_trivy(include_bytes!(
            "../tests/fixtures/scanners/trivy-clean.json"
        ))
        .unwrap();
        assert_eq!(clean.config, None, "no ImageConfig, no configuration");
        // Not an image (`trivy fs`): an ImageConfig without a platform says nothing.
        let fs = parse_trivy(br#"{"SchemaVersion":2,"Metadata":{"ImageConfig":{"architecture":"","os":"","rootfs":{"type":"","diff_ids":null},"config":{}}}}"#)
            .unwrap();
        assert_eq!(fs.config, None);
    }

    #[test]
    fn links_fall_back_to_the_advisory_databases() {
        let v = |id: &str, url: Option<&str>| Vulnerability {
            id: id.into(),
            package: "p".into(),
            installed: "1".into(),
            fixed: None,
            severity: VulnSeverity::High,
            url: url.map(str::to_string),
        };
        assert_eq!(
            v("CVE-2024-1", None).link().as_deref(),
            Some("https://nvd.nist.gov/vuln/detail/CVE-2024-1")
        );
        assert_eq!(
            v("GHSA-x", Some("javascript:alert(1)")).link().as_deref(),
            Some("https://github.com/advisories/GHSA-x")
        );
        assert_eq!(v("ALAS-1", None).link(), None);
    }
}
