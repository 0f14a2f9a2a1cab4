//! The harness for the GitHub App tests: a fake GitHub and the real server, both on loopback.

#![allow(dead_code)]

pub mod fake_github;

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use kubeharden::edge::Limits;
use kubeharden::github::RetryPolicy;
use kubeharden::jobs::Store;
use kubeharden::server::ServerState;
use kubeharden::service::Launch;
use kubeharden::setup::Credentials;
use kubeharden_core::rules::Registry;

pub use fake_github::FakeGitHub;

pub const APP_ID: u64 = 4242;
pub const INSTALLATION: u64 = 77;
pub const SECRET: &str = "webhook secret for tests";
pub const REPO: &str = "acme/deploy";

/// A Deployment with nothing to find: every hardening field set.
pub const HARDENED: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  namespace: shop
spec:
  template:
    spec:
      automountServiceAccountToken: false
      securityContext:
        runAsNonRoot: true
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: api
          image: ghcr.io/acme/api:3.1.0
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: [ALL]
          resources:
            limits: {cpu: 500m, memory: 256Mi}
";

fn key(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/github")
            .join(name),
    )
    .unwrap()
}

/// One running copy of the app: server, workers and its own database connection.
pub struct Replica {
    pub url: String,
    pub state: Arc<ServerState>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _stop: tokio::sync::watch::Sender<bool>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

pub struct Harness {
    pub github: FakeGitHub,
    pub url: String,
    pub state: Arc<ServerState>,
    pub db_url: String,
    replicas: Vec<Replica>,
    _db: tempfile::TempDir,
}

impl Harness {
    /// The app on an SQLite file of its own.
    pub async fn start() -> Harness {
        Self::start_with_scanner(None).await
    }

    /// The app with an image scanner, on an SQLite file of its own.
    pub async fn start_with_scanner(scanner: Option<Arc<kubeharden::scan::Scanner>>) -> Harness {
        Self::start_with_images(scanner, None, Vec::new()).await
    }

    /// The app with an image scanner and registry access (and the private registry hosts it
    /// may contact).
    pub async fn start_with_images(
        scanner: Option<Arc<kubeharden::scan::Scanner>>,
        oci: Option<Arc<kubeharden::oci::OciClient>>,
        private_hosts: Vec<String>,
    ) -> Harness {
        Self::start_full(scanner, oci, private_hosts, Limits::default()).await
    }

    /// The app under other limits on its clients, on an SQLite file of its own.
    pub async fn start_with_limits(limits: Limits) -> Harness {
        Self::start_full(None, None, Vec::new(), limits).await
    }

    async fn start_full(
        scanner: Option<Arc<kubeharden::scan::Scanner>>,
        oci: Option<Arc<kubeharden::oci::OciClient>>,
        private_hosts: Vec<String>,
        limits: Limits,
    ) -> Harness {
        let db = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", db.path().join("kubeharden.db").display());
        let github = FakeGitHub::start(APP_ID, &key("test-app-key.pub.pem")).await;
        github.install(INSTALLATION, REPO);
        let first = replica_with(&github.url, &url, scanner, oci, private_hosts, limits).await;
        Harness {
            github,
            url: first.url.clone(),
            state: first.state.clone(),
            db_url: url,
            replicas: vec![first],
            _db: db,
        }
    }

    /// The app on a database URL (PostgreSQL for the replica tests).
    pub async fn start_on(db_url: String, db: tempfile::TempDir) -> Harness {
        let github = FakeGitHub::start(APP_ID, &key("test-app-key.pub.pem")).await;
        github.install(INSTALLATION, REPO);
        let first = replica(&github.url, &db_url).await;
        Harness {
            github,
            url: first.url.clone(),
            state: first.state.clone(),
            db_url,
            replicas: vec![first],
            _db: db,
        }
    }

    /// Start another copy of the app on the same database.
    pub async fn add_replica(&mut self) -> String {
        let r = replica(&self.github.url, &self.db_url).await;
        let url = r.url.clone();
        self.replicas.push(r);
        url
    }

    /// Wait until no replica has work queued or running.
    pub async fn wait_all_idle(&self) {
        for r in &self.replicas {
            r.state.wait_idle().await;
        }
    }

    /// Deliver a webhook signed with `secret`; returns the status code.
    pub async fn deliver_signed(&self, event: &str, body: &Value, secret: Option<&str>) -> u16 {
        let delivery = format!("{:032x}", rand_id());
        self.deliver_as(event, body, secret, &delivery).await
    }

    /// Deliver with a given `X-GitHub-Delivery` id (a redelivery reuses it).
    pub async fn deliver_as(
        &self,
        event: &str,
        body: &Value,
        secret: Option<&str>,
        delivery: &str,
    ) -> u16 {
        deliver_to(&self.url, event, body, secret, delivery).await
    }
}

/// Deliver a webhook to one replica; returns the status code.
pub async fn deliver_to(
    url: &str,
    event: &str,
    body: &Value,
    secret: Option<&str>,
    delivery: &str,
) -> u16 {
    let body = body.to_string();
    let mut headers = vec![
        ("X-GitHub-Event".to_string(), event.to_string()),
        ("X-GitHub-Delivery".to_string(), delivery.to_string()),
        ("Content-Type".to_string(), "application/json".to_string()),
    ];
    if let Some(secret) = secret {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        headers.push((
            "X-Hub-Signature-256".into(),
            format!("sha256={}", hex::encode(mac.finalize().into_bytes())),
        ));
    }
    let (status, _) = post(url, "/api/github/webhooks", &headers, body.as_bytes()).await;
    status
}

impl Harness {
    /// Deliver a signed webhook and wait until the work it started is done.
    pub async fn deliver(&self, event: &str, body: &Value) -> u16 {
        let status = self.deliver_signed(event, body, Some(SECRET)).await;
        tokio::time::timeout(Duration::from_secs(60), self.state.wait_idle())
            .await
            .expect("jobs did not finish");
        status
    }
}

async fn replica(github_url: &str, db_url: &str) -> Replica {
    replica_with(
        github_url,
        db_url,
        None,
        None,
        Vec::new(),
        Limits::default(),
    )
    .await
}

async fn replica_with(
    github_url: &str,
    db_url: &str,
    scanner: Option<Arc<kubeharden::scan::Scanner>>,
    oci_client: Option<Arc<kubeharden::oci::OciClient>>,
    oci_private_hosts: Vec<String>,
    limits: Limits,
) -> Replica {
    let store = Store::open(db_url).await.unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let workers = Arc::new(std::sync::Mutex::new(Vec::new()));
    // The production composition root, with short waits so the retry tests stay fast.
    let launch = Launch {
        registry: Arc::new(Registry::builtin().unwrap()),
        store: Arc::new(store),
        stopped,
        workers: workers.clone(),
        api_url: github_url.to_string(),
        retry: RetryPolicy {
            attempts: 4,
            base_delay: Duration::from_millis(10),
            max_wait: Duration::from_secs(5),
        },
        retry_base: Duration::from_millis(10),
        lease: kubeharden::jobs::LEASE,
        worker_count: 2,
        worker_prefix: "worker".into(),
        grace: Duration::from_secs(5),
        redeliver_interval: None,
        scanner,
        oci_client,
        oci_private_hosts,
        render: Arc::new(kubeharden::pipeline::RenderSettings {
            tools: kubeharden::renderers::Tools::find(None, None),
            options: kubeharden::renderers::Options {
                timeout: Duration::from_secs(20),
                concurrency: 2,
                ..kubeharden::renderers::Options::default()
            },
            disabled: false,
        }),
        limits: limits.clone(),
    };
    let credentials = Credentials {
        app_id: APP_ID,
        slug: String::new(),
        html_url: String::new(),
        private_key: String::from_utf8(key("test-app-key.pem")).unwrap(),
        webhook_secret: SECRET.to_string(),
        client_id: String::new(),
        client_secret: String::new(),
    };
    let (app, state) = launch.start(&credentials).unwrap();
    let mut tasks: Vec<_> = std::mem::take(&mut *workers.lock().unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tasks.push(tokio::spawn(async move {
        kubeharden::edge::serve(listener, app, limits, std::future::pending()).await;
    }));
    Replica {
        url,
        state,
        tasks,
        _stop: stop,
    }
}

/// A loopback port nobody listens on (at the moment of asking).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rand_id() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    nanos ^ u128::from(NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A bare HTTP/1.1 GET over loopback.
pub async fn get(base: &str, path: &str) -> (u16, String) {
    exchange(base, "GET", path, &[], b"").await
}

/// A bare HTTP/1.1 POST over loopback.
pub async fn post(
    base: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> (u16, String) {
    exchange(base, "POST", path, headers, body).await
}

/// One request on its own connection; the status and the body of the answer.
pub async fn exchange(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        request += &format!("{k}: {v}\r\n");
    }
    request += "\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    // Read to the end of the body: by Content-Length when the server sends one (chromedriver
    // says `Connection: close` but keeps the connection open), else to the end of the stream.
    let mut response = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let n = stream.read(&mut chunk).await.unwrap();
        if n == 0 {
            break;
        }
        response.extend_from_slice(&chunk[..n]);
        if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
            let length = head.lines().find_map(|l| {
                l.strip_prefix("content-length:")
                    .and_then(|v| v.trim().parse::<usize>().ok())
            });
            if length.is_some_and(|len| response.len() >= end + 4 + len) {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A `pull_request` delivery as GitHub sends it (the fields the app reads, and some it does not).
pub fn pull_request_event(action: &str, number: u64, base: &str, head: &str) -> Value {
    let repo = json!({
        "id": 1296269,
        "node_id": "MDEwOlJlcG9zaXRvcnkxMjk2MjY5",
        "name": "deploy",
        "full_name": REPO,
        "private": true,
        "owner": { "login": "acme", "id": 1, "type": "Organization" },
        "default_branch": "main"
    });
    json!({
        "action": action,
        "number": number,
        "pull_request": {
            "url": format!("https://api.github.com/repos/{REPO}/pulls/{number}"),
            "id": 1,
            "number": number,
            "state": "open",
            "draft": false,
            "title": "Deploy the storefront",
            "user": { "login": "octocat", "id": 2, "type": "User" },
            "head": { "label": "acme:feature", "ref": "feature", "sha": head, "repo": repo.clone() },
            "base": { "label": "acme:main", "ref": "main", "sha": base, "repo": repo.clone() },
            "mergeable": null
        },
        "repository": repo,
        "sender": { "login": "octocat", "id": 2, "type": "User" },
        "installation": { "id": INSTALLATION, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uMQ==" }
    })
}
