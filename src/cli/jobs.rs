//! `kubeharden jobs`: see and re-run the app's jobs.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;

use super::serve::DatabaseArgs;

#[derive(clap::Args)]
pub struct JobsArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(subcommand)]
    action: JobsAction,
}

#[derive(Subcommand)]
enum JobsAction {
    /// The newest jobs, with their state, attempts and last error.
    List {
        /// Only jobs in this state: queued, running, done, superseded or dead.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Queue a finished or dead job again, with fresh attempts.
    Retry { id: i64 },
}

pub fn run(args: JobsArgs) -> Result<ExitCode> {
    use kubeharden::jobs::{JobState, Store};
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let store = Store::open(&args.database.database_url).await?;
        match args.action {
            JobsAction::List { state, limit } => {
                let state = state
                    .as_deref()
                    .map(str::parse::<JobState>)
                    .transpose()
                    .context("--state")?;
                println!(
                    "{:>6}  {:<8}  {:<10}  {:>8}  {:<30}  {:>6}  {:<12}  LAST ERROR",
                    "ID", "KIND", "STATE", "ATTEMPTS", "REPOSITORY", "PR", "HEAD"
                );
                for j in store.list(state, limit).await? {
                    println!(
                        "{:>6}  {:<8}  {:<10}  {:>8}  {:<30}  {:>6}  {:<12}  {}",
                        j.id,
                        j.kind.as_str(),
                        j.state.as_str(),
                        j.attempts,
                        j.repo,
                        j.pr,
                        j.head_sha
                            .as_deref()
                            .map_or(String::new(), |h| h.chars().take(12).collect()),
                        j.last_error
                            .unwrap_or_default()
                            .lines()
                            .next()
                            .unwrap_or("")
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            JobsAction::Retry { id } => {
                if store.requeue(id).await? {
                    println!("job {id} queued again");
                    Ok(ExitCode::SUCCESS)
                } else {
                    bail!("job {id} does not exist or is queued or running already")
                }
            }
        }
    })
}
