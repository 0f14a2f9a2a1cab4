//! The fake's API surface: routing, the app's JWT and installation tokens, the manifest flow's
//! pages and conversion, and GraphQL.

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{Value, json};

use super::repos::repo_request;
use super::*;

/// Answer a request (after faults and stalls).
pub(super) fn route(
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
