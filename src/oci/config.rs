//! Read an image's configuration: the manifest for a tag or digest (for an index, the one of
//! the pod's platform), its config blob (`User`, `Volumes`, `ExposedPorts`, `WorkingDir`) and,
//! for a user given by name, `/etc/passwd` and `/etc/group` searched in the layers from the
//! top (whiteouts honoured). Everything is bounded: blob sizes (declared and read), the bytes a
//! layer unpacks to, the files read, and each request's time; redirects (registries send blob
//! downloads to storage) pass the same network guard as the registry itself and never carry
//! its credentials to another host. Results are cached by manifest digest.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use http::header::{HeaderValue, LOCATION};
use http::{Method, StatusCode, Uri};
use kubeharden_core::facts::{
    ConfigSource, ImageConfig, Inspection, NamedIds, OciImageConfig, UserSpec, resolve_names,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{
    Answer, MANIFEST_ACCEPT, MAX_MANIFEST_BYTES, OciClient, OciError, Target, auth_key, classify,
    is_sha256_digest,
};

/// Config blobs are a few KiB; a larger one is refused before it is downloaded.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// A layer searched for `/etc/passwd`, compressed.
pub const MAX_LAYER_BYTES: u64 = 64 << 20;
/// What one layer may unpack to: a gzip bomb stops here.
pub const MAX_UNPACKED_BYTES: u64 = 256 << 20;
/// `/etc/passwd` or `/etc/group`.
pub const MAX_ETC_FILE_BYTES: u64 = 1 << 20;
/// Layers searched from the top before giving up on a name.
const MAX_LAYERS_SEARCHED: usize = 32;
/// Redirects followed for one blob.
const MAX_REDIRECTS: usize = 3;

const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: u64,
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    variant: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    #[serde(default)]
    media_type: String,
    #[serde(default)]
    manifests: Vec<Descriptor>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// One registry conversation about one repository: where, as whom.
struct Session<'a> {
    scheme: &'static str,
    host: String,
    path: String,
    cache_key: (String, String),
    credentials: Option<&'a super::auth::Credentials>,
    authorization: Option<HeaderValue>,
    target: Target,
}

impl OciClient {
    /// The configuration of `domain/path` at `reference` (a tag or `sha256:` digest) for
    /// `platform` (`linux/amd64`, `linux/arm/v7`).
    pub async fn image_config(
        &self,
        domain: &str,
        path: &str,
        reference: &str,
        platform: &str,
    ) -> Result<ImageConfig, OciError> {
        let (mut s, manifest, digest) = self
            .platform_manifest(domain, path, reference, platform)
            .await?;
        if let Some(hit) = self.config_cache_get(&digest) {
            return Ok(hit);
        }
        let config = manifest
            .config
            .as_ref()
            .ok_or_else(|| s.target.protocol("the manifest has no config".into()))?;
        if config.size > MAX_CONFIG_BYTES {
            return Err(s.target.protocol(format!(
                "its config blob declares {} bytes, more than the {MAX_CONFIG_BYTES} read",
                config.size
            )));
        }
        let blob = self
            .blob(&mut s, &config.digest, MAX_CONFIG_BYTES as usize)
            .await?;
        let parsed: OciImageConfig = serde_json::from_slice(&blob).map_err(|e| {
            s.target
                .protocol(format!("the config blob is not JSON: {e}"))
        })?;
        let mut out = ImageConfig::from_oci(parsed, Some(digest.clone()), ConfigSource::Registry);
        if let Some(spec) = UserSpec::parse(out.user.as_deref())
            && spec.has_names()
        {
            out.names = Some(self.names_in_layers(&mut s, &manifest.layers, &spec).await);
        }
        self.config_cache_put(digest, out.clone());
        Ok(out)
    }

    /// A session on `domain/path`, and the image manifest of `reference` for `platform` (an
    /// index resolved to its entry) with its digest.
    async fn platform_manifest(
        &self,
        domain: &str,
        path: &str,
        reference: &str,
        platform: &str,
    ) -> Result<(Session<'_>, Manifest, String), OciError> {
        let (target, scheme, host) = self
            .open(domain, path, super::Reference::TagOrDigest(reference))
            .await?;
        let mut s = Session {
            scheme,
            cache_key: (host.clone(), format!("repository:{path}:pull")),
            host,
            path: path.to_string(),
            credentials: self.auth.get(&auth_key(domain)),
            authorization: None,
            target,
        };
        s.authorization = self
            .cached_token(&s.cache_key)
            .and_then(|t| super::auth::bearer(&t));

        let (bytes, digest) = self.manifest_bytes(&mut s, reference).await?;
        let mut manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| s.target.protocol(format!("the manifest is not JSON: {e}")))?;
        let mut digest = digest;
        if INDEX_TYPES.contains(&manifest.media_type.as_str()) || !manifest.manifests.is_empty() {
            let chosen = pick(&manifest.manifests, platform).ok_or_else(|| {
                let offered: Vec<String> = manifest
                    .manifests
                    .iter()
                    .filter_map(|m| m.platform.as_ref())
                    .map(platform_name)
                    .collect();
                s.target.not_found(format!(
                    "the index has no {platform} image (it has {})",
                    if offered.is_empty() {
                        "none with a platform".to_string()
                    } else {
                        offered.join(", ")
                    }
                ))
            })?;
            let chosen = chosen.digest.clone();
            if !is_sha256_digest(&chosen) {
                return Err(s.target.protocol(format!("the index names {chosen:?}")));
            }
            let (bytes, _) = self.manifest_bytes(&mut s, &chosen).await?;
            manifest = serde_json::from_slice(&bytes)
                .map_err(|e| s.target.protocol(format!("the manifest is not JSON: {e}")))?;
            digest = chosen;
        }
        Ok((s, manifest, digest))
    }

    /// The IDs of a `USER` given by name (`user`, as the image's configuration says it, from a
    /// scanner's report), read from the `/etc/passwd` and `/etc/group` in the image's layers:
    /// the part of an inspection a report cannot give. Cached by manifest digest and user.
    pub async fn named_ids(
        &self,
        domain: &str,
        path: &str,
        reference: &str,
        platform: &str,
        user: &str,
    ) -> Result<NamedIds, OciError> {
        let spec = UserSpec::parse(Some(user))
            .ok_or_else(|| OciError::Config("an empty USER names no one".into()))?;
        let (mut s, manifest, digest) = self
            .platform_manifest(domain, path, reference, platform)
            .await?;
        let key = (digest, user.to_string());
        if let Some(hit) = self.names_cache_get(&key) {
            return Ok(hit);
        }
        let ids = self.names_in_layers(&mut s, &manifest.layers, &spec).await;
        self.names_cache_put(key, ids.clone());
        Ok(ids)
    }

    /// The IDs `spec` names, from the `/etc/passwd` and `/etc/group` of `layers`; a layer that
    /// cannot be read is said in `problem`, not an error: the configuration itself was read.
    async fn names_in_layers(
        &self,
        s: &mut Session<'_>,
        layers: &[Descriptor],
        spec: &UserSpec,
    ) -> NamedIds {
        match self.etc_files(s, layers).await {
            Ok((passwd, group)) => resolve_names(spec, passwd.as_deref(), group.as_deref()),
            Err(e) => unread_names(e),
        }
    }

    fn names_cache_get(&self, key: &(String, String)) -> Option<NamedIds> {
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    fn names_cache_put(&self, key: (String, String), ids: NamedIds) {
        let mut cache = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= 4096 {
            cache.clear();
        }
        cache.insert(key, ids);
    }

    fn config_cache_get(&self, digest: &str) -> Option<ImageConfig> {
        self.configs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest)
            .cloned()
    }

    fn config_cache_put(&self, digest: String, config: ImageConfig) {
        let mut cache = self.configs.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: a long-running server sees many images.
        if cache.len() >= 4096 {
            cache.clear();
        }
        cache.insert(digest, config);
    }

    /// A manifest's bytes and digest (checked against a digest reference).
    async fn manifest_bytes(
        &self,
        s: &mut Session<'_>,
        reference: &str,
    ) -> Result<(Vec<u8>, String), OciError> {
        let url = format!("/v2/{}/manifests/{reference}", s.path);
        let answer = self
            .get(s, &url, Some(MANIFEST_ACCEPT), MAX_MANIFEST_BYTES)
            .await?;
        let computed = format!("sha256:{}", hex::encode(Sha256::digest(&answer.body)));
        if reference.starts_with("sha256:") && computed != reference {
            return Err(s
                .target
                .protocol(format!("the manifest {reference} hashes to {computed}")));
        }
        Ok((answer.body.to_vec(), computed))
    }

    /// A blob, its digest checked, at most `limit` bytes.
    async fn blob(
        &self,
        s: &mut Session<'_>,
        digest: &str,
        limit: usize,
    ) -> Result<Vec<u8>, OciError> {
        if !is_sha256_digest(digest) {
            return Err(s.target.protocol(format!("a blob digest {digest:?}")));
        }
        let url = format!("/v2/{}/blobs/{digest}", s.path);
        let answer = self.get(s, &url, None, limit).await?;
        let computed = format!("sha256:{}", hex::encode(Sha256::digest(&answer.body)));
        if computed != digest {
            return Err(s
                .target
                .protocol(format!("the blob {digest} hashes to {computed}")));
        }
        Ok(answer.body.to_vec())
    }

    /// `GET` on the registry: a `401` is answered once, redirects are followed through the
    /// network guard, without the registry's `Authorization` on another host.
    async fn get(
        &self,
        s: &mut Session<'_>,
        path_and_query: &str,
        accept: Option<&str>,
        limit: usize,
    ) -> Result<Answer, OciError> {
        let uri: Uri = format!("{}://{}{path_and_query}", s.scheme, s.host)
            .parse()
            .map_err(|_| OciError::Config(format!("{path_and_query} is not a valid URL")))?;
        let (target, at) = (&s.target, &uri);
        let send = |authorization: Option<HeaderValue>| async move {
            self.send(
                Method::GET,
                at,
                accept,
                authorization.as_ref(),
                limit,
                target,
            )
            .await
        };
        let mut answer = send(s.authorization.clone()).await?;
        if answer.status == StatusCode::UNAUTHORIZED {
            if s.authorization.is_some() {
                self.forget_token(&s.cache_key);
            }
            let value = self
                .answer_challenge(&answer.headers, &s.cache_key, s.credentials, &s.target)
                .await?;
            s.authorization = Some(value);
            answer = send(s.authorization.clone()).await?;
        }
        let mut current = uri;
        for _ in 0..MAX_REDIRECTS {
            if !answer.status.is_redirection() {
                break;
            }
            let location = answer
                .headers
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| {
                    s.target
                        .protocol(format!("GET {current}: a redirect without a Location"))
                })?;
            let next = resolve_location(&current, location).ok_or_else(|| {
                s.target
                    .protocol(format!("GET {current}: a redirect to {location:?}"))
            })?;
            let authority = next.authority().map(|a| a.as_str().to_string());
            let Some(authority) = authority.filter(|a| !a.contains('@')) else {
                return Err(s.target.protocol(format!("a redirect to {location:?}")));
            };
            if !self.allowed(&authority).await {
                return Err(OciError::Config(format!(
                    "not following {}'s redirect to {authority} for {}: a loopback or private address the server does not list",
                    s.target.registry, s.target.reference
                )));
            }
            if next.scheme_str() == Some("http") && !self.plain_http_allowed(&authority) {
                return Err(s
                    .target
                    .protocol(format!("a redirect to plain http at {authority}")));
            }
            // Credentials belong to the registry; storage URLs carry their own signature.
            let same_host = current.authority() == next.authority();
            let authorization = if same_host {
                s.authorization.clone()
            } else {
                None
            };
            answer = self
                .send(
                    Method::GET,
                    &next,
                    accept,
                    authorization.as_ref(),
                    limit,
                    &s.target,
                )
                .await?;
            current = next;
        }
        if answer.status != StatusCode::OK {
            return Err(classify(&answer, &s.target, &format!("GET {current}")));
        }
        Ok(answer)
    }

    /// `/etc/passwd` and `/etc/group` as the container sees them: the topmost layer that has
    /// (or deletes) each wins.
    async fn etc_files(
        &self,
        s: &mut Session<'_>,
        layers: &[Descriptor],
    ) -> Result<(Option<String>, Option<String>), OciError> {
        let mut passwd = Lookup::Unknown;
        let mut group = Lookup::Unknown;
        for layer in layers.iter().rev().take(MAX_LAYERS_SEARCHED) {
            if passwd.settled() && group.settled() {
                break;
            }
            if layer.size > MAX_LAYER_BYTES {
                return Err(s.target.protocol(format!(
                    "a layer of {} bytes is larger than the {MAX_LAYER_BYTES} searched",
                    layer.size
                )));
            }
            let gzip = if layer.media_type.ends_with("gzip") {
                true
            } else if layer.media_type.ends_with(".tar")
                || layer.media_type.ends_with("tar")
                || layer.media_type.is_empty()
            {
                false
            } else {
                return Err(s.target.protocol(format!(
                    "layers of type {} cannot be searched",
                    layer.media_type
                )));
            };
            let bytes = self
                .blob(s, &layer.digest, MAX_LAYER_BYTES as usize)
                .await?;
            // Unpacking is CPU work: off the async threads.
            let found = tokio::task::spawn_blocking(move || scan_layer(&bytes, gzip))
                .await
                .map_err(|e| OciError::Config(format!("a layer scan failed: {e}")))?
                .map_err(|why| s.target.protocol(why))?;
            passwd.merge(found.passwd, found.opaque_etc);
            group.merge(found.group, found.opaque_etc);
        }
        Ok((passwd.text(), group.text()))
    }
}

/// What the layers above said about one file.
enum Lookup {
    Unknown,
    Found(String),
    Deleted,
}

impl Lookup {
    fn settled(&self) -> bool {
        !matches!(self, Lookup::Unknown)
    }

    /// A lower layer's word counts only when no upper one settled it; an opaque `etc/` hides
    /// everything below it.
    fn merge(&mut self, found: Lookup, opaque: bool) {
        if self.settled() {
            return;
        }
        *self = match found {
            Lookup::Unknown if opaque => Lookup::Deleted,
            other => other,
        };
    }

    fn text(self) -> Option<String> {
        match self {
            Lookup::Found(t) => Some(t),
            _ => None,
        }
    }
}

struct LayerFiles {
    passwd: Lookup,
    group: Lookup,
    opaque_etc: bool,
}

/// Read a layer's tar (gzip-compressed or not) for `etc/passwd`, `etc/group` and their
/// whiteouts, never unpacking more than [`MAX_UNPACKED_BYTES`].
fn scan_layer(bytes: &[u8], gzip: bool) -> Result<LayerFiles, String> {
    let reader: Box<dyn Read> = if gzip {
        Box::new(flate2::read::MultiGzDecoder::new(bytes))
    } else {
        Box::new(bytes)
    };
    let bounded = Bounded {
        inner: reader,
        left: MAX_UNPACKED_BYTES,
    };
    let mut archive = tar::Archive::new(bounded);
    let mut out = LayerFiles {
        passwd: Lookup::Unknown,
        group: Lookup::Unknown,
        opaque_etc: false,
    };
    let entries = archive
        .entries()
        .map_err(|e| format!("a layer is not a tar archive: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("a layer could not be read: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| format!("a layer has a bad path: {e}"))?
            .to_string_lossy()
            .trim_start_matches("./")
            .trim_start_matches('/')
            .to_string();
        let slot = match path.as_str() {
            "etc/passwd" | "etc/.wh.passwd" => &mut out.passwd,
            "etc/group" | "etc/.wh.group" => &mut out.group,
            "etc/.wh..wh..opq" => {
                out.opaque_etc = true;
                continue;
            }
            _ => continue,
        };
        if path.contains(".wh.") {
            *slot = Lookup::Deleted;
            continue;
        }
        if !entry.header().entry_type().is_file() {
            // A link or a directory there is nothing the kubelet's user lookup would read.
            continue;
        }
        let size = entry.size();
        if size > MAX_ETC_FILE_BYTES {
            return Err(format!(
                "/{path} is {size} bytes, more than the {MAX_ETC_FILE_BYTES} read"
            ));
        }
        let mut text = String::new();
        (&mut entry)
            .take(MAX_ETC_FILE_BYTES)
            .read_to_string(&mut text)
            .map_err(|e| format!("/{path} could not be read: {e}"))?;
        *slot = Lookup::Found(text);
    }
    Ok(out)
}

/// A reader that fails once it has given `left` bytes: what a layer unpacks to is bounded.
struct Bounded<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other(format!(
                "the layer unpacks to more than {MAX_UNPACKED_BYTES} bytes"
            )));
        }
        let max = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..max])?;
        self.left -= n as u64;
        Ok(n)
    }
}

fn platform_name(p: &Platform) -> String {
    match &p.variant {
        Some(v) if !v.is_empty() => format!("{}/{}/{v}", p.os, p.architecture),
        _ => format!("{}/{}", p.os, p.architecture),
    }
}

/// The index entry for `platform` (`os/arch[/variant]`): a variant asked for must match; none
/// asked for takes the first of the architecture.
fn pick<'a>(manifests: &'a [Descriptor], platform: &str) -> Option<&'a Descriptor> {
    let mut parts = platform.split('/');
    let os = parts.next()?;
    let arch = parts.next()?;
    let variant = parts.next();
    manifests.iter().find(|m| {
        m.platform.as_ref().is_some_and(|p| {
            p.os == os
                && p.architecture == arch
                && variant.is_none_or(|v| p.variant.as_deref() == Some(v))
        })
    })
}

/// A `Location` against the URL it answered.
fn resolve_location(current: &Uri, location: &str) -> Option<Uri> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.parse().ok();
    }
    if location.starts_with('/') {
        return format!(
            "{}://{}{location}",
            current.scheme_str()?,
            current.authority()?
        )
        .parse()
        .ok();
    }
    None
}

/// IDs that could not be looked for, and why.
fn unread_names(why: impl std::fmt::Display) -> NamedIds {
    NamedIds {
        uid: None,
        gid: None,
        problem: Some(format!("its /etc/passwd could not be read ({why})")),
    }
}

/// Where to ask for an image as written: its registry, repository and reference (the
/// digest it is pinned to, else its tag), or why it names none.
struct Located {
    domain: String,
    path: String,
    reference: String,
}

fn locate(image: &str) -> Result<Located, String> {
    let r = kubeharden_core::image::parse(image)
        .map_err(|e| format!("`{image}` is not a valid image reference: {e}"))?;
    let reference = r
        .digest
        .clone()
        .unwrap_or_else(|| r.effective_tag().to_string());
    Ok(Located {
        domain: r.domain,
        path: r.path,
        reference,
    })
}

/// `look` on each `(image, platform)` of `wanted` with what goes with it, four images at a
/// time, each call bounded by the client's timeout.
async fn four_at_a_time<T, F, Fut>(
    client: &Arc<OciClient>,
    wanted: Vec<((String, String), T)>,
    look: F,
) -> BTreeMap<(String, String), Inspection>
where
    F: Fn(Arc<OciClient>, Result<Located, String>, String, T) -> Fut,
    Fut: Future<Output = Inspection> + Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    let limit = Arc::new(tokio::sync::Semaphore::new(4));
    for ((image, platform), with) in wanted {
        let limit = limit.clone();
        // A future does nothing until polled: the work starts once the permit is held.
        let work = look(client.clone(), locate(&image), platform.clone(), with);
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            ((image, platform), work.await)
        });
    }
    let mut out = BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        if let Ok((key, inspection)) = done {
            out.insert(key, inspection);
        }
    }
    out
}

/// Read the configurations of `(image, platform)` pairs; the client caches by manifest
/// digest.
pub async fn inspect_all(
    client: &Arc<OciClient>,
    wanted: Vec<(String, String)>,
) -> BTreeMap<(String, String), Inspection> {
    let wanted = wanted.into_iter().map(|key| (key, ())).collect();
    four_at_a_time(client, wanted, |client, at, platform, ()| async move {
        let read = match at {
            Ok(at) => client
                .image_config(&at.domain, &at.path, &at.reference, &platform)
                .await
                .map_err(|e| e.to_string()),
            Err(why) => Err(why),
        };
        match read {
            Ok(config) => Inspection::Read(config),
            Err(why) => Inspection::NotChecked(why),
        }
    })
    .await
}

/// Complete configurations a scanner's report gave (Trivy's, which carries no files) whose
/// `USER` names a user or group: the IDs are read from the image's layers, and a failure is
/// said in `names.problem` as for a configuration read here.
pub async fn complete_names(
    client: &Arc<OciClient>,
    wanted: Vec<((String, String), ImageConfig)>,
) -> BTreeMap<(String, String), Inspection> {
    four_at_a_time(
        client,
        wanted,
        |client, at, platform, mut config| async move {
            let user = config.user.clone().unwrap_or_default();
            let ids = match at {
                Ok(at) => client
                    .named_ids(&at.domain, &at.path, &at.reference, &platform, &user)
                    .await
                    .map_err(|e| e.to_string()),
                Err(why) => Err(why),
            };
            config.names = Some(ids.unwrap_or_else(unread_names));
            Inspection::Read(config)
        },
    )
    .await
}

/// Every configuration of `wanted` (`(image, platform)` pairs): from the scan reports that
/// carry one (Trivy's), the layers still read for a named user, and the rest from registries.
pub async fn inspect_with_scans(
    client: &Arc<OciClient>,
    wanted: Vec<(String, String)>,
    scans: &BTreeMap<String, kubeharden_core::vuln::ScanOutcome>,
) -> BTreeMap<(String, String), Inspection> {
    let split = kubeharden_core::facts::configs_from_scans(wanted, scans);
    let mut out = split.read;
    let (named, fetched) = tokio::join!(
        complete_names(client, split.need_names),
        inspect_all(client, split.fetch)
    );
    out.extend(named);
    out.extend(fetched);
    out
}
