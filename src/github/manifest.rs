//! The setup flow's last step: the code GitHub hands back for an app manifest, exchanged for
//! the app it registered.

use http::Method;
use serde::Deserialize;
use serde_json::json;

use super::transport::{ClientAuth, RetryPolicy, client, send};
use super::{GitHubError, Secret, encode_path};

/// What GitHub returns for a manifest code: the new app's id and secrets.
#[derive(Deserialize)]
pub struct ConvertedApp {
    pub id: u64,
    #[serde(default)]
    pub slug: String,
    #[serde(default)]
    pub html_url: String,
    #[serde(default)]
    pub client_id: String,
    #[serde(default, deserialize_with = "secret")]
    pub client_secret: Secret,
    #[serde(deserialize_with = "secret")]
    pub webhook_secret: Secret,
    #[serde(deserialize_with = "secret")]
    pub pem: Secret,
}

fn secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    Option::<String>::deserialize(d).map(|s| Secret::new(s.unwrap_or_default()))
}

/// Exchange the code of GitHub's app manifest flow for the app it registered
/// (`POST /app-manifests/{code}/conversions`, which takes no authentication; a code is good
/// once, for an hour).
pub async fn convert_manifest(api_url: &str, code: &str) -> Result<ConvertedApp, GitHubError> {
    let crab = client(api_url, ClientAuth::None)?;
    // Not retried: a code that reached GitHub once is spent.
    let policy = RetryPolicy {
        attempts: 1,
        ..RetryPolicy::default()
    };
    let path = format!("/app-manifests/{}/conversions", encode_path(code));
    send(&crab, &policy, Method::POST, &path, Some(&json!({}))).await
}
