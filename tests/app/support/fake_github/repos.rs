//! A repository's REST API as the fake serves it: pull requests and their files, contents,
//! blobs, the Git Data API, check runs, reviews and comments.

use std::collections::BTreeMap;

use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;
use base64::Engine;
use serde_json::{Value, json};

use super::*;

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

pub(super) fn repo_request(
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
        // GitHub takes a commit sha (or ref) for the tree too; `recursive` lists every entry
        // with its full path, as the `git-tree` schema has it: `size` for blobs only, and
        // `truncated` always there.
        (Method::GET, ["git", "trees", sha])
            if repo.commits.contains_key(*sha) || query_param(uri, "recursive").is_some() =>
        {
            let files = repo.commits.get(*sha).cloned();
            let modes = repo.modes.clone();
            let root = match files {
                Some(files) => build_tree(s, &files, &modes),
                None => sha.to_string(),
            };
            let Some(files) = s.root_files.get(&root).cloned() else {
                return error(StatusCode::NOT_FOUND, "Not Found");
            };
            s.tree_listings += 1;
            let mut dirs = std::collections::BTreeSet::new();
            let mut tree = Vec::new();
            for (path, content) in &files {
                let mut d = path.as_str();
                while let Some((parent, _)) = d.rsplit_once('/') {
                    dirs.insert(parent.to_string());
                    d = parent;
                }
                let mode = modes.get(path).cloned().unwrap_or("100644".into());
                let blob = blob_sha(content);
                tree.push(json!({ "path": path, "mode": mode, "type": "blob", "sha": blob, "size": content.len(), "url": format!("https://api.github.com/repos/{repo_name}/git/blobs/{blob}") }));
            }
            for d in dirs {
                tree.push(json!({ "path": d, "mode": "040000", "type": "tree", "sha": object_sha("tree", &d) }));
            }
            json_response(
                StatusCode::OK,
                json!({ "sha": root, "url": format!("https://api.github.com/repos/{repo_name}/git/trees/{root}"), "tree": tree, "truncated": false }),
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
