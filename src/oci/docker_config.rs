//! Registry credentials from a Docker `config.json`, keyed as the client looks them up.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};

use super::{OciClient, OciError};

impl OciClient {
    /// Load credentials from a Docker `config.json` (`{"auths": {"host": {"auth":
    /// base64("user:pass")}}}` or `username`/`password` fields). Keys come back normalised
    /// (`https://index.docker.io/v1/` → `docker.io`); entries with neither form (an
    /// `identitytoken`, an empty entry left by a credential helper) are skipped. A config
    /// without `auths` gives an empty map.
    pub fn auth_from_docker_config(
        path: &Path,
    ) -> Result<HashMap<String, (String, String)>, OciError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            OciError::Config(format!("cannot read Docker config {}: {e}", path.display()))
        })?;
        parse_docker_config(&text)
            .map_err(|why| OciError::Config(format!("Docker config {}: {why}", path.display())))
    }
}

/// The key credentials are stored and looked up under: lowercase `host[:port]`, no scheme or
/// path, every Docker Hub alias as `docker.io`.
pub(super) fn auth_key(host: &str) -> String {
    let host = host.trim();
    let host = host
        .strip_prefix("https://")
        .or_else(|| host.strip_prefix("http://"))
        .unwrap_or(host);
    let host = host.split('/').next().unwrap_or(host).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_string(),
        _ => host,
    }
}

/// `{"auths": {host: {"auth": base64(user:pass)} | {"username", "password"}}}`. Errors name the
/// entry, never its content.
fn parse_docker_config(text: &str) -> Result<HashMap<String, (String, String)>, String> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| format!("not JSON (line {}, column {})", e.line(), e.column()))?;
    let mut out = HashMap::new();
    let Some(auths) = value.get("auths") else {
        return Ok(out);
    };
    let auths = auths.as_object().ok_or("`auths` is not an object")?;
    for (host, entry) in auths {
        let entry = entry
            .as_object()
            .ok_or_else(|| format!("auths.{host} is not an object"))?;
        let encoded = entry
            .get("auth")
            .and_then(|a| a.as_str())
            .map(str::trim)
            .filter(|a| !a.is_empty());
        let pair = if let Some(encoded) = encoded {
            let decoded = STANDARD
                .decode(encoded)
                .or_else(|_| STANDARD_NO_PAD.decode(encoded.trim_end_matches('=')))
                .map_err(|_| format!("auths.{host}.auth is not base64"))?;
            let decoded = String::from_utf8(decoded)
                .map_err(|_| format!("auths.{host}.auth is not UTF-8"))?;
            let (user, password) = decoded
                .split_once(':')
                .ok_or_else(|| format!("auths.{host}.auth is not user:password"))?;
            (user.to_string(), password.to_string())
        } else {
            let field = |k: &str| {
                entry
                    .get(k)
                    .and_then(|v| v.as_str())
                    .filter(|v| !v.is_empty())
            };
            match (field("username"), field("password")) {
                (Some(user), Some(password)) => (user.to_string(), password.to_string()),
                _ => continue,
            }
        };
        out.insert(auth_key(host), pair);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_auth_field_and_username_password() {
        let auth = STANDARD.encode("alice:pa:ss");
        let text = format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{auth}"}},
                "Registry.Example.com:5000": {{"username": "bob", "password": "hunter2"}},
                "ghcr.io": {{"identitytoken": "abc"}},
                "quay.io": {{}},
                "unpadded.example": {{"auth": "{}"}}
            }}, "credsStore": "desktop"}}"#,
            STANDARD.encode("u:p").trim_end_matches('=')
        );
        let map = parse_docker_config(&text).unwrap();
        assert_eq!(map.len(), 3, "{:?}", map.keys());
        assert_eq!(map["docker.io"], ("alice".into(), "pa:ss".into()));
        assert_eq!(
            map["registry.example.com:5000"],
            ("bob".into(), "hunter2".into())
        );
        assert_eq!(map["unpadded.example"], ("u".into(), "p".into()));
    }

    #[test]
    fn docker_config_errors_name_the_entry_not_the_secret() {
        assert!(parse_docker_config("{}").unwrap().is_empty());
        assert!(
            parse_docker_config(r#"{"credsStore":"x"}"#)
                .unwrap()
                .is_empty()
        );
        assert!(
            parse_docker_config("not json")
                .unwrap_err()
                .contains("not JSON")
        );
        assert!(parse_docker_config(r#"{"auths": []}"#).is_err());
        let err = parse_docker_config(r#"{"auths": {"h": {"auth": "%%%secret%%%"}}}"#).unwrap_err();
        assert!(err.contains("auths.h.auth"), "{err}");
        assert!(!err.contains("secret"), "{err}");
        let no_colon = STANDARD.encode("justapassword");
        let err = parse_docker_config(&format!(
            r#"{{"auths": {{"h": {{"auth": "{no_colon}"}}}}}}"#
        ))
        .unwrap_err();
        assert!(!err.contains("justapassword"), "{err}");
    }

    #[test]
    fn auth_from_docker_config_reads_a_file_and_reports_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            format!(
                r#"{{"auths":{{"ghcr.io":{{"auth":"{}"}}}}}}"#,
                STANDARD.encode("me:tok")
            ),
        )
        .unwrap();
        let map = OciClient::auth_from_docker_config(&path).unwrap();
        assert_eq!(map["ghcr.io"], ("me".into(), "tok".into()));
        let missing = OciClient::auth_from_docker_config(&dir.path().join("nope.json"));
        assert!(matches!(missing, Err(OciError::Config(_))));
    }

    #[test]
    fn auth_keys_are_normalised() {
        assert_eq!(auth_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(auth_key("registry-1.docker.io"), "docker.io");
        assert_eq!(auth_key("docker.io"), "docker.io");
        assert_eq!(auth_key("http://LOCALHOST:5000/"), "localhost:5000");
        assert_eq!(auth_key(" ghcr.io "), "ghcr.io");
    }
}
