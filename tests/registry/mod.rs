//! Debian's real `docker-registry` on loopback, and images pushed to it through its HTTP API
//! (config blobs and tar.gz layers written here). Shared by the app tests (`tests/app`), the
//! admission tests (`tests/admission`) and the image benchmark (`benches/images.rs`), each of
//! which includes this file by path.
//!
//! Starting it skips the caller (`None`) when the binary is missing, unless
//! `KUBEHARDEN_REQUIRE_REGISTRY` is set (CI: `apt-get install -y docker-registry`).

#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::{HeaderMap, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// One plain-http request: status, headers, body.
pub async fn call(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (StatusCode, HeaderMap, Bytes) {
    let http: Client<_, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), http.request(request))
        .await
        .unwrap_or_else(|_| panic!("{method} {url}: no answer"))
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

/// A `docker-registry serve` on a loopback port with a temporary root; killed on drop.
pub struct DockerRegistry {
    child: Child,
    /// `127.0.0.1:PORT`
    pub domain: String,
    pub port: u16,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    root: tempfile::TempDir,
}

impl Drop for DockerRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn registry_binary() -> Option<PathBuf> {
    let fixed = PathBuf::from("/usr/bin/docker-registry");
    if fixed.is_file() {
        return Some(fixed);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("docker-registry"))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The running registry, or `None` (the caller skips) when the binary is missing.
pub async fn start_registry() -> Option<DockerRegistry> {
    let Some(binary) = registry_binary() else {
        if std::env::var_os("KUBEHARDEN_REQUIRE_REGISTRY").is_some() {
            panic!(
                "KUBEHARDEN_REQUIRE_REGISTRY is set but docker-registry is not installed \
                 (apt-get install -y docker-registry)"
            );
        }
        eprintln!(
            "skipping: docker-registry is not installed (apt-get install -y docker-registry)"
        );
        return None;
    };
    // The port is free when picked; another process may take it before the registry binds it,
    // so a registry that exits early is started again on another port.
    for _ in 0..3 {
        let root = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = root.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n",
                root.path().join("data").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(root.path().join("registry.log")).unwrap();
        let child = Command::new(&binary)
            .arg("serve")
            .arg(&config)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let mut registry = DockerRegistry {
            child,
            domain: format!("127.0.0.1:{port}"),
            port,
            base: format!("http://127.0.0.1:{port}"),
            root,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if registry.child.try_wait().unwrap().is_some() {
                break;
            }
            if ping(&registry.base).await {
                return Some(registry);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = std::fs::read_to_string(registry.root.path().join("registry.log"));
        eprintln!("docker-registry did not come up on {port}: {log:?}");
    }
    panic!("docker-registry did not start");
}

/// `GET /v2/` answers 200.
async fn ping(base: &str) -> bool {
    let http: Client<_, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = http::Request::get(format!("{base}/v2/"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    matches!(
        tokio::time::timeout(Duration::from_secs(2), http.request(request)).await,
        Ok(Ok(response)) if response.status() == StatusCode::OK
    )
}

/// Absolute, or relative to the registry.
fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else {
        format!("{base}{location}")
    }
}

/// POST an upload, PUT the bytes with their digest; the digest.
pub async fn push_blob(base: &str, name: &str, bytes: &[u8]) -> String {
    let digest = digest(bytes);
    let (status, headers, body) = call(
        "POST",
        &format!("{base}/v2/{name}/blobs/uploads/"),
        &[],
        b"",
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body:?}");
    let location = absolute(base, headers[header::LOCATION].to_str().unwrap());
    // The Location already carries `?_state=...`.
    let separator = if location.contains('?') { '&' } else { '?' };
    let (status, headers, body) = call(
        "PUT",
        &format!("{location}{separator}digest={digest}"),
        &[("content-type", "application/octet-stream")],
        bytes,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body:?}");
    assert_eq!(headers["docker-content-digest"], digest.as_str());
    digest
}

/// PUT a manifest under a tag or a digest; the digest the registry gives back.
pub async fn put_manifest(
    base: &str,
    name: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) -> String {
    let (status, headers, body) = call(
        "PUT",
        &format!("{base}/v2/{name}/manifests/{reference}"),
        &[("content-type", media_type)],
        bytes,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    headers["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_string()
}

/// A tar.gz layer holding these files (path, content).
pub fn layer(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, path, *content).unwrap();
    }
    let tar = builder.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

/// Push an image: its config (the `config` object of the config blob, as JSON text) and
/// layers; returns the manifest bytes (not yet tagged).
pub async fn push_image(
    base: &str,
    name: &str,
    arch: &str,
    config: &str,
    layers: &[Vec<u8>],
) -> Vec<u8> {
    let blob = format!(
        r#"{{"architecture":"{arch}","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"config":{config}}}"#
    );
    let config_digest = push_blob(base, name, blob.as_bytes()).await;
    let mut descriptors = Vec::new();
    for l in layers {
        let d = push_blob(base, name, l).await;
        descriptors.push(format!(
            r#"{{"mediaType":"{OCI_LAYER}","digest":"{d}","size":{}}}"#,
            l.len()
        ));
    }
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{config_digest}","size":{}}},"layers":[{}]}}"#,
        blob.len(),
        descriptors.join(",")
    )
    .into_bytes()
}

/// Push an amd64 image and tag it; the manifest's digest.
pub async fn tag(base: &str, name: &str, tag: &str, config: &str, layers: &[Vec<u8>]) -> String {
    let manifest = push_image(base, name, "amd64", config, layers).await;
    put_manifest(base, name, tag, OCI_MANIFEST, &manifest).await
}
