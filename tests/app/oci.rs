//! `OciClient` against real registries on loopback: Debian's `docker-registry`
//! (distribution 2.8) with an image pushed through its HTTP API, and small axum servers for the
//! token flow, Basic auth and a registry that sends no `Docker-Content-Digest`.
//!
//! The `docker-registry` tests skip when the binary is missing, unless
//! `KUBEHARDEN_REQUIRE_REGISTRY` is set (CI: `apt-get install -y docker-registry`).

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use kubeharden::oci::{MANIFEST_ACCEPT, OciClient, OciError};
use kubeharden_core::facts::ConfigSource;

use crate::registry::{
    OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, digest, push_blob, put_manifest, start_registry,
};

/// `gzip -n` of an empty tar (1024 zero bytes).
const EMPTY_TAR_GZ: [u8; 29] = [
    0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0x63, 0x60, 0x18, 0x05, 0xa3, 0x60,
    0x14, 0x8c, 0x54, 0x00, 0x00, 0x2e, 0xaf, 0xb5, 0xef, 0x00, 0x04, 0x00, 0x00,
];

fn client(timeout: Duration) -> OciClient {
    OciClient::new(HashMap::new(), timeout).unwrap()
}

/// An image manifest for one platform: its config blob, the shared layer, the manifest bytes.
async fn push_image(base: &str, name: &str, arch: &str) -> Vec<u8> {
    let diff_id = digest(&[0u8; 1024]);
    let config = format!(
        r#"{{"architecture":"{arch}","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}},"config":{{}}}}"#
    );
    let config_digest = push_blob(base, name, config.as_bytes()).await;
    let layer_digest = push_blob(base, name, &EMPTY_TAR_GZ).await;
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"{OCI_LAYER}","digest":"{layer_digest}","size":{}}}]}}"#,
        config.len(),
        EMPTY_TAR_GZ.len()
    )
    .into_bytes()
}

struct Pushed {
    manifest: String,
    index: String,
}

/// `team/app:1.0` (an OCI manifest, amd64) and `team/app:multi` (an OCI index over amd64 and an
/// arm64 manifest pushed by digest).
async fn push_test_images(base: &str) -> Pushed {
    let name = "team/app";
    let amd64 = push_image(base, name, "amd64").await;
    let manifest = put_manifest(base, name, "1.0", OCI_MANIFEST, &amd64).await;
    assert_eq!(
        manifest,
        digest(&amd64),
        "the registry hashes the exact bytes"
    );

    let arm64 = push_image(base, name, "arm64").await;
    let arm64_digest = digest(&arm64);
    let stored = put_manifest(base, name, &arm64_digest, OCI_MANIFEST, &arm64).await;
    assert_eq!(stored, arm64_digest);

    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{manifest}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}},{{"mediaType":"{OCI_MANIFEST}","digest":"{arm64_digest}","size":{},"platform":{{"architecture":"arm64","os":"linux"}}}}]}}"#,
        amd64.len(),
        arm64.len()
    )
    .into_bytes();
    let index_digest = put_manifest(base, name, "multi", OCI_INDEX, &index).await;
    assert_eq!(index_digest, digest(&index));
    Pushed {
        manifest,
        index: index_digest,
    }
}

#[tokio::test]
async fn pushed_manifest_and_index_tags_resolve_to_their_exact_digests() {
    let Some(registry) = start_registry().await else {
        return;
    };
    let pushed = push_test_images(&registry.base).await;
    assert_ne!(pushed.manifest, pushed.index);

    let client = client(Duration::from_secs(10));
    let got = client
        .resolve_digest(&registry.domain, "team/app", "1.0")
        .await
        .unwrap();
    assert_eq!(got, pushed.manifest);
    let got = client
        .resolve_digest(&registry.domain, "team/app", "multi")
        .await
        .unwrap();
    assert_eq!(got, pushed.index, "a multi-arch tag resolves to the index");

    // `localhost` is loopback too: plain http.
    let got = client
        .resolve_digest(&format!("localhost:{}", registry.port), "team/app", "1.0")
        .await
        .unwrap();
    assert_eq!(got, pushed.manifest);
}

#[tokio::test]
async fn missing_tag_and_missing_repository_are_not_found() {
    let Some(registry) = start_registry().await else {
        return;
    };
    push_test_images(&registry.base).await;
    let client = client(Duration::from_secs(10));

    let err = client
        .resolve_digest(&registry.domain, "team/app", "2.0")
        .await
        .unwrap_err();
    assert!(matches!(err, OciError::NotFound { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&format!("{}/team/app:2.0", registry.domain)),
        "{message}"
    );

    let err = client
        .resolve_digest(&registry.domain, "nobody/absent", "1.0")
        .await
        .unwrap_err();
    assert!(matches!(err, OciError::NotFound { .. }), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// Registries that are not there

#[tokio::test]
async fn closed_port_is_unreachable_quickly() {
    let port = crate::support::free_port(); // bound and released: nothing listens there now
    let client = client(Duration::from_secs(10));
    let started = Instant::now();
    let err = client
        .resolve_digest(&format!("127.0.0.1:{port}"), "team/app", "1.0")
        .await
        .unwrap_err();
    assert!(matches!(err, OciError::Unreachable { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

#[tokio::test]
async fn silent_registry_times_out_as_unreachable() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let client = client(Duration::from_millis(300));
    let started = Instant::now();
    let err = client
        .resolve_digest(&format!("127.0.0.1:{port}"), "team/app", "1.0")
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    server.abort();
    assert!(matches!(err, OciError::Unreachable { .. }), "{err:?}");
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Token server and fake registries (axum)

const TOKEN: &str = "tok-team-app-pull";
/// Served for `team/app:1.0` (with a digest header) and `team/app:nodigest` (without).
const FAKE_MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    /// 401 + `WWW-Authenticate: Bearer ...` unless `Authorization: Bearer TOKEN`.
    Bearer,
    /// 401 + `WWW-Authenticate: Basic ...` unless the right Basic credentials.
    Basic,
}

struct Fake {
    mode: Mode,
    /// `Authorization` the token server (Bearer mode) or the registry (Basic mode) wants; none:
    /// anonymous tokens.
    basic: Option<String>,
    expires_in: u64,
    realm: Mutex<String>,
    token_requests: AtomicUsize,
    /// What the token server was asked that it did not expect.
    token_complaints: Mutex<Vec<String>>,
    /// `(method, Authorization)` of every manifest request.
    manifest_requests: Mutex<Vec<(String, Option<String>)>>,
}

struct FakeServers {
    state: Arc<Fake>,
    /// The registry, `127.0.0.1:PORT`.
    domain: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for FakeServers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl FakeServers {
    fn token_requests(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }
    fn manifest_requests(&self) -> Vec<(String, Option<String>)> {
        self.state.manifest_requests.lock().unwrap().clone()
    }
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

async fn serve(router: Router) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    (port, task)
}

/// A token server and a registry on two loopback ports (so credentials are looked up by the
/// registry's host, not the realm's).
async fn start_fakes(mode: Mode, basic: Option<String>, expires_in: u64) -> FakeServers {
    let state = Arc::new(Fake {
        mode,
        basic,
        expires_in,
        realm: Mutex::new(String::new()),
        token_requests: AtomicUsize::new(0),
        token_complaints: Mutex::new(Vec::new()),
        manifest_requests: Mutex::new(Vec::new()),
    });
    let (token_port, token_task) = serve(
        Router::new()
            .route("/token", get(token))
            .with_state(state.clone()),
    )
    .await;
    *state.realm.lock().unwrap() = format!("http://127.0.0.1:{token_port}/token");
    let (registry_port, registry_task) = serve(
        Router::new()
            .route("/v2/team/app/manifests/{tag}", get(manifest))
            .route("/v2/team/app/blobs/{digest}", get(blob))
            .with_state(state.clone()),
    )
    .await;
    FakeServers {
        state,
        domain: format!("127.0.0.1:{registry_port}"),
        tasks: vec![token_task, registry_task],
    }
}

async fn token(
    State(fake): State<Arc<Fake>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    fake.token_requests.fetch_add(1, Ordering::SeqCst);
    let service = query.get("service").map(String::as_str);
    let scope = query.get("scope").map(String::as_str);
    if service != Some("test") || scope != Some("repository:team/app:pull") {
        fake.token_complaints
            .lock()
            .unwrap()
            .push(format!("service={service:?} scope={scope:?}"));
        return StatusCode::BAD_REQUEST.into_response();
    }
    if let Some(wanted) = &fake.basic {
        let got = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if got != Some(wanted.as_str()) {
            return (StatusCode::UNAUTHORIZED, r#"{"details":"bad credentials"}"#).into_response();
        }
    }
    axum::Json(serde_json::json!({
        "token": TOKEN,
        "access_token": TOKEN,
        "expires_in": fake.expires_in,
    }))
    .into_response()
}

/// The registry's 401 with its challenge, unless `authorization` is what the mode wants.
fn refused(fake: &Fake, authorization: Option<&str>) -> Option<Response> {
    let (wanted, challenge) = match fake.mode {
        Mode::Bearer => (
            format!("Bearer {TOKEN}"),
            format!(
                r#"Bearer realm="{}",service="test",scope="repository:team/app:pull""#,
                fake.realm.lock().unwrap()
            ),
        ),
        Mode::Basic => (
            fake.basic.clone().unwrap(),
            r#"Basic realm="fake registry""#.to_string(),
        ),
    };
    if authorization == Some(wanted.as_str()) {
        return None;
    }
    Some(
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, challenge)],
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        )
            .into_response(),
    )
}

/// `{}`, the config blob [`FAKE_MANIFEST`] names, behind the same challenge as the manifests.
async fn blob(
    State(fake): State<Arc<Fake>>,
    Path(wanted): Path<String>,
    headers: HeaderMap,
) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Some(refused) = refused(&fake, authorization) {
        return refused;
    }
    if wanted != digest(b"{}") {
        return StatusCode::NOT_FOUND.into_response();
    }
    "{}".into_response()
}

async fn manifest(
    State(fake): State<Arc<Fake>>,
    Path(tag): Path<String>,
    method: axum::http::Method,
    headers: HeaderMap,
) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap().to_string());
    fake.manifest_requests
        .lock()
        .unwrap()
        .push((method.to_string(), authorization.clone()));
    if let Some(refused) = refused(&fake, authorization.as_deref()) {
        return refused;
    }
    // Like distribution: an OCI manifest only for a client that accepts it.
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let accepts_all = [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
    ]
    .iter()
    .all(|t| accept.contains(t));
    if !accepts_all || (tag != "1.0" && tag != "nodigest") {
        return (
            StatusCode::NOT_FOUND,
            r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
        )
            .into_response();
    }
    let mut response = (
        [(header::CONTENT_TYPE, OCI_MANIFEST)],
        FAKE_MANIFEST.to_string(),
    )
        .into_response();
    if tag == "1.0" {
        response.headers_mut().insert(
            "docker-content-digest",
            digest(FAKE_MANIFEST.as_bytes()).parse().unwrap(),
        );
    }
    response
}

#[tokio::test]
async fn bearer_token_flow_requests_the_token_once_for_two_resolutions() {
    let fakes = start_fakes(Mode::Bearer, None, 300).await;
    let client = client(Duration::from_secs(10));
    let want = digest(FAKE_MANIFEST.as_bytes());

    for _ in 0..2 {
        let got = client
            .resolve_digest(&fakes.domain, "team/app", "1.0")
            .await;
        assert_eq!(got.unwrap(), want);
    }
    assert!(fakes.state.token_complaints.lock().unwrap().is_empty());
    assert_eq!(fakes.token_requests(), 1, "the token is cached");
    let bearer = Some(format!("Bearer {TOKEN}"));
    assert_eq!(
        fakes.manifest_requests(),
        vec![
            ("HEAD".to_string(), None),
            ("HEAD".to_string(), bearer.clone()),
            ("HEAD".to_string(), bearer),
        ]
    );

    // A clone shares the cache.
    let clone = client.clone();
    clone
        .resolve_digest(&fakes.domain, "team/app", "1.0")
        .await
        .unwrap();
    assert_eq!(fakes.token_requests(), 1);

    // Behind the token, a missing tag is still NotFound.
    let err = client
        .resolve_digest(&fakes.domain, "team/app", "2.0")
        .await
        .unwrap_err();
    assert!(matches!(err, OciError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn short_lived_tokens_are_not_reused() {
    // expires_in 1 s: no time is left after the safety margin, so every resolution asks again.
    let fakes = start_fakes(Mode::Bearer, None, 1).await;
    let client = client(Duration::from_secs(10));
    for _ in 0..2 {
        client
            .resolve_digest(&fakes.domain, "team/app", "1.0")
            .await
            .unwrap();
    }
    assert_eq!(fakes.token_requests(), 2);
}

#[tokio::test]
async fn bearer_token_flow_sends_docker_config_credentials_to_the_token_server() {
    let password = "pa:ss word/with-colon";
    let fakes = start_fakes(Mode::Bearer, Some(basic("alice", password)), 300).await;
    let want = digest(FAKE_MANIFEST.as_bytes());

    // Credentials for the registry's host, from a Docker config.json.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        serde_json::json!({"auths": {
            (format!("http://{}", fakes.domain)): {"auth": STANDARD.encode(format!("alice:{password}"))}
        }})
        .to_string(),
    )
    .unwrap();
    let auth = OciClient::auth_from_docker_config(&config).unwrap();
    let with_credentials = OciClient::new(auth, Duration::from_secs(10)).unwrap();
    let got = with_credentials
        .resolve_digest(&fakes.domain, "team/app", "1.0")
        .await
        .unwrap();
    assert_eq!(got, want);
    // No Docker-Content-Digest: the manifest is fetched and its exact bytes hashed.
    let got = with_credentials
        .resolve_digest(&fakes.domain, "team/app", "nodigest")
        .await
        .unwrap();
    assert_eq!(got, want);
    assert_eq!(fakes.token_requests(), 1);
    assert!(fakes.state.token_complaints.lock().unwrap().is_empty());
    assert_eq!(
        fakes.manifest_requests().last().map(|r| r.0.as_str()),
        Some("GET")
    );

    // Anonymous, and wrong credentials: Unauthorized, and the message has no secret.
    let anonymous = client(Duration::from_secs(10));
    let err = anonymous
        .resolve_digest(&fakes.domain, "team/app", "1.0")
        .await
        .unwrap_err();
    assert!(matches!(err, OciError::Unauthorized { .. }), "{err:?}");
    let wrong = OciClient::new(
        HashMap::from([(
            fakes.domain.clone(),
            ("alice".to_string(), "not-the-password".to_string()),
        )]),
        Duration::from_secs(10),
    )
    .unwrap();
    let err = wrong
        .resolve_digest(&fakes.domain, "team/app", "1.0")
        .await
        .unwrap_err();
    assert!(matches!(err, OciError::Unauthorized { .. }), "{err:?}");
    let shown = format!("{err} {err:?}");
    assert!(shown.contains(&fakes.domain), "{shown}");
    assert!(shown.contains("team/app:1.0"), "{shown}");
    assert!(!shown.contains("not-the-password"), "{shown}");
    assert!(!shown.contains(TOKEN), "{shown}");
}

#[tokio::test]
async fn basic_challenge_is_answered_with_configured_credentials_only() {
    let fakes = start_fakes(Mode::Basic, Some(basic("bob", "hunter2")), 300).await;
    let anonymous = client(Duration::from_secs(10));
    let err = anonymous
        .resolve_digest(&fakes.domain, "team/app", "1.0")
        .await
        .unwrap_err();
    assert!(matches!(err, OciError::Unauthorized { .. }), "{err:?}");

    let auth = HashMap::from([(
        fakes.domain.clone(),
        ("bob".to_string(), "hunter2".to_string()),
    )]);
    let client = OciClient::new(auth, Duration::from_secs(10)).unwrap();
    let got = client
        .resolve_digest(&fakes.domain, "team/app", "1.0")
        .await
        .unwrap();
    assert_eq!(got, digest(FAKE_MANIFEST.as_bytes()));
    assert_eq!(fakes.token_requests(), 0);
}

/// An image's configuration is read with the credentials digest pinning uses: the registry's
/// challenge answered (a token from the token server, or Basic), the config blob fetched with
/// the same authorization; anonymous, refused.
#[tokio::test]
async fn image_config_answers_the_same_challenges_as_digest_pinning() {
    for mode in [Mode::Bearer, Mode::Basic] {
        let fakes = start_fakes(mode, Some(basic("bob", "hunter2")), 300).await;
        let auth = HashMap::from([(
            fakes.domain.clone(),
            ("bob".to_string(), "hunter2".to_string()),
        )]);
        let anonymous = client(Duration::from_secs(10));
        let err = anonymous
            .image_config(&fakes.domain, "team/app", "1.0", "linux/amd64")
            .await
            .unwrap_err();
        assert!(
            matches!(err, OciError::Unauthorized { .. }),
            "{mode:?}: {err:?}"
        );

        let client = OciClient::new(auth, Duration::from_secs(10)).unwrap();
        let got = client
            .image_config(&fakes.domain, "team/app", "1.0", "linux/amd64")
            .await
            .unwrap();
        assert_eq!(
            got.digest,
            Some(digest(FAKE_MANIFEST.as_bytes())),
            "{mode:?}"
        );
        assert_eq!(got.source, Some(ConfigSource::Registry));
        assert_eq!(got.user, None, "`{{}}` sets no user");
        // Bearer: one token refused to the anonymous client, one given, then reused for the
        // blob. Basic: no token server at all.
        let expected_tokens = if mode == Mode::Bearer { 2 } else { 0 };
        assert_eq!(fakes.token_requests(), expected_tokens, "{mode:?}");
        assert!(fakes.state.token_complaints.lock().unwrap().is_empty());
    }
}

#[test]
fn accept_header_names_all_four_manifest_types() {
    for t in [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
    ] {
        assert!(MANIFEST_ACCEPT.contains(t), "{t}");
    }
}

// ---------------------------------------------------------------------------------------------
// The GitHub App: a pull request's new image gets its digest suggested on the same line.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_review_suggests_the_registrys_digest_on_the_image_line() {
    let Some(registry) = start_registry().await else {
        return;
    };
    let pushed = push_test_images(&registry.base).await;
    let domain = registry.domain.clone();
    let mut guarded = client(Duration::from_secs(5));
    guarded.guard_network(vec![domain.clone()]);
    let h = crate::support::Harness::start_with_images(
        None,
        Some(Arc::new(guarded)),
        vec![domain.clone()],
    )
    .await;
    let config = "images:\n  pin-digests: true\n";
    let manifest = |tag: &str, other: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: app\nspec:\n  automountServiceAccountToken: false\n  containers:\n    - name: app\n      image: \"{domain}/team/app:{tag}\"  # bumped by hand\n    - name: other\n      image: {other}\n"
        )
    };
    // The other image is on loopback too, but not a host the server may contact.
    let other = format!("127.0.0.2:{}/team/app:1.0", registry.port);
    let base = manifest("0.9", &other);
    let head = manifest("1.0", &other);
    h.github.commit(
        crate::support::REPO,
        "base1",
        &[(".github/kubeharden.yaml", config), ("pod.yaml", &base)],
    );
    h.github.commit(
        crate::support::REPO,
        "head1",
        &[(".github/kubeharden.yaml", config), ("pod.yaml", &head)],
    );
    h.github.open_pr(crate::support::REPO, 3, "base1", "head1");
    h.deliver(
        "pull_request",
        &crate::support::pull_request_event("opened", 3, "base1", "head1"),
    )
    .await;
    let _ = h.github.take_check_runs();
    let reviews = h.github.take_reviews();
    assert_eq!(reviews.len(), 1);
    let pin = reviews[0]
        .comments
        .iter()
        .find(|c| c.body.contains("image-not-pinned"))
        .expect("a pinning suggestion");
    // The suggestion starts at the image line (the container's hardening, which goes right
    // after it, is part of the same suggestion).
    assert_eq!(pin.start_line.unwrap_or(pin.line), 9, "on the image line");
    let want = format!(
        "```suggestion\n      image: \"{domain}/team/app:1.0@{}\"  # bumped by hand\n",
        pushed.manifest
    );
    assert!(pin.body.contains(&want), "{}", pin.body);
    // Only one suggestion: the private host that is not listed was never asked.
    assert_eq!(
        reviews[0]
            .comments
            .iter()
            .filter(|c| c.body.contains("image-not-pinned"))
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fix_pin_digests_on_the_command_line() {
    let Some(registry) = start_registry().await else {
        return;
    };
    let pushed = push_test_images(&registry.base).await;
    let domain = registry.domain.clone();
    let work = tempfile::tempdir().unwrap();
    let text = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: app\nspec:\n  containers:\n    - name: app\n      image: {domain}/team/app:1.0 # pinned below\n    - name: gone\n      image: {domain}/team/app:missing\n"
    );
    std::fs::write(work.path().join("pod.yaml"), &text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kubeharden"))
        .args([
            "fix",
            "--pin-digests",
            "--write",
            "--select",
            "image-not-pinned",
            "pod.yaml",
        ])
        .current_dir(work.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let fixed = std::fs::read_to_string(work.path().join("pod.yaml")).unwrap();
    assert_eq!(
        fixed,
        text.replace(
            "team/app:1.0 #",
            &format!("team/app:1.0@{} #", pushed.manifest)
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{domain}/team/app:missing not pinned")),
        "{stderr}"
    );
    // The unpinnable image is still reported.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
}
