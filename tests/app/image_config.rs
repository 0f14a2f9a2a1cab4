//! `--inspect-images` against Debian's real `docker-registry` on loopback, with images the
//! tests push through its HTTP API (config blobs and tar.gz layers written here): what `fix
//! --write --unsafe-fixes` writes for each, and how hostile answers are bounded or refused
//! with the fix falling back and saying so.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use kubeharden::oci::OciClient;

use crate::registry::{
    OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, digest, layer, push_blob, push_image, put_manifest,
    start_registry, tag,
};

fn manifest_for(image: &str, arch: Option<&str>) -> String {
    let selector = arch
        .map(|a| format!("      nodeSelector:\n        kubernetes.io/arch: {a}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  template:
    spec:
{selector}      containers:
        - name: app
          image: {image}
          resources:
            limits: {{cpu: 100m, memory: 64Mi}}
"
    )
}

/// `kubeharden fix --write --unsafe-fixes --inspect-images` on one manifest: the file as
/// written, then what it printed about the image, with the registry's port as `PORT`.
fn fix_write(domain: &str, text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.yaml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kubeharden"))
        .args(["fix", "--write", "--unsafe-fixes", "--inspect-images"])
        .arg(&path)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "fix failed: {stderr}"
    );
    let fixed = std::fs::read_to_string(&path).unwrap();
    let said: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("image: "))
        .collect();
    let port = domain.rsplit(':').next().unwrap();
    format!("{fixed}---\n{}\n", said.join("\n"))
        .replace(&path.display().to_string(), "web.yaml")
        .replace(port, "PORT")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fix_write_knows_each_image() {
    let Some(registry) = start_registry().await else {
        return;
    };
    let base = registry.base.clone();
    let domain = registry.domain.clone();
    let passwd =
        b"root:x:0:0:root:/root:/bin/sh\nnginx:x:101:101:nginx:/var/cache/nginx:/sbin/nologin\n";
    let group = b"root:x:0:\nnginx:x:101:\n";
    tag(&base, "numeric", "1", r#"{"User":"1000"}"#, &[layer(&[])]).await;
    // The user's files sit in a lower layer; an upper layer changes something else.
    tag(
        &base,
        "nginx",
        "1",
        r#"{"User":"nginx"}"#,
        &[
            layer(&[("etc/passwd", passwd), ("etc/group", group)]),
            layer(&[("usr/share/nginx/html/index.html", b"hi")]),
        ],
    )
    .await;
    tag(&base, "root", "1", r#"{"User":"root"}"#, &[layer(&[])]).await;
    tag(&base, "nouser", "1", r#"{}"#, &[layer(&[])]).await;
    tag(
        &base,
        "volumes",
        "1",
        r#"{"User":"1000","Volumes":{"/var/cache/app":{}}}"#,
        &[layer(&[])],
    )
    .await;
    tag(
        &base,
        "port",
        "1",
        r#"{"User":"1000","ExposedPorts":{"80/tcp":{}}}"#,
        &[layer(&[])],
    )
    .await;
    // A multi-arch index: root on amd64, UID 1000 on arm64.
    let amd = push_image(&base, "multi", "amd64", r#"{}"#, &[layer(&[])]).await;
    let arm = push_image(&base, "multi", "arm64", r#"{"User":"1000"}"#, &[layer(&[])]).await;
    let amd_digest = put_manifest(&base, "multi", &digest(&amd), OCI_MANIFEST, &amd).await;
    let arm_digest = put_manifest(&base, "multi", &digest(&arm), OCI_MANIFEST, &arm).await;
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{amd_digest}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}},{{"mediaType":"{OCI_MANIFEST}","digest":"{arm_digest}","size":{},"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}}]}}"#,
        amd.len(),
        arm.len()
    );
    put_manifest(&base, "multi", "1", OCI_INDEX, index.as_bytes()).await;

    for (case, image, arch) in [
        ("numeric", "numeric:1", None),
        ("nginx", "nginx:1", None),
        ("root", "root:1", None),
        ("nouser", "nouser:1", None),
        ("volumes", "volumes:1", None),
        ("port", "port:1", None),
        ("multi_arm64", "multi:1", Some("arm64")),
        ("multi_amd64", "multi:1", None),
    ] {
        let text = manifest_for(&format!("{domain}/{image}"), arch);
        let shown = fix_write(&domain, &text);
        // Every blob here is written the same way each run, so the digests shown are stable.
        insta::assert_snapshot!(format!("fix_write_{case}"), shown);
    }
}

/// A tar.gz layer whose one file, `big.bin`, unpacks to `megabytes` MiB of zeros: a tar
/// header, then the zeros as concatenated gzip members (cheap to make, each ~1 KiB), as a
/// decompression bomb looks to the reader.
fn gzip_bomb(megabytes: usize) -> Vec<u8> {
    let gz = |bytes: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    };
    let mut header = tar::Header::new_gnu();
    header.set_path("big.bin").unwrap();
    header.set_size((megabytes as u64) << 20);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut out = gz(header.as_bytes());
    out.extend(gz(&vec![0u8; 1 << 20]).repeat(megabytes));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_images_are_bounded_and_the_fix_falls_back() {
    let Some(registry) = start_registry().await else {
        return;
    };
    let base = registry.base.clone();
    let domain = registry.domain.clone();
    // A 100 MB config blob that declares itself small: the read stops at the bound.
    let huge = vec![b' '; 100 << 20];
    let huge_digest = push_blob(&base, "bigconfig", &huge).await;
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{huge_digest}","size":1000}},"layers":[]}}"#
    );
    put_manifest(&base, "bigconfig", "1", OCI_MANIFEST, manifest.as_bytes()).await;
    // A named user whose only layer is a gzip bomb.
    tag(&base, "bomb", "1", r#"{"User":"app"}"#, &[gzip_bomb(300)]).await;
    // A named user with a 2 MB /etc/passwd.
    let mut big_passwd = b"app:x:1000:1000::/:/bin/sh\n".to_vec();
    big_passwd.extend(std::iter::repeat_n(b'#', 2 << 20));
    tag(
        &base,
        "bigpasswd",
        "1",
        r#"{"User":"app"}"#,
        &[layer(&[("etc/passwd", &big_passwd)])],
    )
    .await;
    let client = OciClient::new(Default::default(), Duration::from_secs(10)).unwrap();
    let started = Instant::now();
    let err = client
        .image_config(&domain, "bigconfig", "1", "linux/amd64")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("larger than"), "{err}");
    let bomb = client
        .image_config(&domain, "bomb", "1", "linux/amd64")
        .await
        .unwrap();
    let problem = bomb.names.unwrap().problem.unwrap();
    assert!(problem.contains("unpacks to more than"), "{problem}");
    let big = client
        .image_config(&domain, "bigpasswd", "1", "linux/amd64")
        .await
        .unwrap();
    let problem = big.names.unwrap().problem.unwrap();
    assert!(problem.contains("bytes, more than"), "{problem}");
    assert!(started.elapsed() < Duration::from_secs(60));

    // Through the CLI: no runAsNonRoot for the unverifiable user, and the reason said.
    let shown = fix_write(&domain, &manifest_for(&format!("{domain}/bomb:1"), None));
    let (written, said) = shown.split_once("\n---\n").unwrap();
    assert!(!written.contains("runAsNonRoot"), "{shown}");
    assert!(said.contains("unpacks to more than"), "{shown}");
    let shown = fix_write(
        &domain,
        &manifest_for(&format!("{domain}/bigconfig:1"), None),
    );
    assert!(shown.contains("was not checked"), "{shown}");
    // Not checked: today's unsafe runAsNonRoot, as without inspection.
    assert!(shown.contains("runAsNonRoot: true"), "{shown}");
}

/// A loopback server answering every request with `answer` (or never, when `None`).
async fn fake(answer: Option<String>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        for _ in 0..16 {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                match answer {
                    Some(a) => {
                        let _ = socket.write_all(a.as_bytes()).await;
                    }
                    // Stall: hold the connection without a word.
                    None => tokio::time::sleep(Duration::from_secs(30)).await,
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_pass_the_guard_and_stalls_time_out() {
    // A registry (listed) that sends everything to another loopback address it does not list:
    // the guard refuses before any connection is made.
    let port = fake(Some(
        "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.2:9/v2/app/blobs/x\r\nContent-Length: 0\r\n\r\n"
            .into(),
    ))
    .await;
    let mut client = OciClient::new(Default::default(), Duration::from_secs(5)).unwrap();
    client.guard_network(vec![format!("127.0.0.1:{port}")]);
    let err = client
        .image_config(&format!("127.0.0.1:{port}"), "app", "1", "linux/amd64")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not following"), "{err}");

    let stall = fake(None).await;
    let client = OciClient::new(Default::default(), Duration::from_millis(500)).unwrap();
    let started = Instant::now();
    let err = client
        .image_config(&format!("127.0.0.1:{stall}"), "app", "1", "linux/amd64")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no answer within"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_review_knows_each_image() {
    let Some(registry) = start_registry().await else {
        return;
    };
    let base = registry.base.clone();
    let domain = registry.domain.clone();
    tag(&base, "numeric", "1", r#"{"User":"1000"}"#, &[layer(&[])]).await;
    tag(&base, "root", "1", r#"{}"#, &[layer(&[])]).await;
    let mut guarded = OciClient::new(Default::default(), Duration::from_secs(5)).unwrap();
    guarded.guard_network(vec![domain.clone()]);
    let h = crate::support::Harness::start_with_images(
        None,
        Some(std::sync::Arc::new(guarded)),
        vec![domain.clone()],
    )
    .await;
    let pod = |name: &str, image: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  automountServiceAccountToken: false\n  containers:\n    - name: app\n      image: {domain}/{image}\n      resources:\n        limits: {{cpu: 100m, memory: 64Mi}}\n"
        )
    };
    let numeric = pod("numeric", "numeric:1");
    let root = pod("root", "root:1");
    h.github
        .commit(crate::support::REPO, "base1", &[("README.md", "x\n")]);
    h.github.commit(
        crate::support::REPO,
        "head1",
        &[("numeric.yaml", &numeric), ("root.yaml", &root)],
    );
    h.github.open_pr(crate::support::REPO, 4, "base1", "head1");
    h.deliver(
        "pull_request",
        &crate::support::pull_request_event("opened", 4, "base1", "head1"),
    )
    .await;
    let _ = h.github.take_check_runs();
    let reviews = h.github.take_reviews();
    assert_eq!(reviews.len(), 1);
    let comment = |path: &str| {
        reviews[0]
            .comments
            .iter()
            .find(|c| c.path == path)
            .unwrap_or_else(|| panic!("a comment on {path}: {:#?}", reviews[0].comments))
            .body
            .clone()
    };
    let numeric = comment("numeric.yaml");
    // A one-click, safe runAsNonRoot: no warning names the rule.
    assert!(numeric.contains("runAsNonRoot: true"), "{numeric}");
    let warning = numeric
        .split("> [!WARNING]")
        .nth(1)
        .and_then(|w| w.split("\n\n").next())
        .unwrap_or_default();
    assert!(!warning.contains("run-as-root-allowed"), "{numeric}");
    assert!(numeric.contains("the image runs as UID 1000"), "{numeric}");
    let root = comment("root.yaml");
    let suggestion = &root[root.find("```suggestion").unwrap()..];
    // runAsNonRoot never comes alone for a root image, and the comment says why.
    assert!(
        !suggestion.contains("runAsNonRoot") || suggestion.contains("runAsUser: 65532"),
        "{root}"
    );
    assert!(
        root.contains("the image sets no USER, so it runs as root"),
        "{root}"
    );
    // Why the only offer is unsafe, and what would make it safe.
    assert!(
        root.contains("offered only as an unsafe fix")
            && root.contains("may not be able to read or write its files")
            && root.contains("a USER with a non-zero UID in the image makes the fix safe"),
        "{root}"
    );
    assert!(root.contains("run-as-root-allowed"), "{root}");
}

/// With `--scan-images`, Trivy's report carries the configuration (`Metadata.ImageConfig`):
/// it is used rather than fetched again. A `USER` given by name still needs the image's
/// `/etc/passwd`, which no report carries: only the layers are read for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trivy_report_gives_the_configuration_and_the_layers_give_the_names() {
    let Some(registry) = start_registry().await else {
        return;
    };
    let base = registry.base.clone();
    let domain = registry.domain.clone();
    let passwd =
        b"root:x:0:0:root:/root:/bin/sh\nnginx:x:101:101:nginx:/var/cache/nginx:/sbin/nologin\n";
    // The registry's config blob differs from the report on purpose: what the output shows
    // tells which one was read.
    tag(
        &base,
        "web",
        "trivy-config-nginx",
        r#"{"User":"nginx","Volumes":{"/from-the-registry":{}}}"#,
        &[layer(&[("etc/passwd", passwd)])],
    )
    .await;
    let scanner = crate::scan::stand_in();
    let work = tempfile::tempdir().unwrap();
    // Port 9 on loopback answers nothing: this image can only be known from its report.
    let text = format!(
        "{}---\n{}",
        manifest_for("127.0.0.1:9/team/api:trivy-config-numeric", None),
        manifest_for(&format!("{domain}/web:trivy-config-nginx"), None)
            .replace("name: web", "name: nginx")
    );
    std::fs::write(work.path().join("web.yaml"), text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kubeharden"))
        .args([
            "lint",
            "--format",
            "json",
            "--scan-images",
            "--inspect-images",
        ])
        .arg("--scanner-path")
        .arg(scanner.path().join("fake-scanner"))
        .arg("web.yaml")
        .current_dir(work.path())
        .env_remove("SCANNER")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let image = |reference: &str| {
        json["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| {
                c["image"]["reference"]
                    .as_str()
                    .unwrap()
                    .ends_with(reference)
            })
            .unwrap_or_else(|| panic!("no container with {reference}: {stdout}"))["image"]
            .clone()
    };
    let numeric = image("/team/api:trivy-config-numeric");
    assert_eq!(numeric["checked"], true, "{numeric}");
    assert_eq!(numeric["source"], "trivy");
    assert_eq!(numeric["user"], "1000:1000");
    assert_eq!(numeric["volumes"], serde_json::json!(["/var/cache/api"]));
    assert_eq!(numeric["exposed_ports"], serde_json::json!(["8080/tcp"]));
    assert_eq!(numeric["working_dir"], "/app");
    assert_eq!(
        numeric["digest"],
        "sha256:0e6c0d7e2f5b3a7b1d9f5e8c4a2b6d0f1e3c5a7b9d1f3e5c7a9b1d3f5e7c9a1b"
    );
    assert!(
        numeric["summary"]
            .as_str()
            .unwrap()
            .contains("the image runs as UID 1000"),
        "{numeric}"
    );
    let nginx = image("/web:trivy-config-nginx");
    assert_eq!(nginx["source"], "trivy", "{nginx}");
    assert_eq!(nginx["volumes"], serde_json::json!(["/var/cache/nginx"]));
    // The IDs come from the layers, the rest from the report.
    assert_eq!(nginx["ids"]["uid"], 101, "{nginx}");
    assert_eq!(nginx["ids"]["gid"], 101, "{nginx}");
    assert!(
        nginx["writable_paths"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("/var/cache/nginx")),
        "{nginx}"
    );
}
