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
    /// The blob at the head; GitHub's description lets it be `null`.
    pub sha: Option<String>,
    #[serde(default)]
    pub patch: Option<String>,
}

/// What a path holds at a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileAt {
    File(Vec<u8>),
    Directory,
    Missing,
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

    /// A file's bytes at a commit: missing when nothing (or no readable file) is there, and a
    /// directory when the path names one (GitHub then answers its listing, an array).
    pub async fn file_at(&self, file: &str, commit: &str) -> Result<FileAt, GitHubError> {
        #[derive(Deserialize)]
        struct Content {
            content: Option<String>,
            encoding: Option<String>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Answer {
            Listing(#[allow(dead_code)] Vec<serde::de::IgnoredAny>),
            Content(Content),
        }
        let path = format!(
            "{}/contents/{}?ref={}",
            self.repo_path(),
            encode_path(file),
            encode_path(commit)
        );
        match self.call::<Answer>(Method::GET, &path, None).await {
            Ok(Answer::Listing(_)) => Ok(FileAt::Directory),
            Ok(Answer::Content(c)) => Ok(c
                .content
                .zip(c.encoding)
                .and_then(|(content, encoding)| decode_content(&content, &encoding))
                .map_or(FileAt::Missing, FileAt::File)),
            Err(e) if e.status() == Some(404) => Ok(FileAt::Missing),
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
