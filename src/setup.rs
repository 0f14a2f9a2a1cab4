//! First start without credentials: the GitHub App manifest flow, as Probot does it. `/setup`
//! serves a page whose buttons POST the app manifest (with this server's public URL in it) to
//! GitHub's "new app" page; GitHub sends the browser back to `/setup/callback?code=…&state=…`,
//! the code is exchanged for the app's id, private key and webhook secret, those are written to
//! a credentials file only the server's user can read, and the app starts serving webhooks
//! without a restart. From then on `/setup` is gone.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

use crate::github::Secret;

/// The manifest every installation starts from; the URLs are filled in per server.
pub const MANIFEST: &str = include_str!("../app-manifest/kubeharden.json");

/// The file, in the data directory, that holds what the manifest flow returned.
pub const CREDENTIALS_FILE: &str = "kubeharden-credentials.json";

/// What the app needs to run, as the manifest conversion returns it.
#[derive(Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub app_id: u64,
    #[serde(default)]
    pub slug: String,
    #[serde(default)]
    pub html_url: String,
    pub private_key: String,
    pub webhook_secret: String,
    #[serde(default)]
    pub client_id: String,
    #[serde(default)]
    pub client_secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("app_id", &self.app_id)
            .field("slug", &self.slug)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    pub fn private_key(&self) -> Secret {
        Secret::new(self.private_key.clone())
    }

    pub fn webhook_secret(&self) -> Secret {
        Secret::new(self.webhook_secret.clone())
    }

    /// The credentials file, if there is one.
    pub fn load(path: &Path) -> Result<Option<Credentials>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("{} is not a KubeHarden credentials file", path.display()))
    }

    /// Write the file readable by its owner only: created with mode 0600 (never wider, not
    /// even for a moment), then renamed into place.
    pub fn save(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let tmp = path.with_extension("json.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        file.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }
}

/// Starts the app once credentials exist; returns the router that then serves every request.
pub type Starter = Arc<
    dyn Fn(
            Credentials,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Router>> + Send>>
        + Send
        + Sync,
>;

pub struct Setup {
    /// Where this server is reached from GitHub and from the browser.
    pub public_url: String,
    /// GitHub's web root (`https://github.com`, or the Enterprise Server's).
    pub github_url: String,
    pub api_url: String,
    pub credentials_path: PathBuf,
    /// Anti-forgery token: GitHub sends it back with the code; a callback without it is refused.
    state: String,
    /// Who may see the setup page (and so the state): the operator, who has the link with this
    /// token from the server's log or set it. The server must be reachable by GitHub, so the
    /// page is public; without this anyone could register an app of theirs first.
    token: String,
    start: Starter,
    /// The app, once configured.
    live: OnceLock<Router>,
    /// One exchange at a time (a code is good once).
    busy: tokio::sync::Mutex<()>,
}

impl Setup {
    pub fn new(
        public_url: &str,
        github_url: &str,
        api_url: &str,
        credentials_path: PathBuf,
        token: Option<String>,
        start: Starter,
    ) -> Result<Arc<Setup>> {
        let public_url = public_url.trim_end_matches('/').to_string();
        anyhow::ensure!(
            public_url.starts_with("https://") || public_url.starts_with("http://"),
            "the public URL `{public_url}` must start with https:// (or http:// for a local test)"
        );
        let mut state = [0u8; 24];
        getrandom::getrandom(&mut state).context("no randomness for the setup state")?;
        let token = match token {
            Some(t) => {
                anyhow::ensure!(t.len() >= 16, "SETUP_TOKEN must be at least 16 characters");
                t
            }
            None => {
                let mut t = [0u8; 16];
                getrandom::getrandom(&mut t).context("no randomness for the setup token")?;
                hex::encode(t)
            }
        };
        Ok(Arc::new(Setup {
            public_url,
            github_url: github_url.trim_end_matches('/').to_string(),
            api_url: api_url.trim_end_matches('/').to_string(),
            credentials_path,
            state: hex::encode(state),
            token,
            start,
            live: OnceLock::new(),
            busy: tokio::sync::Mutex::new(()),
        }))
    }

    /// The manifest with this server's URLs.
    pub fn manifest(&self) -> serde_json::Value {
        let mut m: serde_json::Value =
            serde_json::from_str(MANIFEST).expect("the bundled manifest is JSON");
        m["hook_attributes"]["url"] = format!("{}/api/github/webhooks", self.public_url).into();
        m["redirect_url"] = format!("{}/setup/callback", self.public_url).into();
        m
    }

    pub fn configured(&self) -> bool {
        self.live.get().is_some()
    }

    /// The link the operator opens: the setup page with its token.
    pub fn link(&self) -> String {
        format!("{}/setup?token={}", self.public_url, self.token)
    }
}

/// GitHub's web root for an API root: `https://api.github.com` → `https://github.com`,
/// `https://HOST/api/v3` → `https://HOST`.
pub fn web_url(api_url: &str) -> String {
    let api = api_url.trim_end_matches('/');
    if api == "https://api.github.com" {
        return "https://github.com".into();
    }
    api.strip_suffix("/api/v3").unwrap_or(api).to_string()
}

/// The router of a server that starts unconfigured: the setup pages, and everything else passed
/// to the app once it runs.
pub fn router(setup: Arc<Setup>) -> Router {
    Router::new()
        .route("/setup", get(page))
        .route("/setup/callback", get(callback))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(dispatch)
        .with_state(setup)
}

async fn dispatch(State(setup): State<Arc<Setup>>, request: Request) -> Response {
    if let Some(app) = setup.live.get() {
        return match app.clone().oneshot(request).await {
            Ok(r) => r,
            Err(e) => match e {},
        };
    }
    match request.uri().path() {
        "/" => {
            return (
                StatusCode::OK,
                "KubeHarden is not set up yet: open the /setup?token=… link the server printed in its log",
            )
                .into_response();
        }
        // Ready to be set up: a readiness probe must let the setup page be reached.
        "/readyz" => return (StatusCode::OK, "waiting for setup").into_response(),
        _ => {}
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "KubeHarden is not set up yet: open the /setup?token=… link the server printed in its log",
    )
        .into_response()
}

/// Only GitHub may be the target of the page's forms, and nothing may frame it.
fn secure(mut response: Response, github_url: &str) -> Response {
    let csp = format!(
        "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; form-action {github_url}; base-uri 'none'; frame-ancestors 'none'"
    );
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[derive(Deserialize)]
struct PageQuery {
    token: Option<String>,
}

/// Constant-time comparison of two secrets.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

async fn page(State(setup): State<Arc<Setup>>, Query(q): Query<PageQuery>) -> Response {
    if setup.configured() {
        return StatusCode::NOT_FOUND.into_response();
    }
    if !same(q.token.as_deref().unwrap_or(""), &setup.token) {
        return (
            StatusCode::FORBIDDEN,
            "open the setup link the server printed in its log (…/setup?token=…), or the one with the SETUP_TOKEN it was given",
        )
            .into_response();
    }
    let manifest = escape(&setup.manifest().to_string());
    let state = &setup.state;
    let github = escape(&setup.github_url);
    let public = escape(&setup.public_url);
    let html = format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Set up KubeHarden</title>
<style>
body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 40rem; margin: 3rem auto; padding: 0 1rem; }}
form {{ margin: 1.5rem 0; }}
button {{ font: inherit; padding: .5rem 1rem; cursor: pointer; }}
code {{ background: #eee; padding: 0 .2rem; }}
</style>
</head>
<body>
<h1>Set up KubeHarden</h1>
<p>KubeHarden will register a GitHub App that sends its webhooks to <code>{public}/api/github/webhooks</code>.
GitHub shows you the app before creating it; you can change its name there.</p>
<form id="personal" action="{github}/settings/apps/new?state={state}" method="post">
<input type="hidden" name="manifest" value="{manifest}">
<button type="submit" id="create-personal">Create the app on my account</button>
</form>
<form id="organization" action="{github}/settings/apps/new?state={state}" method="post">
<input type="hidden" name="manifest" value="{manifest}">
<label>Organisation <input id="org" name="org" required pattern="[A-Za-z0-9][A-Za-z0-9-]*" autocomplete="off"></label>
<button type="submit" id="create-org">Create the app on this organisation</button>
</form>
<script>
document.getElementById("organization").addEventListener("submit", function (e) {{
  var org = document.getElementById("org").value.trim();
  this.action = "{github}/organizations/" + encodeURIComponent(org) + "/settings/apps/new?state={state}";
}});
</script>
</body>
</html>
"#
    );
    secure(Html(html).into_response(), &setup.github_url)
}

#[derive(Deserialize)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
}

async fn callback(State(setup): State<Arc<Setup>>, Query(q): Query<Callback>) -> Response {
    if setup.configured() {
        return StatusCode::NOT_FOUND.into_response();
    }
    // Only someone who saw the page (and so had the token) knows the state.
    if !same(q.state.as_deref().unwrap_or(""), &setup.state) {
        return (
            StatusCode::FORBIDDEN,
            "this callback does not come from the setup this server started",
        )
            .into_response();
    }
    let Some(code) = q.code.filter(|c| {
        !c.is_empty()
            && c.len() <= 100
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    }) else {
        return (StatusCode::BAD_REQUEST, "no code from GitHub").into_response();
    };
    let _busy = setup.busy.lock().await;
    if setup.configured() {
        return StatusCode::NOT_FOUND.into_response();
    }
    match configure(&setup, &code).await {
        Ok(credentials) => {
            let install = if credentials.html_url.is_empty() {
                String::new()
            } else {
                format!(
                    r#"<p><a href="{}/installations/new">Install it on your repositories</a>.</p>"#,
                    escape(&credentials.html_url)
                )
            };
            let html = format!(
                "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>KubeHarden is set up</title></head><body><h1>KubeHarden is set up</h1><p>The app {} (id {}) is registered, and this server now serves its webhooks. Its credentials are in <code>{}</code>, readable by this server's user only.</p>{install}</body></html>",
                escape(&credentials.slug),
                credentials.app_id,
                escape(&setup.credentials_path.display().to_string())
            );
            secure(Html(html).into_response(), &setup.github_url)
        }
        Err(e) => {
            tracing::error!("setup failed: {e:#}");
            (
                StatusCode::BAD_GATEWAY,
                format!("the setup failed: {e:#}. Open /setup to start again."),
            )
                .into_response()
        }
    }
}

async fn configure(setup: &Setup, code: &str) -> Result<Credentials> {
    let converted = crate::github::convert_manifest(&setup.api_url, code)
        .await
        .context("GitHub did not exchange the code")?;
    let credentials = Credentials {
        app_id: converted.id,
        slug: converted.slug,
        html_url: converted.html_url,
        private_key: converted.pem.expose().to_string(),
        webhook_secret: converted.webhook_secret.expose().to_string(),
        client_id: converted.client_id,
        client_secret: converted.client_secret.expose().to_string(),
    };
    credentials.save(&setup.credentials_path)?;
    tracing::info!(
        app_id = credentials.app_id,
        path = %setup.credentials_path.display(),
        "GitHub App registered; credentials saved"
    );
    let app = (setup.start)(credentials.clone())
        .await
        .context("cannot start the app with the new credentials")?;
    let _ = setup.live.set(app);
    Ok(credentials)
}

/// Text for HTML, in content and in quoted attributes.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_roots_of_api_roots() {
        assert_eq!(web_url("https://api.github.com"), "https://github.com");
        assert_eq!(
            web_url("https://ghe.example.com/api/v3/"),
            "https://ghe.example.com"
        );
    }

    #[test]
    fn escaping_keeps_attributes_closed() {
        assert_eq!(
            escape(r#"{"a":"<b>&'"}"#),
            "{&quot;a&quot;:&quot;&lt;b&gt;&amp;&#39;&quot;}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn credentials_are_private_to_their_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(CREDENTIALS_FILE);
        let c = Credentials {
            app_id: 1,
            slug: "kh".into(),
            html_url: String::new(),
            private_key: "KEY".into(),
            webhook_secret: "S".into(),
            client_id: String::new(),
            client_secret: String::new(),
        };
        c.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(Credentials::load(&path).unwrap().unwrap().app_id, 1);
        assert!(!format!("{c:?}").contains("KEY"));
        assert!(
            Credentials::load(&dir.path().join("none"))
                .unwrap()
                .is_none()
        );
    }
}
