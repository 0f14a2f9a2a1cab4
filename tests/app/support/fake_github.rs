//! A stateful, in-memory GitHub served over HTTP on loopback, after rust-lang/bors's test
//! harness: repositories with commits, pull requests whose `files` and `patch` hunks are computed
//! from base and head content, check runs, reviews, review threads (REST and GraphQL). It
//! verifies the app's JWT against the public key, issues installation tokens and checks them,
//! and answers a review whose comment lies outside a hunk with GitHub's 422, so a wrong anchor
//! fails the test. Every review and check run the app posts must be taken by the test, or the
//! harness fails it when the fake is dropped.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct CheckRun {
    pub id: u64,
    pub head_sha: String,
    pub external_id: Option<String>,
    pub status: String,
    pub conclusion: Option<String>,
    pub title: Option<String>,
    pub summary: Option<String>,
    pub annotations: Vec<Value>,
    pub actions: Value,
}

#[derive(Debug, Clone)]
pub struct ReviewComment {
    pub id: u64,
    pub thread: String,
    pub path: String,
    pub line: u64,
    pub start_line: Option<u64>,
    pub body: String,
    pub resolved: bool,
}

#[derive(Debug, Clone)]
pub struct Review {
    pub pr: u64,
    pub commit_id: String,
    pub body: String,
    pub comments: Vec<ReviewComment>,
    /// Written by a person, not the app.
    pub human: bool,
}

#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub installation: u64,
    pub body: Value,
}

struct Token {
    repos: Vec<String>,
    permissions: Value,
}

struct Pr {
    base: String,
    head: String,
    /// The head branch (in this repository unless `fork`).
    head_ref: String,
    fork: bool,
    /// The fork was deleted: `head.repo` is `null`.
    fork_deleted: bool,
    author: String,
    closed: bool,
}

#[derive(Default)]
struct Repo {
    commits: HashMap<String, BTreeMap<String, String>>,
    prs: HashMap<u64, Pr>,
    /// Branch heads.
    refs: HashMap<String, String>,
    /// File modes other than 100644 (120000 for a symlink, 100755 for an executable).
    modes: HashMap<String, String>,
}

/// A conversation comment on a pull request.
#[derive(Debug, Clone)]
pub struct IssueComment {
    pub id: u64,
    pub pr: u64,
    pub user: String,
    pub bot: bool,
    pub body: String,
}

/// A commit the app made through the Git Data API, as it sent it.
#[derive(Debug, Clone)]
pub struct MadeCommit {
    pub sha: String,
    pub parents: Vec<String>,
    pub message: String,
    pub tree: String,
    /// The request body (to check that no author or committer was sent).
    pub request: Value,
    /// The whole tree of the commit.
    pub files: BTreeMap<String, String>,
}

/// A tree object: (name, mode, type, sha) entries.
type TreeObject = Vec<(String, String, String, String)>;

struct Fault {
    method: Method,
    path_contains: String,
    status: u16,
    headers: Vec<(String, String)>,
    times: usize,
    /// Carry the request out, then answer with the fault (the object exists; the app does
    /// not know it).
    after: bool,
}

struct Stall {
    method: Method,
    path_contains: String,
    delay: std::time::Duration,
    times: usize,
}

struct Inner {
    app_id: u64,
    public_key_pem: Vec<u8>,
    installations: HashMap<u64, Vec<String>>,
    tokens: HashMap<String, Token>,
    next_id: u64,
    repos: HashMap<String, Repo>,
    faults: Vec<Fault>,
    stalls: Vec<Stall>,
    hook_deliveries: Vec<Value>,
    redelivered: Vec<u64>,
    calls: Vec<String>,
    token_requests: Vec<TokenRequest>,
    check_runs: Vec<CheckRun>,
    reviews: Vec<Review>,
    rejected_reviews: usize,
    /// How many of `reviews` and `check_runs` the test has taken.
    taken_reviews: usize,
    taken_check_runs: usize,
    permissions: HashMap<String, String>,
    comments: Vec<IssueComment>,
    taken_comments: usize,
    reactions: Vec<(u64, String)>,
    blobs: HashMap<String, String>,
    trees: HashMap<String, TreeObject>,
    /// The whole file map of each root tree.
    root_files: HashMap<String, BTreeMap<String, String>>,
    made_commits: Vec<MadeCommit>,
    /// Someone else pushes to this branch just before the app's next ref update.
    race: Option<(String, String, String)>,
    ref_updates: Vec<(String, String, u16)>,
    tree_requests: Vec<Value>,
    /// The app the manifest flow registers: its private key and webhook secret.
    manifest_app: Option<(String, String)>,
    /// Codes handed out by the "new app" page: code → (manifest, used).
    manifest_codes: HashMap<String, (Value, bool)>,
    /// Manifests posted to the "new app" page: (organisation, manifest, state).
    posted_manifests: Vec<(Option<String>, Value, Option<String>)>,
    /// API requests without the `Accept` and `User-Agent` GitHub asks for (refused with 400).
    header_violations: Vec<String>,
    /// Files whose `sha` `pulls/list-files` answers as null (the description allows it).
    null_file_shas: Vec<String>,
    /// `pulls/get` answers `owner: null` in its head and base repositories.
    null_repo_owners: bool,
}

pub struct FakeGitHub {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeGitHub {
    pub async fn start(app_id: u64, public_key_pem: &[u8]) -> FakeGitHub {
        let inner = Arc::new(Mutex::new(Inner {
            app_id,
            public_key_pem: public_key_pem.to_vec(),
            installations: HashMap::new(),
            tokens: HashMap::new(),
            next_id: 1000,
            repos: HashMap::new(),
            faults: Vec::new(),
            stalls: Vec::new(),
            hook_deliveries: Vec::new(),
            redelivered: Vec::new(),
            calls: Vec::new(),
            token_requests: Vec::new(),
            check_runs: Vec::new(),
            reviews: Vec::new(),
            rejected_reviews: 0,
            taken_reviews: 0,
            taken_check_runs: 0,
            permissions: HashMap::new(),
            comments: Vec::new(),
            taken_comments: 0,
            reactions: Vec::new(),
            blobs: HashMap::new(),
            trees: HashMap::new(),
            root_files: HashMap::new(),
            made_commits: Vec::new(),
            race: None,
            ref_updates: Vec::new(),
            tree_requests: Vec::new(),
            manifest_app: None,
            manifest_codes: HashMap::new(),
            posted_manifests: Vec::new(),
            header_violations: Vec::new(),
            null_file_shas: Vec::new(),
            null_repo_owners: false,
        }));
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeGitHub { url, inner, server }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn install(&self, installation: u64, repo: &str) {
        let mut s = self.lock();
        s.installations
            .entry(installation)
            .or_default()
            .push(repo.to_string());
        s.repos.entry(repo.to_string()).or_default();
    }

    /// Store a commit's whole tree.
    pub fn commit(&self, repo: &str, sha: &str, files: &[(&str, &str)]) {
        let mut s = self.lock();
        let tree = files
            .iter()
            .map(|(p, c)| (p.to_string(), c.to_string()))
            .collect();
        s.repos
            .get_mut(repo)
            .expect("install the repo first")
            .commits
            .insert(sha.to_string(), tree);
    }

    /// Open a pull request from the branch `feature-{number}` of the same repository, by
    /// `octocat`.
    pub fn open_pr(&self, repo: &str, number: u64, base: &str, head: &str) {
        let mut s = self.lock();
        let r = s.repos.get_mut(repo).unwrap();
        let head_ref = format!("feature-{number}");
        r.refs.insert(head_ref.clone(), head.to_string());
        r.prs.insert(
            number,
            Pr {
                base: base.to_string(),
                head: head.to_string(),
                head_ref,
                fork: false,
                fork_deleted: false,
                author: "octocat".into(),
                closed: false,
            },
        );
    }

    /// Make a pull request come from a fork (its branch is not in this repository).
    pub fn make_fork(&self, repo: &str, number: u64) {
        let mut s = self.lock();
        let r = s.repos.get_mut(repo).unwrap();
        let pr = r.prs.get_mut(&number).unwrap();
        pr.fork = true;
        let head_ref = pr.head_ref.clone();
        r.refs.remove(&head_ref);
    }

    /// The fork of a pull request from one was deleted: `pulls/get` answers `head.repo: null`.
    pub fn delete_fork(&self, repo: &str, number: u64) {
        self.make_fork(repo, number);
        let mut s = self.lock();
        s.repos
            .get_mut(repo)
            .unwrap()
            .prs
            .get_mut(&number)
            .unwrap()
            .fork_deleted = true;
    }

    /// `pulls/get` answers `owner: null` in the head and base repositories (as GitHub's
    /// description allows).
    pub fn null_repo_owners(&self) {
        self.lock().null_repo_owners = true;
    }

    /// `pulls/list-files` answers `sha: null` for `path` (as GitHub's description allows).
    pub fn null_file_sha(&self, path: &str) {
        self.lock().null_file_shas.push(path.to_string());
    }

    /// A new head for a pull request (its branch moves with it).
    pub fn push(&self, repo: &str, number: u64, head: &str) {
        let mut s = self.lock();
        let r = s.repos.get_mut(repo).unwrap();
        let pr = r.prs.get_mut(&number).unwrap();
        pr.head = head.to_string();
        if !pr.fork {
            let head_ref = pr.head_ref.clone();
            r.refs.insert(head_ref, head.to_string());
        }
    }

    pub fn pr_head(&self, repo: &str, number: u64) -> String {
        self.lock().repos[repo].prs[&number].head.clone()
    }

    pub fn set_mode(&self, repo: &str, path: &str, mode: &str) {
        self.lock()
            .repos
            .get_mut(repo)
            .unwrap()
            .modes
            .insert(path.to_string(), mode.to_string());
    }

    /// A user's access to every repository (`read` for anyone not set).
    pub fn set_permission(&self, user: &str, permission: &str) {
        self.lock()
            .permissions
            .insert(user.to_string(), permission.to_string());
    }

    /// Just before the app's next branch update, someone pushes `commit` (stored with
    /// `commit()`, its parent being the current head) to `branch`.
    pub fn race_next_ref_update(&self, repo: &str, branch: &str, commit: &str) {
        self.lock().race = Some((repo.to_string(), branch.to_string(), commit.to_string()));
    }

    /// Branch updates the app asked for: (branch, sha, status answered).
    pub fn ref_updates(&self) -> Vec<(String, String, u16)> {
        self.lock().ref_updates.clone()
    }

    /// The app that GitHub's manifest flow registers: the conversion returns this key and secret.
    pub fn register_manifest_app(&self, private_key_pem: &str, webhook_secret: &str) {
        self.lock().manifest_app = Some((private_key_pem.to_string(), webhook_secret.to_string()));
    }

    /// Manifests posted to the "new app" page: (organisation, manifest, state).
    pub fn posted_manifests(&self) -> Vec<(Option<String>, Value, Option<String>)> {
        self.lock().posted_manifests.clone()
    }

    /// Bodies of the app's `POST /git/trees` requests.
    pub fn tree_requests(&self) -> Vec<Value> {
        self.lock().tree_requests.clone()
    }

    pub fn made_commits(&self) -> Vec<MadeCommit> {
        self.lock().made_commits.clone()
    }

    /// The whole tree of a commit.
    pub fn files_at(&self, repo: &str, sha: &str) -> BTreeMap<String, String> {
        self.lock().repos[repo].commits[sha].clone()
    }

    /// Reactions the app added: (comment id, content).
    pub fn reactions(&self) -> Vec<(u64, String)> {
        self.lock().reactions.clone()
    }

    /// Conversation comments the app posted since the last call.
    pub fn take_comments(&self) -> Vec<IssueComment> {
        let mut s = self.lock();
        let new = s.comments[s.taken_comments..]
            .iter()
            .filter(|c| c.bot)
            .cloned()
            .collect();
        s.taken_comments = s.comments.len();
        new
    }

    /// A comment by a person, as the `issue_comment` delivery would carry it.
    pub fn add_comment(&self, pr: u64, user: &str, body: &str) -> u64 {
        let mut s = self.lock();
        s.next_id += 1;
        let id = s.next_id;
        s.comments.push(IssueComment {
            id,
            pr,
            user: user.to_string(),
            bot: false,
            body: body.to_string(),
        });
        id
    }

    /// Answer the next `times` matching requests with `status` (and headers).
    pub fn fail(
        &self,
        method: Method,
        path_contains: &str,
        status: u16,
        headers: &[(&str, &str)],
        times: usize,
    ) {
        self.lock().faults.push(Fault {
            method,
            path_contains: path_contains.to_string(),
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            times,
            after: false,
        });
    }

    /// Carry out the next `times` matching requests, then answer them with `status` anyway: a
    /// 502 from a proxy after GitHub has created the object.
    pub fn fail_after(&self, method: Method, path_contains: &str, status: u16, times: usize) {
        self.lock().faults.push(Fault {
            method,
            path_contains: path_contains.to_string(),
            status,
            headers: Vec::new(),
            times,
            after: true,
        });
    }

    /// Hold the next `times` matching requests for `delay` before answering (a slow GitHub, or
    /// a window in which the test kills the app).
    pub fn stall(
        &self,
        method: Method,
        path_contains: &str,
        delay: std::time::Duration,
        times: usize,
    ) {
        self.lock().stalls.push(Stall {
            method,
            path_contains: path_contains.to_string(),
            delay,
            times,
        });
    }

    /// The app's webhook deliveries as `GET /app/hook/deliveries` lists them.
    pub fn set_hook_deliveries(&self, deliveries: Vec<Value>) {
        self.lock().hook_deliveries = deliveries;
    }

    /// Delivery ids the app asked to redeliver.
    pub fn redelivered(&self) -> Vec<u64> {
        self.lock().redelivered.clone()
    }

    /// Installation tokens issued so far.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.lock().tokens.keys().cloned().collect()
    }

    /// Invalidate every installation token, as an expiry or a revocation would.
    pub fn revoke_tokens(&self) {
        self.lock().tokens.clear();
    }

    /// Every request, as `METHOD /path?query`.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    pub fn token_requests(&self) -> Vec<TokenRequest> {
        self.lock().token_requests.clone()
    }

    pub fn rejected_reviews(&self) -> usize {
        self.lock().rejected_reviews
    }

    /// Reviews the app posted since the last call; the test asserts on them.
    pub fn take_reviews(&self) -> Vec<Review> {
        let mut s = self.lock();
        let new = s.reviews[s.taken_reviews..]
            .iter()
            .filter(|r| !r.human)
            .cloned()
            .collect();
        s.taken_reviews = s.reviews.len();
        new
    }

    /// A review by a person (who may copy the app's markers into it).
    pub fn add_human_review(&self, pr: u64, commit: &str, body: &str, comment_bodies: &[&str]) {
        let mut s = self.lock();
        let comments = comment_bodies
            .iter()
            .enumerate()
            .map(|(i, b)| ReviewComment {
                id: 9_000 + i as u64,
                thread: format!("PRRT_human{i}"),
                path: "web.yaml".into(),
                line: 1,
                start_line: None,
                body: b.to_string(),
                resolved: false,
            })
            .collect();
        s.reviews.push(Review {
            pr,
            commit_id: commit.to_string(),
            body: body.to_string(),
            comments,
            human: true,
        });
        s.taken_reviews = s.reviews.len();
    }

    /// Check runs created since the last call, in their current state.
    pub fn take_check_runs(&self) -> Vec<CheckRun> {
        let mut s = self.lock();
        let new = s.check_runs[s.taken_check_runs..].to_vec();
        s.taken_check_runs = s.check_runs.len();
        new
    }

    /// Threads of a pull request, across reviews, with their current state.
    pub fn threads(&self, pr: u64) -> Vec<ReviewComment> {
        self.lock()
            .reviews
            .iter()
            .filter(|r| r.pr == pr)
            .flat_map(|r| r.comments.clone())
            .collect()
    }
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        self.server.abort();
        if std::thread::panicking() {
            return;
        }
        let s = self.lock();
        assert!(
            s.header_violations.is_empty(),
            "requests without GitHub's Accept and User-Agent: {:?}",
            s.header_violations
        );
        let reviews = s.reviews.len() - s.taken_reviews;
        let checks = s.check_runs.len() - s.taken_check_runs;
        let comments = s.comments[s.taken_comments..]
            .iter()
            .filter(|c| c.bot)
            .count();
        assert!(
            reviews == 0 && checks == 0 && comments == 0,
            "the app posted {reviews} review(s), {checks} check run(s) and {comments} comment(s) that the test did not assert"
        );
    }
}

type Shared = Arc<Mutex<Inner>>;

fn json_response(status: StatusCode, value: Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    json_response(
        status,
        json!({ "message": message, "documentation_url": "https://docs.github.com/rest" }),
    )
}

fn blob_sha(content: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(content.as_bytes())[..20])
}

fn object_sha(kind: &str, data: &str) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(kind.as_bytes());
    h.update([0]);
    h.update(data.as_bytes());
    hex::encode(&h.finalize()[..20])
}

/// Store the trees of a file map (and its blobs); the root tree's sha.
fn build_tree(
    s: &mut Inner,
    files: &BTreeMap<String, String>,
    modes: &HashMap<String, String>,
) -> String {
    fn level(
        s: &mut Inner,
        prefix: &str,
        files: &BTreeMap<String, String>,
        modes: &HashMap<String, String>,
    ) -> String {
        let mut names: BTreeMap<String, bool> = BTreeMap::new();
        for path in files.keys() {
            let Some(rest) = path.strip_prefix(prefix) else {
                continue;
            };
            match rest.split_once('/') {
                Some((dir, _)) => names.insert(dir.to_string(), true),
                None => names.insert(rest.to_string(), false),
            };
        }
        let mut entries = Vec::new();
        for (name, is_dir) in names {
            let full = format!("{prefix}{name}");
            if is_dir {
                let sha = level(s, &format!("{full}/"), files, modes);
                entries.push((name, "040000".into(), "tree".into(), sha));
            } else {
                let content = files[&full].clone();
                let sha = blob_sha(&content);
                s.blobs.insert(sha.clone(), content);
                let mode = modes.get(&full).cloned().unwrap_or("100644".into());
                entries.push((name, mode, "blob".into(), sha));
            }
        }
        let sha = object_sha("tree", &format!("{entries:?}"));
        s.trees.insert(sha.clone(), entries);
        sha
    }
    let root = level(s, "", files, modes);
    s.root_files.insert(root.clone(), files.clone());
    root
}

/// Whether `ancestor` is `sha` or one of its ancestors among the commits the app made.
fn is_ancestor(s: &Inner, ancestor: &str, sha: &str) -> bool {
    let mut todo = vec![sha.to_string()];
    while let Some(c) = todo.pop() {
        if c == ancestor {
            return true;
        }
        if let Some(m) = s.made_commits.iter().find(|m| m.sha == c) {
            todo.extend(m.parents.iter().cloned());
        }
    }
    false
}

/// Whether the request's token was minted with `permission` at `write`.
fn token_can(s: &Inner, headers: &HeaderMap, permission: &str) -> bool {
    bearer(headers)
        .and_then(|t| s.tokens.get(&t))
        .is_some_and(|t| t.permissions[permission] == "write")
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("token "))
        })
        .map(str::to_string)
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

async fn handle(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    // GitHub asks every API client for these (the manifest flow's pages are a browser's).
    let browser = path.ends_with("/settings/apps/new") || path == "/favicon.ico";
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let user_agent = concat!("kubeharden/", env!("CARGO_PKG_VERSION"));
    if !browser
        && (header("accept") != Some("application/vnd.github+json")
            || header("user-agent") != Some(user_agent)
            || headers.get_all("user-agent").iter().count() != 1)
    {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        s.header_violations.push(format!(
            "{method} {path}: accept {:?}, user-agent {:?}",
            headers.get_all("accept").iter().collect::<Vec<_>>(),
            headers.get_all("user-agent").iter().collect::<Vec<_>>()
        ));
        return error(
            StatusCode::BAD_REQUEST,
            "send Accept: application/vnd.github+json and a User-Agent",
        );
    }
    let stall = {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        // Recorded before any stall, so a test sees the request while it hangs.
        s.calls.push(format!(
            "{method} {}",
            uri.path_and_query().map_or(path.as_str(), |p| p.as_str())
        ));
        s.stalls
            .iter_mut()
            .find(|st| st.times > 0 && st.method == method && path.contains(&st.path_contains))
            .map(|st| {
                st.times -= 1;
                st.delay
            })
    };
    if let Some(delay) = stall {
        tokio::time::sleep(delay).await;
    }
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    let mut after = None;
    if let Some(fault) = s
        .faults
        .iter_mut()
        .find(|f| f.times > 0 && f.method == method && path.contains(&f.path_contains))
        && fault.after
    {
        fault.times -= 1;
        after = Some(fault.status);
    }
    if after.is_some() {
        let _done = route(&mut s, &method, &uri, &headers, &body, &path);
        return error(
            StatusCode::from_u16(after.unwrap_or(502)).unwrap(),
            "injected fault after the fact",
        );
    }
    if let Some(fault) = s
        .faults
        .iter_mut()
        .find(|f| f.times > 0 && f.method == method && path.contains(&f.path_contains))
    {
        fault.times -= 1;
        let mut response = error(
            StatusCode::from_u16(fault.status).unwrap(),
            "injected fault",
        );
        for (k, v) in &fault.headers {
            response.headers_mut().insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        return response;
    }
    route(&mut s, &method, &uri, &headers, &body, &path)
}

/// Answer a request (after faults and stalls).
fn route(
    s: &mut Inner,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    path: &str,
) -> Response {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // GitHub's web pages of the manifest flow (a browser, not the API).
    match (method.clone(), segments.as_slice()) {
        (Method::POST, ["settings", "apps", "new"]) => {
            return new_app_page(s, None, uri, body);
        }
        (Method::POST, ["organizations", org, "settings", "apps", "new"]) => {
            return new_app_page(s, Some(org.to_string()), uri, body);
        }
        (Method::POST, ["app-manifests", code, "conversions"]) => {
            return convert_manifest(s, code);
        }
        _ => {}
    }
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body).unwrap_or(Value::Null)
    };
    match (method.clone(), segments.as_slice()) {
        (Method::POST, ["app", "installations", id, "access_tokens"]) => {
            mint_token(s, headers, id, body)
        }
        (Method::GET, ["app", "hook", "deliveries"]) => match app_jwt(s, headers) {
            Some(refused) => refused,
            None => json_response(StatusCode::OK, Value::Array(s.hook_deliveries.clone())),
        },
        (Method::POST, ["app", "hook", "deliveries", id, "attempts"]) => {
            match app_jwt(s, headers) {
                Some(refused) => refused,
                None => {
                    s.redelivered.push(id.parse().unwrap_or(0));
                    json_response(StatusCode::ACCEPTED, json!({}))
                }
            }
        }
        (Method::POST, ["graphql"]) => match authorize(s, headers, None) {
            Some(refused) => refused,
            None => graphql(s, body),
        },
        (_, ["repos", owner, name, rest @ ..]) => {
            let repo = format!("{owner}/{name}");
            if let Some(refused) = authorize(s, headers, Some(&repo)) {
                return refused;
            }
            if let Some(needed) = write_permission(method, rest)
                && !token_can(s, headers, needed)
            {
                return error(
                    StatusCode::FORBIDDEN,
                    "Resource not accessible by integration",
                );
            }
            repo_request(s, method, uri, &repo, rest, body)
        }
        _ => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

/// The permission a write request needs at `write` (GitHub refuses a narrowed token without it).
fn write_permission(method: &Method, rest: &[&str]) -> Option<&'static str> {
    match (method, rest) {
        (&Method::GET, _) => None,
        (_, ["git", ..]) => Some("contents"),
        (_, ["issues", ..]) => Some("issues"),
        (_, ["pulls", ..]) => Some("pull_requests"),
        (_, ["check-runs", ..]) => Some("checks"),
        _ => None,
    }
}

/// GitHub's "Create GitHub App" page for a posted manifest: a button that sends the browser to
/// the manifest's `redirect_url` with a one-time code and the state it was given.
fn new_app_page(s: &mut Inner, org: Option<String>, uri: &Uri, body: &[u8]) -> Response {
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(body).unwrap_or_default();
    let Some(manifest) = form
        .get("manifest")
        .and_then(|m| serde_json::from_str::<Value>(m).ok())
    else {
        return (StatusCode::UNPROCESSABLE_ENTITY, "Invalid manifest").into_response();
    };
    let state = query_param(uri, "state");
    s.posted_manifests
        .push((org, manifest.clone(), state.clone()));
    s.next_id += 1;
    let code = format!("manifestcode{}", s.next_id);
    s.manifest_codes
        .insert(code.clone(), (manifest.clone(), false));
    let redirect = manifest["redirect_url"].as_str().unwrap_or_default();
    let html = format!(
        r#"<!doctype html><html><head><title>Create GitHub App</title></head><body>
<form method="get" action="{redirect}"><input type="hidden" name="code" value="{code}">
<input type="hidden" name="state" value="{}"><button id="create" type="submit">Create GitHub App</button></form>
</body></html>"#,
        state.unwrap_or_default()
    );
    (StatusCode::OK, [("content-type", "text/html")], html).into_response()
}

fn convert_manifest(s: &mut Inner, code: &str) -> Response {
    let Some((manifest, used)) = s.manifest_codes.get_mut(code) else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    if *used {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    *used = true;
    let manifest = manifest.clone();
    let Some((pem, secret)) = s.manifest_app.clone() else {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "no app to register");
    };
    json_response(
        StatusCode::CREATED,
        json!({
            "id": s.app_id,
            "slug": "kubeharden-test",
            "name": manifest["name"],
            "html_url": "https://github.com/apps/kubeharden-test",
            "client_id": "Iv1.test",
            "client_secret": "client-secret-test",
            "webhook_secret": secret,
            "pem": pem,
            "events": manifest["default_events"],
            "permissions": manifest["default_permissions"],
        }),
    )
}

/// `None` when the request carries a valid app JWT; the refusal otherwise.
fn app_jwt(s: &Inner, headers: &HeaderMap) -> Option<Response> {
    use octocrab::jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
    #[derive(serde::Deserialize)]
    struct Claims {
        iat: i64,
        exp: i64,
        iss: Value,
    }
    let refuse = || {
        Some(error(
            StatusCode::UNAUTHORIZED,
            "A JSON web token could not be decoded",
        ))
    };
    let Some(jwt) = bearer(headers) else {
        return refuse();
    };
    let key = DecodingKey::from_rsa_pem(&s.public_key_pem).unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.required_spec_claims.clear();
    validation.validate_aud = false;
    let Ok(token) = decode::<Claims>(&jwt, &key, &validation) else {
        return refuse();
    };
    let c = token.claims;
    let now = chrono::Utc::now().timestamp();
    let iss_ok = c.iss.as_u64() == Some(s.app_id) || c.iss.as_str() == Some(&s.app_id.to_string());
    // GitHub: iat in the past (60 s of drift allowed), exp at most ten minutes after iat.
    if !iss_ok || c.iat > now + 60 || c.exp <= now || c.exp - c.iat > 660 {
        return refuse();
    }
    None
}

fn mint_token(s: &mut Inner, headers: &HeaderMap, id: &str, body: Value) -> Response {
    if let Some(refused) = app_jwt(s, headers) {
        return refused;
    }
    let installation: u64 = id.parse().unwrap_or(0);
    let Some(repos) = s.installations.get(&installation).cloned() else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    s.token_requests.push(TokenRequest {
        installation,
        body: body.clone(),
    });
    // Narrowed to the named repositories (by name, within the installation's owner).
    let narrowed: Vec<String> = match body.get("repositories").and_then(Value::as_array) {
        Some(names) => repos
            .iter()
            .filter(|full| {
                names
                    .iter()
                    .any(|n| n.as_str().is_some_and(|n| full.ends_with(&format!("/{n}"))))
            })
            .cloned()
            .collect(),
        None => repos,
    };
    s.next_id += 1;
    let token = format!("ghs_fake{}", s.next_id);
    s.tokens.insert(
        token.clone(),
        Token {
            repos: narrowed,
            permissions: body.get("permissions").cloned().unwrap_or(Value::Null),
        },
    );
    let expires = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    json_response(
        StatusCode::CREATED,
        json!({ "token": token, "expires_at": expires, "permissions": body.get("permissions") }),
    )
}

/// `None` when the request may go on; the refusal otherwise.
fn authorize(s: &Inner, headers: &HeaderMap, repo: Option<&str>) -> Option<Response> {
    let Some(token) = bearer(headers) else {
        return Some(error(StatusCode::UNAUTHORIZED, "Requires authentication"));
    };
    let Some(t) = s.tokens.get(&token) else {
        return Some(error(StatusCode::UNAUTHORIZED, "Bad credentials"));
    };
    match repo {
        Some(repo) if !t.repos.iter().any(|r| r == repo) => {
            Some(error(StatusCode::NOT_FOUND, "Not Found"))
        }
        _ => None,
    }
}

/// The files of a pull request as GitHub lists them, with their patches.
fn pr_files(repo: &Repo, pr: &Pr) -> Vec<Value> {
    let empty = BTreeMap::new();
    let base = repo.commits.get(&pr.base).unwrap_or(&empty);
    let head = repo.commits.get(&pr.head).unwrap_or(&empty);
    let mut paths: Vec<&String> = base.keys().chain(head.keys()).collect();
    paths.sort();
    paths.dedup();
    let mut out = Vec::new();
    for path in paths {
        let (old, new) = (base.get(path), head.get(path));
        let status = match (old, new) {
            (None, Some(_)) => "added",
            (Some(_), None) => "removed",
            (Some(a), Some(b)) if a != b => "modified",
            _ => continue,
        };
        let patch = similar::TextDiff::from_lines(
            old.map_or("", String::as_str),
            new.map_or("", String::as_str),
        )
        .unified_diff()
        .context_radius(3)
        .to_string();
        // Hunks only, as GitHub's `patch` field holds them.
        let patch: String = patch
            .lines()
            .skip_while(|l| !l.starts_with("@@"))
            .collect::<Vec<_>>()
            .join("\n");
        out.push(json!({
            "filename": path,
            "status": status,
            "sha": new.map_or_else(|| "0".repeat(40), |c| blob_sha(c)),
            "patch": patch,
        }));
    }
    out
}

/// New-side line ranges of each hunk of a patch.
fn hunks(patch: &str) -> Vec<(u64, u64)> {
    patch
        .lines()
        .filter_map(|l| l.strip_prefix("@@ "))
        .filter_map(|h| {
            let new = h.split_whitespace().find_map(|p| p.strip_prefix('+'))?;
            let mut it = new.split(',');
            let start: u64 = it.next()?.parse().ok()?;
            let count: u64 = it.next().map_or(Some(1), |c| c.parse().ok())?;
            (count > 0).then(|| (start, start + count - 1))
        })
        .collect()
}

fn repo_request(
    s: &mut Inner,
    method: &Method,
    uri: &Uri,
    repo_name: &str,
    rest: &[&str],
    body: Value,
) -> Response {
    let Some(repo) = s.repos.get(repo_name) else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    match (method.clone(), rest) {
        (Method::GET, ["pulls", n, "files"]) => {
            let Some(pr) = n.parse().ok().and_then(|n: u64| repo.prs.get(&n)) else {
                return error(StatusCode::NOT_FOUND, "Not Found");
            };
            let per_page: usize = query_param(uri, "per_page")
                .and_then(|p| p.parse().ok())
                .unwrap_or(30)
                .min(100);
            let page: usize = query_param(uri, "page")
                .and_then(|p| p.parse().ok())
                .unwrap_or(1);
            let files: Vec<Value> = pr_files(repo, pr)
                .into_iter()
                .map(|mut f| {
                    if s.null_file_shas.iter().any(|p| f["filename"] == *p) {
                        f["sha"] = Value::Null;
                    }
                    f
                })
                .skip((page - 1) * per_page)
                .take(per_page)
                .collect();
            json_response(StatusCode::OK, Value::Array(files))
        }
        (Method::GET, ["git", "blobs", sha]) => {
            let content = repo
                .commits
                .values()
                .flat_map(|t| t.values())
                .find(|c| blob_sha(c) == *sha);
            match content {
                Some(c) => json_response(
                    StatusCode::OK,
                    json!({ "sha": sha, "encoding": "base64", "content": base64::engine::general_purpose::STANDARD.encode(c) }),
                ),
                None => error(StatusCode::NOT_FOUND, "Not Found"),
            }
        }
        (Method::GET, ["contents", path @ ..]) => {
            let path = path.join("/");
            let commit = query_param(uri, "ref").unwrap_or_default();
            let tree = repo.commits.get(&commit);
            // A directory's contents are its listing: an array, not a file object.
            let listing: Vec<Value> = tree
                .into_iter()
                .flat_map(|t| t.keys())
                .filter_map(|p| p.strip_prefix(&format!("{path}/")))
                .map(|name| {
                    let name = name.split('/').next().unwrap_or(name);
                    json!({ "type": "file", "name": name, "path": format!("{path}/{name}") })
                })
                .collect();
            match tree.and_then(|t| t.get(&path)) {
                Some(c) => json_response(
                    StatusCode::OK,
                    json!({ "type": "file", "path": path, "encoding": "base64", "content": base64::engine::general_purpose::STANDARD.encode(c) }),
                ),
                None if !listing.is_empty() => json_response(StatusCode::OK, Value::Array(listing)),
                None => error(StatusCode::NOT_FOUND, "Not Found"),
            }
        }
        (Method::GET, ["pulls", n]) => match n.parse().ok().and_then(|n: u64| repo.prs.get(&n)) {
            Some(pr) => {
                let (owner, name) = repo_name.split_once('/').unwrap();
                let owner = if s.null_repo_owners {
                    Value::Null
                } else {
                    json!({ "login": owner })
                };
                let base_repo =
                    json!({ "id": 1296269, "name": name, "full_name": repo_name, "owner": owner });
                let head_repo = if pr.fork_deleted {
                    Value::Null
                } else if pr.fork && s.null_repo_owners {
                    json!({ "id": 55555, "name": name, "full_name": format!("forker/{name}"), "owner": null })
                } else if pr.fork {
                    json!({ "id": 55555, "name": name, "full_name": format!("forker/{name}"), "owner": { "login": "forker" } })
                } else {
                    base_repo.clone()
                };
                json_response(
                    StatusCode::OK,
                    json!({
                        "number": n.parse::<u64>().unwrap_or(0),
                        "state": if pr.closed { "closed" } else { "open" },
                        "draft": false,
                        "user": { "login": pr.author, "type": "User" },
                        "head": { "sha": pr.head, "ref": pr.head_ref, "repo": head_repo },
                        "base": { "sha": pr.base, "ref": "main", "repo": base_repo },
                    }),
                )
            }
            None => error(StatusCode::NOT_FOUND, "Not Found"),
        },
        (Method::GET, ["collaborators", user, "permission"]) => {
            let role = s
                .permissions
                .get(*user)
                .cloned()
                .unwrap_or_else(|| "read".into());
            let permission = match role.as_str() {
                "maintain" => "write",
                "triage" => "read",
                other => other,
            };
            json_response(
                StatusCode::OK,
                json!({ "permission": permission, "role_name": role, "user": { "login": user } }),
            )
        }
        (Method::POST, ["issues", "comments", id, "reactions"]) => {
            let id: u64 = id.parse().unwrap_or(0);
            if !s.comments.iter().any(|c| c.id == id) {
                return error(StatusCode::NOT_FOUND, "Not Found");
            }
            let content = body["content"].as_str().unwrap_or_default().to_string();
            let known = [
                "+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes",
            ];
            if !known.contains(&content.as_str()) {
                return error(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed");
            }
            s.reactions.push((id, content.clone()));
            json_response(StatusCode::CREATED, json!({ "content": content }))
        }
        (Method::POST, ["issues", n, "comments"]) => {
            let number: u64 = n.parse().unwrap_or(0);
            if !repo.prs.contains_key(&number) {
                return error(StatusCode::NOT_FOUND, "Not Found");
            }
            let text = body["body"].as_str().unwrap_or_default().to_string();
            if text.chars().count() > 65536 {
                return error(StatusCode::UNPROCESSABLE_ENTITY, "Body is too long");
            }
            s.next_id += 1;
            let id = s.next_id;
            s.comments.push(IssueComment {
                id,
                pr: number,
                user: "kubeharden[bot]".into(),
                bot: true,
                body: text,
            });
            json_response(StatusCode::CREATED, json!({ "id": id }))
        }
        (Method::GET, ["issues", n, "comments"]) => {
            let number: u64 = n.parse().unwrap_or(0);
            let comments: Vec<Value> = s
                .comments
                .iter()
                .filter(|c| c.pr == number)
                .map(|c| json!({ "id": c.id, "body": c.body, "user": { "login": c.user, "type": if c.bot { "Bot" } else { "User" } } }))
                .collect();
            json_response(StatusCode::OK, Value::Array(comments))
        }
        (Method::GET, ["git", "commits", sha]) => {
            let Some(files) = repo.commits.get(*sha).cloned() else {
                return error(StatusCode::NOT_FOUND, "Not Found");
            };
            let modes = repo.modes.clone();
            let message = s
                .made_commits
                .iter()
                .find(|m| m.sha == *sha)
                .map_or("Initial commit".to_string(), |m| m.message.clone());
            let tree = build_tree(s, &files, &modes);
            json_response(
                StatusCode::OK,
                json!({ "sha": sha, "message": message, "tree": { "sha": tree }, "html_url": format!("https://github.com/{repo_name}/commit/{sha}") }),
            )
        }
        (Method::GET, ["git", "trees", sha]) => match s.trees.get(*sha) {
            Some(entries) => {
                let tree: Vec<Value> = entries
                    .iter()
                    .map(|(path, mode, kind, sha)| json!({ "path": path, "mode": mode, "type": kind, "sha": sha }))
                    .collect();
                json_response(
                    StatusCode::OK,
                    json!({ "sha": sha, "tree": tree, "truncated": false }),
                )
            }
            None => error(StatusCode::NOT_FOUND, "Not Found"),
        },
        (Method::POST, ["git", "blobs"]) => {
            let content = match body["encoding"].as_str() {
                Some("base64") => base64::engine::general_purpose::STANDARD
                    .decode(body["content"].as_str().unwrap_or_default())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok()),
                _ => body["content"].as_str().map(str::to_string),
            };
            let Some(content) = content else {
                return error(StatusCode::UNPROCESSABLE_ENTITY, "Invalid blob");
            };
            let sha = blob_sha(&content);
            s.blobs.insert(sha.clone(), content);
            json_response(StatusCode::CREATED, json!({ "sha": sha }))
        }
        (Method::POST, ["git", "trees"]) => {
            s.tree_requests.push(body.clone());
            let base = body["base_tree"].as_str().unwrap_or_default();
            let Some(mut files) = s.root_files.get(base).cloned() else {
                return error(StatusCode::UNPROCESSABLE_ENTITY, "Invalid base_tree");
            };
            let mut modes = repo.modes.clone();
            for entry in body["tree"].as_array().into_iter().flatten() {
                let path = entry["path"].as_str().unwrap_or_default().to_string();
                let Some(content) = entry["sha"].as_str().and_then(|b| s.blobs.get(b)) else {
                    return error(StatusCode::UNPROCESSABLE_ENTITY, "Invalid tree entry");
                };
                let mode = entry["mode"].as_str().unwrap_or_default().to_string();
                if !["100644", "100755", "120000"].contains(&mode.as_str()) {
                    return error(StatusCode::UNPROCESSABLE_ENTITY, "Invalid mode");
                }
                files.insert(path.clone(), content.clone());
                modes.insert(path, mode);
            }
            let sha = build_tree(s, &files, &modes);
            json_response(StatusCode::CREATED, json!({ "sha": sha }))
        }
        (Method::POST, ["git", "commits"]) => {
            let tree = body["tree"].as_str().unwrap_or_default().to_string();
            let Some(files) = s.root_files.get(&tree).cloned() else {
                return error(StatusCode::UNPROCESSABLE_ENTITY, "Invalid tree");
            };
            let parents: Vec<String> = body["parents"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect();
            if parents.iter().any(|p| !repo.commits.contains_key(p)) {
                return error(StatusCode::UNPROCESSABLE_ENTITY, "Invalid parent");
            }
            let message = body["message"].as_str().unwrap_or_default().to_string();
            let sha = object_sha("commit", &format!("{tree}{parents:?}{message}"));
            s.repos
                .get_mut(repo_name)
                .unwrap()
                .commits
                .insert(sha.clone(), files.clone());
            s.made_commits.push(MadeCommit {
                sha: sha.clone(),
                parents,
                message,
                tree: tree.clone(),
                request: body.clone(),
                files,
            });
            // No author or committer sent: GitHub signs the commit as the app.
            let verified = body.get("author").is_none() && body.get("committer").is_none();
            json_response(
                StatusCode::CREATED,
                json!({ "sha": sha, "tree": { "sha": tree }, "html_url": format!("https://github.com/{repo_name}/commit/{sha}"), "verification": { "verified": verified } }),
            )
        }
        (Method::GET, ["git", "ref", "heads", branch @ ..]) => {
            let branch = branch.join("/");
            match repo.refs.get(&branch) {
                Some(sha) => json_response(
                    StatusCode::OK,
                    json!({ "ref": format!("refs/heads/{branch}"), "object": { "sha": sha, "type": "commit" } }),
                ),
                None => error(StatusCode::NOT_FOUND, "Not Found"),
            }
        }
        (Method::PATCH, ["git", "refs", "heads", branch @ ..]) => {
            let branch = branch.join("/");
            let new = body["sha"].as_str().unwrap_or_default().to_string();
            if let Some((race_repo, race_branch, pushed)) = s.race.take() {
                let r = s.repos.get_mut(&race_repo).unwrap();
                r.refs.insert(race_branch.clone(), pushed.clone());
                for pr in r.prs.values_mut() {
                    if pr.head_ref == race_branch && !pr.fork {
                        pr.head = pushed.clone();
                    }
                }
            }
            let Some(current) = s.repos[repo_name].refs.get(&branch).cloned() else {
                return error(StatusCode::UNPROCESSABLE_ENTITY, "Reference does not exist");
            };
            let force = body["force"].as_bool().unwrap_or(false);
            if !force && !is_ancestor(s, &current, &new) {
                s.ref_updates.push((branch, new, 422));
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Update is not a fast forward",
                );
            }
            s.ref_updates.push((branch.clone(), new.clone(), 200));
            let r = s.repos.get_mut(repo_name).unwrap();
            r.refs.insert(branch.clone(), new.clone());
            for pr in r.prs.values_mut() {
                if pr.head_ref == branch && !pr.fork {
                    pr.head = new.clone();
                }
            }
            json_response(
                StatusCode::OK,
                json!({ "ref": format!("refs/heads/{branch}"), "object": { "sha": new, "type": "commit" } }),
            )
        }
        (Method::GET, ["commits", sha, "check-runs"]) => {
            // Every check run here is the app's; another app's id finds none.
            if query_param(uri, "app_id").is_some_and(|id| id != s.app_id.to_string()) {
                return json_response(
                    StatusCode::OK,
                    json!({ "total_count": 0, "check_runs": [] }),
                );
            }
            let name = query_param(uri, "check_name");
            let runs: Vec<Value> = s
                .check_runs
                .iter()
                .filter(|r| r.head_sha == *sha && name.as_deref().is_none_or(|n| n == "KubeHarden"))
                .map(|r| json!({ "id": r.id, "name": "KubeHarden", "status": r.status, "conclusion": r.conclusion }))
                .collect();
            json_response(
                StatusCode::OK,
                json!({ "total_count": runs.len(), "check_runs": runs }),
            )
        }
        (Method::GET, ["pulls", n, "reviews"]) => {
            let number: u64 = n.parse().unwrap_or(0);
            let reviews: Vec<Value> = s
                .reviews
                .iter()
                .filter(|r| r.pr == number)
                .map(|r| json!({ "body": r.body, "commit_id": r.commit_id, "state": "COMMENTED" }))
                .collect();
            json_response(StatusCode::OK, Value::Array(reviews))
        }
        (Method::POST, ["check-runs"]) => {
            s.next_id += 1;
            let run = CheckRun {
                id: s.next_id,
                head_sha: body["head_sha"].as_str().unwrap_or_default().to_string(),
                external_id: body["external_id"].as_str().map(str::to_string),
                status: body["status"].as_str().unwrap_or("queued").to_string(),
                conclusion: None,
                title: None,
                summary: None,
                annotations: Vec::new(),
                actions: Value::Null,
            };
            let id = run.id;
            s.check_runs.push(run);
            json_response(StatusCode::CREATED, json!({ "id": id }))
        }
        (Method::PATCH, ["check-runs", id]) => {
            let Some(run) = s.check_runs.iter_mut().find(|r| r.id.to_string() == *id) else {
                return error(StatusCode::NOT_FOUND, "Not Found");
            };
            if let Some(status) = body["status"].as_str() {
                run.status = status.to_string();
            }
            if let Some(c) = body["conclusion"].as_str() {
                run.conclusion = Some(c.to_string());
            }
            if !body["actions"].is_null() {
                run.actions = body["actions"].clone();
            }
            let output = &body["output"];
            for (field, limit) in [("summary", 65535), ("text", 65535)] {
                if output[field]
                    .as_str()
                    .is_some_and(|t| t.chars().count() > limit)
                {
                    return error(StatusCode::UNPROCESSABLE_ENTITY, "output is too long");
                }
            }
            if let Some(t) = output["title"].as_str() {
                run.title = Some(t.to_string());
            }
            if let Some(t) = output["summary"].as_str() {
                run.summary = Some(t.to_string());
            }
            if let Some(a) = output["annotations"].as_array() {
                if a.len() > 50 {
                    return error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "at most 50 annotations per request",
                    );
                }
                run.annotations.extend(a.iter().cloned());
            }
            json_response(StatusCode::OK, json!({ "id": run.id }))
        }
        (Method::POST, ["pulls", n, "reviews"]) => {
            let number: u64 = n.parse().unwrap_or(0);
            let Some(pr) = repo.prs.get(&number) else {
                return error(StatusCode::NOT_FOUND, "Not Found");
            };
            if body["commit_id"].as_str() != Some(pr.head.as_str()) {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "commit_id is not the head of the pull request",
                );
            }
            let files = pr_files(repo, pr);
            let mut comments = Vec::new();
            for c in body["comments"].as_array().into_iter().flatten() {
                let path = c["path"].as_str().unwrap_or_default();
                let line = c["line"].as_u64().unwrap_or(0);
                let start = c["start_line"].as_u64().unwrap_or(line);
                let patch = files
                    .iter()
                    .find(|f| f["filename"] == path)
                    .and_then(|f| f["patch"].as_str());
                let in_one_hunk = c["side"] == "RIGHT"
                    && (c["start_line"].is_null() || c["start_side"] == "RIGHT")
                    && patch
                        .is_some_and(|p| hunks(p).iter().any(|(a, b)| *a <= start && line <= *b));
                if !in_one_hunk {
                    // The whole review fails, naming no comment: GitHub's behaviour.
                    s.rejected_reviews += 1;
                    return json_response(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        json!({ "message": "Unprocessable Entity", "errors": ["Line could not be resolved"] }),
                    );
                }
                s.next_id += 1;
                comments.push(ReviewComment {
                    id: s.next_id,
                    thread: format!("PRRT_{}", s.next_id),
                    path: path.to_string(),
                    line,
                    start_line: c["start_line"].as_u64(),
                    body: c["body"].as_str().unwrap_or_default().to_string(),
                    resolved: false,
                });
            }
            s.reviews.push(Review {
                pr: number,
                commit_id: body["commit_id"].as_str().unwrap_or_default().to_string(),
                body: body["body"].as_str().unwrap_or_default().to_string(),
                comments,
                human: false,
            });
            json_response(
                StatusCode::OK,
                json!({ "id": s.next_id, "state": "COMMENTED" }),
            )
        }
        _ => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

fn graphql(s: &mut Inner, body: Value) -> Response {
    let query = body["query"].as_str().unwrap_or_default();
    let vars = &body["variables"];
    if query.contains("resolveReviewThread") {
        let thread = vars["thread"].as_str().unwrap_or_default();
        for c in s.reviews.iter_mut().flat_map(|r| r.comments.iter_mut()) {
            if c.thread == thread {
                c.resolved = true;
            }
        }
        return json_response(
            StatusCode::OK,
            json!({ "data": { "resolveReviewThread": { "thread": { "id": thread, "isResolved": true } } } }),
        );
    }
    if query.contains("reviews(last") {
        let number = vars["number"].as_u64().unwrap_or(0);
        let nodes: Vec<Value> = s
            .reviews
            .iter()
            .filter(|r| r.pr == number)
            .map(|r| json!({ "body": r.body, "viewerDidAuthor": !r.human, "commit": { "oid": r.commit_id } }))
            .collect();
        return json_response(
            StatusCode::OK,
            json!({ "data": { "repository": { "pullRequest": { "reviews": { "nodes": nodes } } } } }),
        );
    }
    if query.contains("reviewThreads") {
        let number = vars["number"].as_u64().unwrap_or(0);
        let nodes: Vec<Value> = s
            .reviews
            .iter()
            .filter(|r| r.pr == number)
            .flat_map(|r| r.comments.iter().map(move |c| (r.human, c)))
            .map(|(human, c)| json!({ "id": c.thread, "isResolved": c.resolved, "comments": { "nodes": [ { "body": c.body, "viewerDidAuthor": !human } ] } }))
            .collect();
        return json_response(
            StatusCode::OK,
            json!({ "data": { "repository": { "pullRequest": { "reviewThreads": { "pageInfo": { "hasNextPage": false, "endCursor": null }, "nodes": nodes } } } } }),
        );
    }
    json_response(
        StatusCode::OK,
        json!({ "errors": [ { "message": "unsupported query" } ] }),
    )
}
