//! A stateful, in-memory GitHub served over HTTP on loopback, after rust-lang/bors's test
//! harness: repositories with commits, pull requests whose `files` and `patch` hunks are computed
//! from base and head content, check runs, reviews, review threads (REST and GraphQL). It
//! verifies the app's JWT against the public key, issues installation tokens and checks them,
//! and answers a review whose comment lies outside a hunk with GitHub's 422, so a wrong anchor
//! fails the test. Every review and check run the app posts must be taken by the test, or the
//! harness fails it when the fake is dropped.
//!
//! Here: the state, what tests set and read, and the request entry (headers, faults, stalls);
//! `api` answers the app-level and GraphQL requests, `repos` a repository's REST API.

mod api;
mod repos;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use api::route;

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
    /// Recursive tree listings answered.
    tree_listings: usize,
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
            tree_listings: 0,
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

    /// How many recursive tree listings the app asked for.
    pub fn tree_listings(&self) -> usize {
        self.lock().tree_listings
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
