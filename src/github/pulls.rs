//! A pull request as GitHub has it now: its head, its changed files, and files at a commit.

use http::Method;
use serde::Deserialize;

use super::git::decode_content;
use super::{GitHubError, RepoClient, encode_path, events};

/// A changed file of a pull request, as `GET /pulls/{n}/files` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct ChangedFile {
    pub filename: String,
    pub status: String,
    pub sha: String,
    #[serde(default)]
    pub patch: Option<String>,
}

impl RepoClient {
    /// The files a pull request changes, 100 a page, at most the 3000 GitHub lists.
    pub async fn changed_files(&self, pr: u64) -> Result<Vec<ChangedFile>, GitHubError> {
        let mut files = Vec::new();
        for page in 1..=30 {
            let path = format!(
                "{}/pulls/{pr}/files?per_page=100&page={page}",
                self.repo_path()
            );
            let batch: Vec<ChangedFile> = self.call(Method::GET, &path, None).await?;
            let last = batch.len() < 100;
            files.extend(batch);
            if last {
                break;
            }
        }
        Ok(files)
    }

    /// A file's bytes at a commit, `None` when it does not exist there.
    pub async fn file_at(&self, file: &str, commit: &str) -> Result<Option<Vec<u8>>, GitHubError> {
        #[derive(Deserialize)]
        struct Content {
            content: Option<String>,
            encoding: Option<String>,
        }
        let path = format!(
            "{}/contents/{}?ref={}",
            self.repo_path(),
            encode_path(file),
            encode_path(commit)
        );
        match self.call::<Content>(Method::GET, &path, None).await {
            Ok(c) => Ok(c
                .content
                .zip(c.encoding)
                .and_then(|(content, encoding)| decode_content(&content, &encoding))),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The pull request's current head sha.
    pub async fn pull_request_head(&self, pr: u64) -> Result<String, GitHubError> {
        #[derive(Deserialize)]
        struct Pull {
            head: Head,
        }
        #[derive(Deserialize)]
        struct Head {
            sha: String,
        }
        let pull: Pull = self
            .call(
                Method::GET,
                &format!("{}/pulls/{pr}", self.repo_path()),
                None,
            )
            .await?;
        Ok(pull.head.sha)
    }

    /// The pull request as GitHub has it now.
    pub async fn pull_request(&self, pr: u64) -> Result<events::PullRequest, GitHubError> {
        self.call(
            Method::GET,
            &format!("{}/pulls/{pr}", self.repo_path()),
            None,
        )
        .await
    }
}
