//! The real binary, killed with SIGKILL in the middle of a job and right after it posted its
//! review, then started again: the review and the check run exist exactly once. Its logs of the
//! whole run hold no secret.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{
    APP_ID, FakeGitHub, INSTALLATION, REPO, SECRET, deliver_to, pull_request_event,
};

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n    - name: c\n      image: nginx:1.27\n";

pub(crate) struct App {
    pub child: Child,
    pub url: String,
}

fn start(github: &str, db: &str, port: u16, log: &std::path::Path) -> App {
    start_with(github, db, port, log, &[])
}

/// The real binary, serving on `port` with the test app's credentials and `env` besides.
pub(crate) fn start_with(
    github: &str,
    db: &str,
    port: u16,
    log: &std::path::Path,
    env: &[(&str, &str)],
) -> App {
    let key = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/github/test-app-key.pem");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_kubeharden"))
        .arg("serve")
        .env("APP_ID", APP_ID.to_string())
        .env("PRIVATE_KEY_PATH", key)
        .env("WEBHOOK_SECRET", SECRET)
        .env("GITHUB_API_URL", github)
        .env("DATABASE_URL", db)
        .env("LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "debug")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    App {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

pub(crate) async fn ready(app: &App) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(app.url.trim_start_matches("http://")).is_ok() {
            let (status, _) = crate::support::get(&app.url, "/readyz").await;
            if status == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the app did not become ready");
}

pub(crate) fn kill(mut app: App) {
    // SIGKILL: no chance to release anything.
    app.child.kill().unwrap();
    app.child.wait().unwrap();
}

async fn until(mut done: impl FnMut() -> bool) {
    for _ in 0..600 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out");
}

/// A fake GitHub holding one pull request that adds an insecure Pod.
async fn github_with_pr(number: u64) -> FakeGitHub {
    let key = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/github/test-app-key.pub.pem"),
    )
    .unwrap();
    let github = FakeGitHub::start(APP_ID, &key).await;
    github.install(INSTALLATION, REPO);
    github.commit(REPO, "base", &[]);
    github.commit(REPO, "head", &[("pod.yaml", POD)]);
    github.open_pr(REPO, number, "base", "head");
    github
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_job_and_after_posting_the_review_posts_everything_exactly_once() {
    let github = github_with_pr(1).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let db = format!("sqlite://{}", dir.join("kubeharden.db").display());
    let log = dir.join("app.log");
    let port = crate::support::free_port();

    // 1. Killed while the job runs: the blob fetch hangs long enough.
    github.stall(http::Method::GET, "/git/blobs/", Duration::from_secs(30), 1);
    let app = start(&github.url, &db, port, &log);
    ready(&app).await;
    let event = pull_request_event("opened", 1, "base", "head");
    assert_eq!(
        deliver_to(&app.url, "pull_request", &event, Some(SECRET), "delivery-1").await,
        202
    );
    until(|| github.calls().iter().any(|c| c.contains("/git/blobs/"))).await;
    kill(app);

    // 2. Started again: a lone SQLite replica requeues the dead run's job at once (no waiting
    //    out its lease), and this time it is killed right after posting the review
    //    (completing the check run hangs).
    github.stall(
        http::Method::PATCH,
        "/check-runs/",
        Duration::from_secs(30),
        1,
    );
    let restarted = std::time::Instant::now();
    let app = start(&github.url, &db, port, &log);
    ready(&app).await;
    until(|| {
        github
            .calls()
            .iter()
            .any(|c| c.starts_with("POST") && c.contains("/reviews"))
    })
    .await;
    let restart_to_review = restarted.elapsed();
    println!("SIGKILL mid-job, restart -> review posted: {restart_to_review:?} (SQLite)");
    // The target is 15 s; the dead worker's lease alone was 120 s.
    assert!(
        restart_to_review < Duration::from_secs(15),
        "{restart_to_review:?}"
    );
    until(|| {
        github
            .calls()
            .iter()
            .any(|c| c.starts_with("PATCH") && c.contains("/check-runs/"))
    })
    .await;
    kill(app);

    // 3. Started once more: the job finds its check run and its review and only completes.
    let app = start(&github.url, &db, port, &log);
    ready(&app).await;
    until(|| {
        let calls = github.calls();
        calls
            .iter()
            .filter(|c| c.starts_with("PATCH") && c.contains("/check-runs/"))
            .count()
            >= 2
    })
    .await;
    // The redelivery of the same GUID is acknowledged and changes nothing.
    assert_eq!(
        deliver_to(&app.url, "pull_request", &event, Some(SECRET), "delivery-1").await,
        200
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    kill(app);

    let reviews = github.take_reviews();
    assert_eq!(reviews.len(), 1, "the review exists exactly once");
    let runs = github.take_check_runs();
    assert_eq!(runs.len(), 1, "the check run exists exactly once");
    assert_eq!(runs[0].status, "completed");

    // No secret in any log line of the whole run.
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(logs.contains("job queued"), "the log is empty?\n{logs}");
    assert!(!logs.contains(SECRET));
    let private = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/github/test-app-key.pem"),
    )
    .unwrap();
    for line in private.lines().filter(|l| !l.starts_with("-----")) {
        assert!(
            !logs.contains(line),
            "a line of the private key is in the log"
        );
    }
    for token in github.issued_tokens() {
        assert!(
            !logs.contains(&token),
            "an installation token is in the log"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_running_job_finish_then_exits() {
    let github = github_with_pr(2).await;
    let tmp = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", tmp.path().join("kubeharden.db").display());
    // The job is mid-flight (its blob takes a second) when the signal comes.
    github.stall(http::Method::GET, "/git/blobs/", Duration::from_secs(1), 1);
    let mut app = start(
        &github.url,
        &db,
        crate::support::free_port(),
        &tmp.path().join("app.log"),
    );
    ready(&app).await;
    let event = pull_request_event("opened", 2, "base", "head");
    assert_eq!(
        deliver_to(&app.url, "pull_request", &event, Some(SECRET), "delivery-2").await,
        202
    );
    until(|| github.calls().iter().any(|c| c.contains("/git/blobs/"))).await;
    let pid = app.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::task::spawn_blocking(move || app.child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    // The job was allowed to finish within the grace period.
    let runs = github.take_check_runs();
    assert_eq!((runs.len(), runs[0].status.as_str()), (1, "completed"));
    assert_eq!(github.take_reviews().len(), 1);
}
