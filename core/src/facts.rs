//! What the shell learned about the world outside the manifests, handed to the linter as
//! facts: the digest a registry serves for an image's tag, a scanner's report on it, the
//! image's own configuration (its user, volumes and ports). The core never fetches any of it;
//! rules that use a fact find nothing to say without it.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::vuln::ScanOutcome;

/// The platform an image index is resolved for when the pod does not say
/// (`kubernetes.io/arch` in its `nodeSelector`).
pub const DEFAULT_PLATFORM: &str = "linux/amd64";

/// Facts about images, each keyed by the `image` value as written in the manifest.
#[derive(Debug, Clone)]
pub struct ImageFacts {
    /// The manifest digest (`sha256:…`) the image's registry serves for its tag now.
    pub digests: BTreeMap<String, String>,
    /// A scanner's verdict on the image.
    pub scans: BTreeMap<String, ScanOutcome>,
    /// What each image's configuration says, by image as written and platform
    /// (`linux/arm64`): one tag can name different images on different architectures. An
    /// image missing here was not looked at (inspection off), which changes nothing.
    pub configs: BTreeMap<(String, String), Inspection>,
    /// The platform for pods that do not pick one.
    pub default_platform: String,
}

impl Default for ImageFacts {
    fn default() -> Self {
        Self {
            digests: BTreeMap::new(),
            scans: BTreeMap::new(),
            configs: BTreeMap::new(),
            default_platform: DEFAULT_PLATFORM.to_string(),
        }
    }
}

impl ImageFacts {
    pub fn config(&self, image: &str, platform: &str) -> Option<&Inspection> {
        self.configs.get(&(image.to_string(), platform.to_string()))
    }
}

/// Everything the linter is told; cheap to share between the linters of one change.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub images: Arc<ImageFacts>,
}

/// What scan reports already say about the configurations image inspection wants.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FromScans {
    /// Complete: read from a report, nothing left to fetch.
    pub read: BTreeMap<(String, String), Inspection>,
    /// Read from a report, but the `USER` names a user or group: a report carries no
    /// `/etc/passwd`, so its IDs still have to be read from the image's layers.
    pub need_names: Vec<((String, String), ImageConfig)>,
    /// No report gave a configuration for that platform: read from the registry.
    pub fetch: Vec<(String, String)>,
}

/// Split the `(image, platform)` pairs inspection wants by what the scans of those images
/// already carry (Trivy's `Metadata.ImageConfig`), so that no configuration is fetched twice.
/// A report is for the one platform the scanner pulled: a pod on another architecture still
/// has its image read from the registry.
pub fn configs_from_scans(
    wanted: Vec<(String, String)>,
    scans: &BTreeMap<String, ScanOutcome>,
) -> FromScans {
    let mut out = FromScans::default();
    for (image, platform) in wanted {
        let config = match scans.get(&image) {
            Some(ScanOutcome::Report(report)) => report
                .config
                .as_ref()
                .filter(|c| platform_matches(&platform, &c.platform)),
            _ => None,
        };
        match config {
            Some(c) if UserSpec::parse(c.user.as_deref()).is_some_and(|u| u.has_names()) => {
                out.need_names.push(((image, platform), c.clone()));
            }
            Some(c) => {
                out.read
                    .insert((image, platform), Inspection::Read(c.clone()));
            }
            None => out.fetch.push((image, platform)),
        }
    }
    out
}

/// Whether an image of platform `got` (`linux/arm64/v8`) is what a pod on `wanted`
/// (`linux/arm64`) runs: as an index is searched, a variant asked for must match, and none
/// asked for takes any of the architecture.
pub fn platform_matches(wanted: &str, got: &str) -> bool {
    let mut w = wanted.split('/');
    let mut g = got.split('/');
    let (Some(wos), Some(warch)) = (w.next(), w.next()) else {
        return false;
    };
    let (Some(gos), Some(garch)) = (g.next(), g.next()) else {
        return false;
    };
    wos == gos && warch == garch && w.next().is_none_or(|v| g.next() == Some(v))
}

/// The outcome of looking at one image's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inspection {
    Read(ImageConfig),
    /// Inspection was on but the configuration could not be read; why, for people ("the
    /// registry asked for credentials", "no linux/s390x image in the index").
    NotChecked(String),
}

/// Where an image's configuration was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConfigSource {
    /// The registry's config blob (`application/vnd.oci.image.config.v1+json`).
    Registry,
    /// `Metadata.ImageConfig` of a Trivy report.
    Trivy,
}

impl ConfigSource {
    pub fn describe(self) -> &'static str {
        match self {
            ConfigSource::Registry => "its registry's config blob",
            ConfigSource::Trivy => "Trivy's report",
        }
    }
}

/// An `ExposedPorts` entry: `80/tcp`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct ExposedPort {
    pub port: u16,
    pub protocol: String,
}

impl std::fmt::Display for ExposedPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol)
    }
}

impl ExposedPort {
    /// `80/tcp`, `53/udp`, or `8080` (tcp, as Docker reads a bare number).
    pub fn parse(key: &str) -> Option<Self> {
        let (port, protocol) = key.split_once('/').unwrap_or((key, "tcp"));
        Some(Self {
            port: port.trim().parse().ok()?,
            protocol: protocol.trim().to_ascii_lowercase(),
        })
    }
}

/// The parts of an image's configuration a fix depends on.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct ImageConfig {
    /// `User` as the image sets it (`1000`, `1000:1000`, `nginx`, `app:app`); `None` or empty
    /// means root.
    pub user: Option<String>,
    /// `Volumes` keys: paths the image expects to write.
    pub volumes: Vec<String>,
    pub exposed_ports: Vec<ExposedPort>,
    pub working_dir: Option<String>,
    /// The manifest digest the configuration belongs to.
    pub digest: Option<String>,
    /// `os/arch[/variant]` of the image read.
    pub platform: String,
    pub source: Option<ConfigSource>,
    /// For a user or group given by name, the IDs found in the image's `/etc/passwd` and
    /// `/etc/group`; `None` when they were not looked for.
    pub names: Option<NamedIds>,
}

/// An OCI image configuration as JSON gives it: the registry's config blob
/// (`application/vnd.oci.image.config.v1+json`) or go-containerregistry's `v1.ConfigFile` that
/// Trivy prints, which share one shape: lower-case keys outside, Docker's capitalised ones in
/// `config`. Only what [`ImageConfig::from_oci`] reads is kept.
#[derive(Debug, Default, serde::Deserialize)]
pub struct OciImageConfig {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    config: Option<OciContainerConfig>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct OciContainerConfig {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    exposed_ports: Option<BTreeMap<String, serde::de::IgnoredAny>>,
    #[serde(default)]
    volumes: Option<BTreeMap<String, serde::de::IgnoredAny>>,
    #[serde(default)]
    working_dir: Option<String>,
}

impl ImageConfig {
    /// The parts of `oci` a fix depends on, for the manifest `digest`, read from `source`.
    /// An empty `User` or `WorkingDir` is no value (Docker writes `""` for "not set"); ports
    /// that are not numbers are dropped, the rest sorted.
    pub fn from_oci(oci: OciImageConfig, digest: Option<String>, source: ConfigSource) -> Self {
        let inner = oci.config.unwrap_or_default();
        let mut exposed_ports: Vec<ExposedPort> = inner
            .exposed_ports
            .unwrap_or_default()
            .keys()
            .filter_map(|k| ExposedPort::parse(k))
            .collect();
        exposed_ports.sort();
        let mut platform = format!("{}/{}", oci.os, oci.architecture);
        if let Some(v) = oci.variant.filter(|v| !v.is_empty()) {
            platform = format!("{platform}/{v}");
        }
        Self {
            user: inner.user.filter(|u| !u.trim().is_empty()),
            volumes: inner.volumes.unwrap_or_default().into_keys().collect(),
            exposed_ports,
            working_dir: inner.working_dir.filter(|w| !w.is_empty()),
            digest,
            platform,
            source: Some(source),
            names: None,
        }
    }
}

/// IDs of a named user and group as the image's own files give them.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct NamedIds {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Why an ID is missing, for people ("the image has no /etc/passwd").
    pub problem: Option<String>,
}

/// A user or group as `USER` writes it: a number or a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Id {
    Num(u32),
    Name(String),
}

impl Id {
    fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if s.is_empty() {
            return None;
        }
        Some(match s.parse::<u32>() {
            Ok(n) => Id::Num(n),
            Err(_) => Id::Name(s.to_string()),
        })
    }
}

/// `USER user[:group]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpec {
    pub user: Id,
    pub group: Option<Id>,
}

impl UserSpec {
    /// `None` for an unset or empty `USER`, which is root.
    pub fn parse(user: Option<&str>) -> Option<Self> {
        let raw = user?.trim();
        let (u, g) = match raw.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (raw, None),
        };
        Some(UserSpec {
            user: Id::parse(u)?,
            group: g.and_then(Id::parse),
        })
    }

    /// Whether the user or the group is a name that needs the image's files to resolve.
    pub fn has_names(&self) -> bool {
        matches!(self.user, Id::Name(_)) || matches!(self.group, Some(Id::Name(_)))
    }
}

/// Resolve a `USER` naming a user or group through the image's `/etc/passwd` and
/// `/etc/group` (their text, `None` when the image has no such file). Without a group the
/// user's primary group from `/etc/passwd` is the one the runtime uses.
pub fn resolve_names(spec: &UserSpec, passwd: Option<&str>, group: Option<&str>) -> NamedIds {
    let mut out = NamedIds::default();
    let mut problems = Vec::new();
    let passwd_entry = |name: &str| -> Option<(u32, Option<u32>)> {
        passwd?.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.len() >= 4 && fields[0] == name)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok())))
                .flatten()
        })
    };
    let mut primary = None;
    match &spec.user {
        Id::Num(n) => {
            out.uid = Some(*n);
            // A numeric user's primary group is in /etc/passwd too, when it is listed.
            primary = passwd.and_then(|p| {
                p.lines().find_map(|line| {
                    let fields: Vec<&str> = line.split(':').collect();
                    (fields.len() >= 4 && fields[2].parse::<u32>().ok() == Some(*n))
                        .then(|| fields[3].parse().ok())
                        .flatten()
                })
            });
        }
        Id::Name(name) => match passwd_entry(name) {
            Some((uid, gid)) => {
                out.uid = Some(uid);
                primary = gid;
            }
            None if passwd.is_none() => problems.push("the image has no /etc/passwd".to_string()),
            None => problems.push(format!("its /etc/passwd has no user `{name}`")),
        },
    }
    out.gid = match &spec.group {
        Some(Id::Num(n)) => Some(*n),
        Some(Id::Name(name)) => {
            let found = group.and_then(|g| {
                g.lines().find_map(|line| {
                    let fields: Vec<&str> = line.split(':').collect();
                    (fields.len() >= 3 && fields[0] == name)
                        .then(|| fields[2].parse().ok())
                        .flatten()
                })
            });
            if found.is_none() {
                problems.push(match group {
                    None => "the image has no /etc/group".to_string(),
                    Some(_) => format!("its /etc/group has no group `{name}`"),
                });
            }
            found
        }
        None => primary,
    };
    out.problem = (!problems.is_empty()).then(|| problems.join(" and "));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnginx:x:101:101:nginx:/var/cache/nginx:/sbin/nologin\nbroken:x:abc:1::/:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nnginx:x:101:\nstaff:x:50:nginx\n";

    #[test]
    fn user_specs() {
        assert_eq!(UserSpec::parse(None), None);
        assert_eq!(UserSpec::parse(Some("")), None);
        assert_eq!(
            UserSpec::parse(Some("1000:1000")),
            Some(UserSpec {
                user: Id::Num(1000),
                group: Some(Id::Num(1000))
            })
        );
        let app = UserSpec::parse(Some("app:app")).unwrap();
        assert!(app.has_names());
        assert!(!UserSpec::parse(Some("65532")).unwrap().has_names());
        assert_eq!(UserSpec::parse(Some("1000:")).unwrap().group, None);
    }

    #[test]
    fn names_resolve_through_the_images_files() {
        let spec = |s| UserSpec::parse(Some(s)).unwrap();
        let ids = resolve_names(&spec("nginx"), Some(PASSWD), Some(GROUP));
        assert_eq!(
            (ids.uid, ids.gid, ids.problem),
            (Some(101), Some(101), None)
        );
        let ids = resolve_names(&spec("nginx:staff"), Some(PASSWD), Some(GROUP));
        assert_eq!((ids.uid, ids.gid), (Some(101), Some(50)));
        let ids = resolve_names(&spec("ghost"), Some(PASSWD), Some(GROUP));
        assert_eq!(ids.uid, None);
        assert_eq!(
            ids.problem.as_deref(),
            Some("its /etc/passwd has no user `ghost`")
        );
        let ids = resolve_names(&spec("broken"), Some(PASSWD), None);
        assert_eq!(ids.uid, None);
        let ids = resolve_names(&spec("app:app"), None, None);
        assert_eq!(
            ids.problem.as_deref(),
            Some("the image has no /etc/passwd and the image has no /etc/group")
        );
        let ids = resolve_names(&spec("1000:nginx"), None, Some(GROUP));
        assert_eq!(
            (ids.uid, ids.gid, ids.problem),
            (Some(1000), Some(101), None)
        );
    }

    #[test]
    fn platforms_match_as_an_index_is_searched() {
        assert!(platform_matches("linux/arm64", "linux/arm64/v8"));
        assert!(platform_matches("linux/amd64", "linux/amd64"));
        assert!(!platform_matches("linux/arm/v7", "linux/arm/v6"));
        assert!(!platform_matches("linux/arm/v7", "linux/arm"));
        assert!(!platform_matches("linux/arm64", "linux/amd64"));
        assert!(!platform_matches("linux", "linux/amd64"));
    }

    #[test]
    fn scans_with_a_configuration_spare_the_fetch() {
        let report = |user: Option<&str>, platform: &str| {
            ScanOutcome::Report(Arc::new(crate::vuln::ImageReport {
                scanner: "Trivy".into(),
                config: Some(ImageConfig {
                    user: user.map(str::to_string),
                    platform: platform.into(),
                    source: Some(ConfigSource::Trivy),
                    ..ImageConfig::default()
                }),
                ..Default::default()
            }))
        };
        let scans: BTreeMap<String, ScanOutcome> = [
            ("numeric".to_string(), report(Some("1000"), "linux/amd64")),
            ("named".to_string(), report(Some("nginx"), "linux/amd64")),
            (
                "failed".to_string(),
                ScanOutcome::Failed("timed out".into()),
            ),
            (
                "grype".to_string(),
                ScanOutcome::Report(Arc::new(crate::vuln::ImageReport::default())),
            ),
        ]
        .into();
        let pair = |i: &str, p: &str| (i.to_string(), p.to_string());
        let split = configs_from_scans(
            vec![
                pair("numeric", "linux/amd64"),
                pair("numeric", "linux/arm64"),
                pair("named", "linux/amd64"),
                pair("failed", "linux/amd64"),
                pair("grype", "linux/amd64"),
                pair("unscanned", "linux/amd64"),
            ],
            &scans,
        );
        assert_eq!(
            split.read.keys().collect::<Vec<_>>(),
            vec![&pair("numeric", "linux/amd64")]
        );
        assert_eq!(split.need_names.len(), 1);
        assert_eq!(split.need_names[0].0, pair("named", "linux/amd64"));
        assert_eq!(
            split.fetch,
            vec![
                pair("numeric", "linux/arm64"),
                pair("failed", "linux/amd64"),
                pair("grype", "linux/amd64"),
                pair("unscanned", "linux/amd64"),
            ]
        );
    }

    #[test]
    fn ports() {
        assert_eq!(
            ExposedPort::parse("80/tcp"),
            Some(ExposedPort {
                port: 80,
                protocol: "tcp".into()
            })
        );
        assert_eq!(ExposedPort::parse("53/UDP").unwrap().to_string(), "53/udp");
        assert_eq!(ExposedPort::parse("8080").unwrap().to_string(), "8080/tcp");
        assert_eq!(ExposedPort::parse("http/tcp"), None);
    }

    fn oci(json: &str) -> ImageConfig {
        let parsed: OciImageConfig = serde_json::from_str(json).unwrap();
        ImageConfig::from_oci(parsed, Some("sha256:ab".into()), ConfigSource::Registry)
    }

    #[test]
    fn oci_configs_read_as_fixes_need_them() {
        let numeric = oci(
            r#"{"os":"linux","architecture":"amd64","config":{"User":"1000:1000","WorkingDir":"/app",
                "Volumes":{"/var/cache/app":{},"/data":{}},
                "ExposedPorts":{"8080/tcp":{},"53/udp":{},"80":{},"http/tcp":{}}}}"#,
        );
        assert_eq!(
            numeric,
            ImageConfig {
                user: Some("1000:1000".into()),
                volumes: vec!["/data".into(), "/var/cache/app".into()],
                exposed_ports: vec![
                    ExposedPort::parse("53/udp").unwrap(),
                    ExposedPort::parse("80/tcp").unwrap(),
                    ExposedPort::parse("8080/tcp").unwrap(),
                ],
                working_dir: Some("/app".into()),
                digest: Some("sha256:ab".into()),
                platform: "linux/amd64".into(),
                source: Some(ConfigSource::Registry),
                names: None,
            },
            "ports sorted, a port that is not a number dropped"
        );

        let named =
            oci(r#"{"os":"linux","architecture":"arm","variant":"v7","config":{"User":"nginx"}}"#);
        assert_eq!(named.user.as_deref(), Some("nginx"));
        assert_eq!(named.platform, "linux/arm/v7");
        assert_eq!(
            named.names, None,
            "names are looked up by the caller, in the layers"
        );

        // Docker writes `""` for a field that is not set: root, and no working directory.
        for json in [
            r#"{"os":"linux","architecture":"amd64","variant":"","config":{"User":"","WorkingDir":""}}"#,
            r#"{"os":"linux","architecture":"amd64","config":{"User":"  ","Volumes":null,"ExposedPorts":null}}"#,
            r#"{"os":"linux","architecture":"amd64","config":null}"#,
            r#"{"os":"linux","architecture":"amd64"}"#,
        ] {
            let empty = oci(json);
            assert_eq!(
                empty,
                ImageConfig {
                    digest: Some("sha256:ab".into()),
                    platform: "linux/amd64".into(),
                    source: Some(ConfigSource::Registry),
                    ..ImageConfig::default()
                },
                "{json}"
            );
        }

        let trivy: OciImageConfig =
            serde_json::from_str(r#"{"os":"linux","architecture":"amd64","config":{"User":"0"}}"#)
                .unwrap();
        let c = ImageConfig::from_oci(trivy, None, ConfigSource::Trivy);
        assert_eq!(
            (c.user.as_deref(), c.digest, c.source),
            (Some("0"), None, Some(ConfigSource::Trivy))
        );
    }
}
