//! The Git Data API a fix commit is made with: blobs, trees, commits and the branch's ref.

use http::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{GitHubError, RepoClient, encode_path};

#[derive(Debug, Clone, Deserialize)]
struct Sha {
    sha: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GitCommit {
    pub sha: String,
    pub message: String,
    pub tree: GitObject,
    #[serde(default)]
    pub html_url: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GitObject {
    pub sha: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CreatedCommit {
    pub sha: String,
    #[serde(default)]
    pub html_url: String,
}

/// An entry of a tree: `mode` 100644 (file), 100755 (executable), 120000 (symlink), 040000
/// (tree), 160000 (submodule).
#[derive(Debug, Clone, Deserialize)]
pub struct TreeEntry {
    pub path: String,
    pub mode: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub sha: String,
}

/// An entry of a recursive tree listing, as GitHub's `git-tree` schema has it: every field is
/// optional there, and `size` is given for blobs only.
#[derive(Debug, Clone, Deserialize)]
pub struct ListedEntry {
    pub path: Option<String>,
    pub mode: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub sha: Option<String>,
    pub size: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RecursiveTree {
    pub tree: Vec<ListedEntry>,
    pub truncated: bool,
}

impl RepoClient {
    /// A blob's text by its sha (immutable, so safe to fetch once and in any order).
    pub async fn blob(&self, sha: &str) -> Result<Vec<u8>, GitHubError> {
        #[derive(Deserialize)]
        struct Blob {
            content: String,
            encoding: String,
        }
        let path = format!("{}/git/blobs/{sha}", self.repo_path());
        let blob: Blob = self.call(Method::GET, &path, None).await?;
        decode_content(&blob.content, &blob.encoding).ok_or_else(|| GitHubError::Decode {
            method: Method::GET,
            path,
            message: format!("blob in unknown encoding `{}`", blob.encoding),
        })
    }

    /// A commit as the Git Data API has it.
    pub async fn git_commit(&self, sha: &str) -> Result<GitCommit, GitHubError> {
        let path = format!("{}/git/commits/{}", self.repo_path(), encode_path(sha));
        self.call(Method::GET, &path, None).await
    }

    /// The entries of one tree (one directory, not recursive).
    pub async fn tree(&self, sha: &str) -> Result<Vec<TreeEntry>, GitHubError> {
        #[derive(Deserialize)]
        struct Tree {
            tree: Vec<TreeEntry>,
        }
        let path = format!("{}/git/trees/{}", self.repo_path(), encode_path(sha));
        Ok(self.call::<Tree>(Method::GET, &path, None).await?.tree)
    }

    /// Every entry of a commit's tree, recursively (GitHub takes a commit sha where a tree sha
    /// is asked for). `truncated` when GitHub stopped listing (over 100,000 entries or 7 MB).
    pub async fn tree_recursive(&self, commit: &str) -> Result<RecursiveTree, GitHubError> {
        let path = format!(
            "{}/git/trees/{}?recursive=1",
            self.repo_path(),
            encode_path(commit)
        );
        self.call(Method::GET, &path, None).await
    }

    pub async fn create_blob(&self, content: &[u8]) -> Result<String, GitHubError> {
        use base64::Engine;
        let body = json!({
            "content": base64::engine::general_purpose::STANDARD.encode(content),
            "encoding": "base64",
        });
        let path = format!("{}/git/blobs", self.repo_path());
        Ok(self
            .call::<Sha>(Method::POST, &path, Some(&body))
            .await?
            .sha)
    }

    /// A tree that is `base` with the given (path, mode, blob) entries replaced.
    pub async fn create_tree(
        &self,
        base: &str,
        entries: &[(String, String, String)],
    ) -> Result<String, GitHubError> {
        let tree: Vec<Value> = entries
            .iter()
            .map(|(path, mode, sha)| json!({ "path": path, "mode": mode, "type": "blob", "sha": sha }))
            .collect();
        let body = json!({ "base_tree": base, "tree": tree });
        let path = format!("{}/git/trees", self.repo_path());
        Ok(self
            .call::<Sha>(Method::POST, &path, Some(&body))
            .await?
            .sha)
    }

    /// A commit with no author or committer: GitHub then makes the app both and signs the
    /// commit, which shows as Verified.
    pub async fn create_commit(
        &self,
        message: &str,
        tree: &str,
        parent: &str,
    ) -> Result<CreatedCommit, GitHubError> {
        let body = json!({ "message": message, "tree": tree, "parents": [parent] });
        let path = format!("{}/git/commits", self.repo_path());
        self.call(Method::POST, &path, Some(&body)).await
    }

    /// Where a branch points now (authoritative: a pull request's `head.sha` can lag a push).
    pub async fn branch_head(&self, branch: &str) -> Result<String, GitHubError> {
        #[derive(Deserialize)]
        struct Ref {
            object: GitObject,
        }
        let path = format!("{}/git/ref/heads/{}", self.repo_path(), encode_path(branch));
        Ok(self.call::<Ref>(Method::GET, &path, None).await?.object.sha)
    }

    /// Move a branch to `sha`, fast-forward only. GitHub answers 422 when it is not one (the
    /// branch moved since its head was read).
    pub async fn fast_forward(&self, branch: &str, sha: &str) -> Result<(), GitHubError> {
        let path = format!(
            "{}/git/refs/heads/{}",
            self.repo_path(),
            encode_path(branch)
        );
        let _: Value = self
            .call(
                Method::PATCH,
                &path,
                Some(&json!({ "sha": sha, "force": false })),
            )
            .await?;
        Ok(())
    }
}

pub(super) fn decode_content(content: &str, encoding: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    match encoding {
        "base64" => {
            let compact: String = content.chars().filter(|c| !c.is_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact)
                .ok()
        }
        "utf-8" | "utf8" => Some(content.as_bytes().to_vec()),
        _ => None,
    }
}
