//! The durable job queue: a delivery is accepted only once it and its job are stored, in one
//! transaction. Workers claim jobs with a lease; a job whose worker died is claimable again when
//! its lease runs out. One job per pull request runs at a time, and only the newest head of a
//! pull request is ever claimed (older queued ones finish as `superseded`).
//!
//! One schema and one set of queries serve the embedded default (SQLite, WAL) and PostgreSQL
//! (several replicas, `FOR UPDATE SKIP LOCKED`), through sqlx's `Any` driver. It is a table of
//! our own rather than a queue library: the per-pull-request rules (supersede, one at a time)
//! are queries on that table, which no general-purpose queue offers.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Row};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Running,
    Done,
    Superseded,
    Dead,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Superseded => "superseded",
            JobState::Dead => "dead",
        }
    }

    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Done,
        JobState::Superseded,
        JobState::Dead,
    ];
}

impl std::str::FromStr for JobState {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownValue::new("job state", s, JobState::ALL.map(JobState::as_str)))
    }
}

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// Review a pull request's head (from a `pull_request` delivery).
    Review,
    /// A `/kubeharden` command or a check-run button (a `commands::Command` payload).
    Command,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Review => "review",
            JobKind::Command => "command",
        }
    }

    pub const ALL: [JobKind; 2] = [JobKind::Review, JobKind::Command];
}

impl std::str::FromStr for JobKind {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownValue::new("job kind", s, JobKind::ALL.map(JobKind::as_str)))
    }
}

/// A stored or typed value this version does not know (a row written by a newer version, a
/// hand-edited database, a typo on the command line), named with the values it does know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{value}` (expected one of: {})", .known.join(", "))]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: String,
    pub known: Vec<&'static str>,
}

impl UnknownValue {
    fn new<const N: usize>(what: &'static str, value: &str, known: [&'static str; N]) -> Self {
        Self {
            what,
            value: value.to_string(),
            known: known.to_vec(),
        }
    }
}

/// A job to store with its delivery.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: JobKind,
    pub repo: String,
    pub pr: u64,
    /// The head a review is for (the newest wins), or the one a button was pressed on; `None`
    /// for a comment's command.
    pub head_sha: Option<String>,
    /// The event payload the job runs from.
    pub payload: String,
}

#[derive(Debug, Clone)]
pub struct Job {
    pub id: i64,
    pub kind: JobKind,
    pub delivery: String,
    pub repo: String,
    pub pr: u64,
    pub head_sha: Option<String>,
    pub payload: String,
    pub state: JobState,
    /// Attempts started so far, this one included once claimed.
    pub attempts: u32,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    Stored,
    /// The delivery id was seen before (a redelivery): acknowledged, not processed twice.
    Duplicate,
}

pub struct Store {
    pool: AnyPool,
    pub backend: Backend,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Schema migrations, applied in order at start-up: (version, SQL). The one word the two
/// databases spell differently, an auto-incrementing key, is written `{serial}`.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "CREATE TABLE deliveries (id TEXT PRIMARY KEY, event TEXT NOT NULL, received_at BIGINT NOT NULL);
     CREATE TABLE jobs (
        id {serial},
        delivery TEXT NOT NULL, repo TEXT NOT NULL, pr BIGINT NOT NULL, head_sha TEXT NOT NULL,
        payload TEXT NOT NULL, state TEXT NOT NULL, attempts BIGINT NOT NULL DEFAULT 0,
        run_after BIGINT NOT NULL, lease_until BIGINT, worker TEXT, last_error TEXT,
        created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL);
     CREATE INDEX jobs_claim ON jobs (state, run_after);
     CREATE INDEX jobs_pr ON jobs (repo, pr);",
    ),
    (
        2,
        "ALTER TABLE jobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'review'",
    ),
];

impl Store {
    /// Open (creating an SQLite file on first start) and migrate.
    pub async fn open(url: &str) -> Result<Store> {
        install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            bail!("unsupported database URL scheme (expected sqlite:// or postgres://)");
        };
        let url = match backend {
            // Create the file on first start; WAL lets readers run beside the writer.
            Backend::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_string(),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 1 } else { 8 })
            .acquire_timeout(Duration::from_secs(5))
            .connect(&url)
            .await
            .context("cannot open the database")?;
        if backend == Backend::Sqlite {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
            sqlx::query("PRAGMA busy_timeout = 5000")
                .execute(&pool)
                .await?;
        }
        let store = Store { pool, backend };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("CREATE TABLE IF NOT EXISTS kubeharden_schema (version BIGINT NOT NULL)")
            .execute(&mut *tx)
            .await?;
        if self.backend == Backend::Postgres {
            // Two replicas starting together must not migrate twice.
            sqlx::query("LOCK TABLE kubeharden_schema IN EXCLUSIVE MODE")
                .execute(&mut *tx)
                .await?;
        }
        let current: i64 =
            sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM kubeharden_schema")
                .fetch_one(&mut *tx)
                .await?
                .try_get("v")?;
        let serial = match self.backend {
            Backend::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
            Backend::Postgres => "BIGSERIAL PRIMARY KEY",
        };
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
            let sql = sql.replace("{serial}", serial);
            for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                sqlx::query(sqlx::AssertSqlSafe(statement))
                    .execute(&mut *tx)
                    .await
                    .with_context(|| format!("migration {version} failed"))?;
            }
            sqlx::query("INSERT INTO kubeharden_schema (version) VALUES ($1)")
                .bind(*version)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Close every connection (shutdown; tests simulating an outage).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// Store a delivery and, when it asks for work, its job, in one transaction.
    pub async fn accept(
        &self,
        delivery: &str,
        event: &str,
        job: Option<&NewJob>,
    ) -> Result<Accepted> {
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        let inserted = sqlx::query("INSERT INTO deliveries (id, event, received_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING")
            .bind(delivery)
            .bind(event)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Ok(Accepted::Duplicate);
        }
        if let Some(job) = job {
            sqlx::query(
                "INSERT INTO jobs (delivery, kind, repo, pr, head_sha, payload, state, attempts, run_after, created_at, updated_at)
                 VALUES ($1, $7, $2, $3, $4, $5, 'queued', 0, $6, $6, $6)",
            )
            .bind(delivery)
            .bind(&job.repo)
            .bind(job.pr as i64)
            .bind(job.head_sha.as_deref().unwrap_or(""))
            .bind(&job.payload)
            .bind(now)
            .bind(job.kind.as_str())
            .execute(&mut *tx)
            .await?;
            // Older queued reviews of the pull request will never run: the newest head wins.
            // Commands are never superseded: each was asked for by someone.
            if job.kind == JobKind::Review {
                sqlx::query(
                "UPDATE jobs SET state = 'superseded', updated_at = $1
                 WHERE repo = $2 AND pr = $3 AND state = 'queued' AND head_sha <> $4 AND kind = 'review'",
            )
            .bind(now)
            .bind(&job.repo)
            .bind(job.pr as i64)
            .bind(job.head_sha.as_deref().unwrap_or(""))
            .execute(&mut *tx)
            .await?;
            }
        }
        tx.commit().await?;
        Ok(Accepted::Stored)
    }

    /// Claim the next runnable job: queued and due, or running with an expired lease; for a
    /// review, the newest review of its pull request; no other job of that pull request
    /// running (a commit and a review of one pull request never race each other).
    pub async fn claim(&self, worker: &str, lease: Duration) -> Result<Option<Job>> {
        let now = now_ms();
        let lock = if self.backend == Backend::Postgres {
            "FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        // Only kinds this version runs: a replica of a newer version may store others.
        let kinds = JobKind::ALL.map(|k| format!("'{}'", k.as_str())).join(", ");
        let sql = format!(
            "UPDATE jobs SET state = 'running', lease_until = $1, worker = $2, attempts = attempts + 1, updated_at = $3
             WHERE id = (
               SELECT j.id FROM jobs j
               WHERE ((j.state = 'queued' AND j.run_after <= $3) OR (j.state = 'running' AND j.lease_until < $3))
                 AND j.kind IN ({kinds})
                 AND (j.kind <> 'review' OR NOT EXISTS (SELECT 1 FROM jobs n WHERE n.repo = j.repo AND n.pr = j.pr AND n.id > j.id
                                 AND n.kind = 'review' AND n.state IN ('queued', 'running')))
                 AND NOT EXISTS (SELECT 1 FROM jobs r WHERE r.repo = j.repo AND r.pr = j.pr AND r.id <> j.id
                                 AND r.state = 'running' AND r.lease_until >= $3)
               ORDER BY j.id LIMIT 1 {lock})
             RETURNING id, kind, delivery, repo, pr, head_sha, payload, state, attempts, last_error"
        );
        // The only variable parts are our own lock clause and kind names.
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now + lease.as_millis() as i64)
            .bind(worker)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| job_from_row(&r)).transpose()
    }

    /// Extend `worker`'s lease on a running job (a long job must not look dead); false when the
    /// job is no longer its own (the lease ran out and another worker took the job).
    pub async fn heartbeat(&self, id: i64, worker: &str, lease: Duration) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE jobs SET lease_until = $1 WHERE id = $2 AND state = 'running' AND worker = $3",
        )
        .bind(now_ms() + lease.as_millis() as i64)
        .bind(id)
        .bind(worker)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// At the start of a lone replica on SQLite: every running job is an orphan of a process
    /// that died (one process owns the file), so it is queued again at once instead of
    /// waiting out its lease. Its attempt stays counted: a job that kills the process is not
    /// run for ever. PostgreSQL is shared by replicas, whose running jobs are alive; there an
    /// orphan waits for its short lease. Returns the jobs requeued.
    pub async fn requeue_orphans(&self) -> Result<u64> {
        if self.backend != Backend::Sqlite {
            return Ok(0);
        }
        let now = now_ms();
        let n = sqlx::query(
            "UPDATE jobs SET state = 'queued', lease_until = NULL, run_after = $1, updated_at = $1 WHERE state = 'running'",
        )
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n)
    }

    pub async fn finish(&self, id: i64, state: JobState, error: Option<&str>) -> Result<()> {
        sqlx::query("UPDATE jobs SET state = $1, lease_until = NULL, last_error = $2, updated_at = $3 WHERE id = $4")
            .bind(state.as_str())
            .bind(error)
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Put a failed job back in the queue, to run again after `delay`.
    pub async fn retry_later(&self, id: i64, delay: Duration, error: &str) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "UPDATE jobs SET state = 'queued', lease_until = NULL, run_after = $1, last_error = $2, updated_at = $3 WHERE id = $4",
        )
        .bind(now + delay.as_millis() as i64)
        .bind(error)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Give back a claimed job without counting the attempt (shutdown).
    pub async fn release(&self, id: i64) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET state = 'queued', lease_until = NULL, attempts = attempts - 1, updated_at = $1 WHERE id = $2 AND state = 'running'",
        )
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Jobs queued (due or waiting for a retry) or running: the work in hand.
    pub async fn pending(&self) -> Result<i64> {
        let row =
            sqlx::query("SELECT COUNT(*) AS n FROM jobs WHERE state IN ('queued', 'running')")
                .fetch_one(&self.pool)
                .await?;
        Ok(row.try_get("n")?)
    }

    /// How many jobs are in each state.
    pub async fn counts(&self) -> Result<Vec<(String, i64)>> {
        let rows =
            sqlx::query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state ORDER BY state")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<String, _>("state")?, r.try_get::<i64, _>("n")?)))
            .collect()
    }

    /// Jobs, newest first, optionally only in one state.
    pub async fn list(&self, state: Option<JobState>, limit: i64) -> Result<Vec<Job>> {
        let rows = match state {
            Some(s) => sqlx::query(
                "SELECT id, kind, delivery, repo, pr, head_sha, payload, state, attempts, last_error FROM jobs WHERE state = $1 ORDER BY id DESC LIMIT $2",
            )
            .bind(s.as_str())
            .bind(limit)
            .fetch_all(&self.pool)
            .await?,
            None => sqlx::query(
                "SELECT id, kind, delivery, repo, pr, head_sha, payload, state, attempts, last_error FROM jobs ORDER BY id DESC LIMIT $1",
            )
            .bind(limit)
            .fetch_all(&self.pool)
            .await?,
        };
        rows.iter().map(job_from_row).collect()
    }

    /// Queue a job again with fresh attempts (an operator re-running a dead job).
    pub async fn requeue(&self, id: i64) -> Result<bool> {
        let now = now_ms();
        let n = sqlx::query(
            "UPDATE jobs SET state = 'queued', attempts = 0, run_after = $1, lease_until = NULL, updated_at = $1 WHERE id = $2 AND state IN ('dead', 'done', 'superseded')",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }
}

/// How long a claim holds by default. Short, so that a crashed replica's job is taken up
/// within seconds; the worker renews it every third of it while the job runs.
pub const LEASE: Duration = Duration::from_secs(15);
/// Attempts before a job is `dead`.
pub const MAX_ATTEMPTS: u32 = 5;

/// Exponential backoff with ±20 % jitter from a base delay, capped at an hour.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(16)));
    let capped = exp.min(Duration::from_secs(3600));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let jitter = 0.8 + f64::from(nanos % 400) / 1000.0;
    capped.mul_f64(jitter)
}

fn job_from_row(r: &sqlx::any::AnyRow) -> Result<Job> {
    let id: i64 = r.try_get("id")?;
    let head_sha: String = r.try_get("head_sha")?;
    Ok(Job {
        id,
        kind: r
            .try_get::<String, _>("kind")?
            .parse()
            .with_context(|| format!("job {id}"))?,
        delivery: r.try_get("delivery")?,
        repo: r.try_get("repo")?,
        pr: r.try_get::<i64, _>("pr")? as u64,
        head_sha: Some(head_sha).filter(|h| !h.is_empty()),
        payload: r.try_get("payload")?,
        state: r
            .try_get::<String, _>("state")?
            .parse()
            .with_context(|| format!("job {id}"))?,
        attempts: r.try_get::<i64, _>("attempts")? as u32,
        last_error: r.try_get("last_error")?,
    })
}

/// A fresh, empty PostgreSQL database for a test, from the admin URL in
/// `KUBEHARDEN_TEST_POSTGRES` (`.ci/run` starts a server and sets it); `None` without one.
pub async fn test_postgres_database() -> Option<String> {
    let admin = std::env::var("KUBEHARDEN_TEST_POSTGRES").ok()?;
    install_default_drivers();
    let pool = AnyPoolOptions::new()
        .max_connections(1)
        .connect(&admin)
        .await
        .ok()?;
    let name = format!(
        "kubeharden_test_{:x}",
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) ^ i64::from(std::process::id())
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&pool)
        .await
        .ok()?;
    pool.close().await;
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    Some(format!("{base}/{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(pr: u64, head: &str) -> NewJob {
        NewJob {
            kind: JobKind::Review,
            repo: "acme/deploy".into(),
            pr,
            head_sha: Some(head.into()),
            payload: "{}".into(),
        }
    }

    /// Claim with a minute's lease.
    async fn next(s: &Store, worker: &str) -> Option<Job> {
        s.claim(worker, Duration::from_secs(60)).await.unwrap()
    }

    async fn store_job(s: &Store, delivery: &str, job: NewJob) {
        s.accept(delivery, "pull_request", Some(&job))
            .await
            .unwrap();
    }

    /// The same test on SQLite, and on PostgreSQL when a server is configured.
    async fn stores() -> (Vec<std::sync::Arc<Store>>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("kh.db").display());
        let mut stores = vec![std::sync::Arc::new(Store::open(&url).await.unwrap())];
        if let Some(pg) = test_postgres_database().await {
            stores.push(std::sync::Arc::new(Store::open(&pg).await.unwrap()));
        } else {
            eprintln!("KUBEHARDEN_TEST_POSTGRES not set: PostgreSQL skipped");
        }
        (stores, dir)
    }

    #[test]
    fn states_and_kinds_parse_back_and_unknown_values_are_errors() {
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>(), Ok(s));
        }
        for k in JobKind::ALL {
            assert_eq!(k.as_str().parse::<JobKind>(), Ok(k));
        }
        let err = "paused".parse::<JobState>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown job state `paused` (expected one of: queued, running, done, superseded, dead)"
        );
        assert!("Queued".parse::<JobState>().is_err());
        assert!("".parse::<JobKind>().is_err());
        assert_eq!(
            "admission".parse::<JobKind>().unwrap_err().to_string(),
            "unknown job kind `admission` (expected one of: review, command)"
        );
    }

    #[tokio::test]
    async fn a_row_this_version_does_not_know_is_an_error_not_a_queued_review() {
        let (stores, _d) = stores().await;
        for s in &stores {
            store_job(s, "d1", job(1, "a")).await;
            store_job(s, "d2", job(2, "b")).await;
            sqlx::query("UPDATE jobs SET state = 'paused' WHERE delivery = 'd1'")
                .execute(&s.pool)
                .await
                .unwrap();
            sqlx::query("UPDATE jobs SET kind = 'admission' WHERE delivery = 'd2'")
                .execute(&s.pool)
                .await
                .unwrap();
            let err = format!("{:#}", s.list(None, 10).await.unwrap_err());
            assert!(err.contains("unknown job"), "{:?}: {err}", s.backend);
            assert!(err.starts_with("job "), "{:?}: {err}", s.backend);
            // A kind of a newer version stays queued for a replica that knows it.
            assert!(next(s, "w").await.is_none(), "{:?}", s.backend);
        }
    }

    #[tokio::test]
    async fn a_redelivery_is_acknowledged_once() {
        let (stores, _d) = stores().await;
        for s in &stores {
            assert_eq!(
                s.accept("d1", "pull_request", Some(&job(1, "a")))
                    .await
                    .unwrap(),
                Accepted::Stored
            );
            assert_eq!(
                s.accept("d1", "pull_request", Some(&job(1, "a")))
                    .await
                    .unwrap(),
                Accepted::Duplicate
            );
            assert_eq!(s.list(None, 10).await.unwrap().len(), 1, "{:?}", s.backend);
        }
    }

    #[tokio::test]
    async fn the_newest_head_supersedes_and_one_job_per_pr_runs() {
        let (stores, _d) = stores().await;
        for s in &stores {
            store_job(s, "d1", job(1, "a")).await;
            store_job(s, "d2", job(1, "b")).await;
            store_job(s, "d3", job(2, "x")).await;
            let first = next(s, "w1").await.unwrap();
            assert_eq!((first.pr, first.head_sha.as_deref()), (1, Some("b")));
            let second = next(s, "w2").await.unwrap();
            assert_eq!(second.pr, 2);
            // A new head for PR 1 while its job runs: queued, not claimable until the first ends.
            store_job(s, "d4", job(1, "c")).await;
            assert!(next(s, "w3").await.is_none());
            s.finish(first.id, JobState::Done, None).await.unwrap();
            let third = next(s, "w3").await.unwrap();
            assert_eq!(third.head_sha.as_deref(), Some("c"));
            let states: Vec<(Option<String>, JobState)> = s
                .list(None, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|j| (j.head_sha, j.state))
                .collect();
            assert!(
                states.contains(&(Some("a".into()), JobState::Superseded)),
                "{:?}",
                s.backend
            );
        }
    }

    #[tokio::test]
    async fn commands_run_in_order_beside_reviews_and_are_never_superseded() {
        let (stores, _d) = stores().await;
        let command = |pr| NewJob {
            kind: JobKind::Command,
            head_sha: None,
            ..job(pr, "")
        };
        for s in &stores {
            store_job(s, "d1", job(1, "a")).await;
            store_job(s, "c1", command(1)).await;
            store_job(s, "c2", command(1)).await;
            // A new head supersedes the older review, not the commands.
            store_job(s, "d2", job(1, "b")).await;
            let mut order = Vec::new();
            while let Some(j) = next(s, "w").await {
                // One job of a pull request at a time, whatever its kind.
                assert!(next(s, "w2").await.is_none(), "{:?}", s.backend);
                order.push((j.kind, j.delivery.clone()));
                s.finish(j.id, JobState::Done, None).await.unwrap();
            }
            assert_eq!(
                order,
                [
                    (JobKind::Command, "c1".to_string()),
                    (JobKind::Command, "c2".to_string()),
                    (JobKind::Review, "d2".to_string()),
                ],
                "{:?}",
                s.backend
            );
        }
    }

    #[tokio::test]
    async fn an_expired_lease_makes_a_job_claimable_again() {
        let (stores, _d) = stores().await;
        for s in &stores {
            store_job(s, "d1", job(1, "a")).await;
            let j = s
                .claim("dead-worker", Duration::from_millis(1))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(j.attempts, 1);
            tokio::time::sleep(Duration::from_millis(5)).await;
            let again = next(s, "w2").await.unwrap();
            assert_eq!((again.id, again.attempts), (j.id, 2), "{:?}", s.backend);
        }
    }

    #[tokio::test]
    async fn a_renewed_lease_holds_and_a_stopped_heartbeat_loses_it() {
        let (stores, _d) = stores().await;
        let lease = Duration::from_millis(400);
        for s in &stores {
            store_job(s, "d1", job(1, "a")).await;
            let j = s.claim("w1", lease).await.unwrap().unwrap();
            // Renewed every third of the lease for three leases: nobody else gets the job.
            for _ in 0..9 {
                tokio::time::sleep(lease / 3).await;
                assert!(s.heartbeat(j.id, "w1", lease).await.unwrap());
                assert!(
                    s.claim("w2", lease).await.unwrap().is_none(),
                    "{:?}",
                    s.backend
                );
            }
            // The heartbeat stops (the process hangs or dies): within a lease the job is w2's.
            let stopped = std::time::Instant::now();
            let taken = loop {
                if let Some(taken) = s.claim("w2", lease).await.unwrap() {
                    break taken;
                }
                assert!(stopped.elapsed() < lease * 3, "{:?}", s.backend);
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            assert_eq!((taken.id, taken.attempts), (j.id, 2));
            // And w1 learns it at its next heartbeat, without taking the lease back.
            assert!(!s.heartbeat(j.id, "w1", lease).await.unwrap());
            assert!(s.heartbeat(j.id, "w2", lease).await.unwrap());
        }
    }

    #[tokio::test]
    async fn a_lone_sqlite_replica_requeues_its_predecessors_running_jobs_at_once() {
        let (stores, _d) = stores().await;
        for s in &stores {
            store_job(s, "d1", job(1, "a")).await;
            let j = s
                .claim("dead-worker", Duration::from_secs(3600))
                .await
                .unwrap()
                .unwrap();
            let requeued = s.requeue_orphans().await.unwrap();
            match s.backend {
                Backend::Sqlite => {
                    assert_eq!(requeued, 1);
                    let again = next(s, "w2").await.unwrap();
                    // The crashed run stays counted.
                    assert_eq!((again.id, again.attempts), (j.id, 2));
                }
                // Replicas share PostgreSQL: a running job there may be alive.
                Backend::Postgres => {
                    assert_eq!(requeued, 0);
                    assert!(next(s, "w2").await.is_none());
                }
            }
        }
    }

    #[tokio::test]
    async fn retries_wait_and_operators_can_requeue_dead_jobs() {
        let (stores, _d) = stores().await;
        for s in &stores {
            store_job(s, "d1", job(1, "a")).await;
            let j = next(s, "w").await.unwrap();
            s.retry_later(j.id, Duration::from_secs(3600), "502")
                .await
                .unwrap();
            assert!(next(s, "w").await.is_none());
            s.finish(j.id, JobState::Dead, Some("404 Not Found"))
                .await
                .unwrap();
            let dead = s.list(Some(JobState::Dead), 10).await.unwrap();
            assert_eq!(dead[0].last_error.as_deref(), Some("404 Not Found"));
            assert!(s.requeue(j.id).await.unwrap());
            assert_eq!(next(s, "w").await.unwrap().id, j.id, "{:?}", s.backend);
        }
    }

    #[tokio::test]
    async fn concurrent_claims_never_take_the_same_job() {
        let (stores, _d) = stores().await;
        for s in &stores {
            for pr in 0..20 {
                s.accept(&format!("d{pr}"), "pull_request", Some(&job(pr, "h")))
                    .await
                    .unwrap();
            }
            // Twenty workers claim at once (separate connections on PostgreSQL).
            let tasks: Vec<_> = (0..20)
                .map(|i| {
                    let s = s.clone();
                    tokio::spawn(async move { next(&s, &format!("w{i}")).await.map(|j| j.id) })
                })
                .collect();
            let mut ids = Vec::new();
            for t in tasks {
                ids.extend(t.await.unwrap());
            }
            let n = ids.len();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), n, "{:?}: a job was claimed twice", s.backend);
            assert_eq!(n, 20, "{:?}", s.backend);
        }
    }
}
