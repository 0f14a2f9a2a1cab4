//! A test CA, the webhook served in process over real HTTPS, and a keep-alive client that
//! trusts only that CA, as the API server trusts only the `caBundle`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use kubeharden::admission::{Options, Server, review::Judge};
use kubeharden_core::rules::Registry;
use serde_json::{Value, json};
use tokio_rustls::rustls::{self, pki_types};

/// A CA and a server certificate for `localhost` and 127.0.0.1 that it signed, as files.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca_pem: String,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_pem = issue(dir.path(), "tls");
        Pki { dir, ca_pem }
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("tls.crt")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.path().join("tls.key")
    }
}

/// Write `<name>.crt` and `<name>.key` signed by a new CA; return the CA's PEM.
pub fn issue(dir: &Path, name: &str) -> String {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    ca.pem()
}

/// The webhook, serving until dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub pki: Pki,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub fn options(pki: &Pki) -> Options {
    Options {
        listen: "127.0.0.1:0".into(),
        tls_cert: pki.cert(),
        tls_key: pki.key(),
        reload_interval: Duration::from_millis(100),
        handshake_timeout: Duration::from_millis(500),
        shutdown_grace: Duration::from_secs(5),
    }
}

pub fn judge(config: Option<&str>) -> Judge {
    let file = tempfile::NamedTempFile::new().unwrap();
    if let Some(text) = config {
        std::fs::write(file.path(), text).unwrap();
    }
    Judge::load(config.map(|_| file.path()), Registry::builtin().unwrap()).unwrap()
}

impl TestServer {
    pub async fn start(config: Option<&str>) -> TestServer {
        let pki = Pki::new();
        Self::start_with(pki, judge(config)).await
    }

    pub async fn start_with(pki: Pki, judge: Judge) -> TestServer {
        Self::start_with_images(pki, judge, None).await
    }

    /// A server whose mutations read image configurations through `images`.
    pub async fn start_with_images(
        pki: Pki,
        judge: Judge,
        images: Option<Arc<kubeharden::admission::images::ImageInspector>>,
    ) -> TestServer {
        let server = Server::bind_with_images(options(&pki), judge, images)
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let done = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            pki,
            stop: Some(stop),
            done: Some(done),
        }
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.addr, &self.pki.ca_pem).await
    }

    /// Shut down gracefully and wait for the server to stop.
    pub async fn shutdown(&mut self) -> anyhow::Result<()> {
        self.stop();
        match self.done.take() {
            Some(done) => done.await?,
            None => Ok(()),
        }
    }

    /// Begin a graceful shutdown.
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn tls_client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    use pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(config)
}

/// One keep-alive HTTPS connection.
pub struct Client {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr, ca_pem: &str) -> Client {
        Self::try_connect(addr, ca_pem).await.unwrap()
    }

    pub async fn try_connect(addr: SocketAddr, ca_pem: &str) -> anyhow::Result<Client> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let connector = tokio_rustls::TlsConnector::from(tls_client_config(ca_pem));
        let name = pki_types::ServerName::try_from("localhost")?;
        let tls = connector.connect(name, tcp).await?;
        let (send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        Ok(Client { send })
    }

    pub async fn request(&mut self, method: &str, path: &str, body: Vec<u8>) -> (u16, Bytes) {
        self.send.ready().await.unwrap();
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let res = self.send.send_request(req).await.unwrap();
        let status = res.status().as_u16();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    }

    pub async fn get(&mut self, path: &str) -> (u16, String) {
        let (status, body) = self.request("GET", path, Vec::new()).await;
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// POST an AdmissionReview; the `response` of the answer.
    pub async fn review(&mut self, path: &str, review: &Value) -> Value {
        let (status, body) = self
            .request("POST", path, serde_json::to_vec(review).unwrap())
            .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let answer: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(answer["kind"], "AdmissionReview");
        assert_eq!(
            answer["response"]["uid"], review["request"]["uid"],
            "the uid must be the request's"
        );
        answer["response"].clone()
    }
}

/// An AdmissionReview request as the API server builds it (admission.k8s.io/v1 reference).
pub fn review(operation: &str, object: &Value, old: Option<&Value>) -> Value {
    let kind = object["kind"].as_str().unwrap_or("Pod");
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let resource = format!("{}s", kind.to_lowercase());
    let gvk = json!({"group": group, "version": version, "kind": kind});
    let gvr = json!({"group": group, "version": version, "resource": resource});
    let uid = format!("{:016x}", rand_u64());
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "name": object["metadata"]["name"],
            "namespace": object["metadata"]["namespace"].as_str().unwrap_or("default"),
            "operation": operation,
            "userInfo": {"username": "alice", "uid": "1", "groups": ["system:authenticated"]},
            "object": object,
            "oldObject": old.cloned().unwrap_or(Value::Null),
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": format!("{}Options", if operation == "CREATE" { "Create" } else { "Update" })}
        }
    })
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    h.finish()
}

/// A pod with nothing hardened.
pub fn bare_pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "team-a"},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}
    })
}

/// A pod that passes every nsa rule.
pub fn hardened_pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "team-a"},
        "spec": {
            "automountServiceAccountToken": false,
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "web",
                "image": "ghcr.io/acme/web:1.2.3@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}},
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]}
                }
            }]
        }
    })
}
