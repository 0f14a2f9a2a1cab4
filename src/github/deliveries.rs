//! Webhook deliveries GitHub never retries by itself: the app asks for failed ones again.

use std::collections::HashMap;

use http::Method;
use serde::Deserialize;
use serde_json::Value;

use super::transport::send;
use super::{App, GitHubError};

impl App {
    /// Ask GitHub to redeliver the app's recent webhook deliveries that never succeeded (GitHub
    /// does not retry by itself). Attempts are grouped by delivery GUID, as GitHub's own guide
    /// does: a GUID with a successful attempt is fine; otherwise its newest attempt is
    /// redelivered. Looks at the newest page of deliveries younger than `window`. Returns how
    /// many were asked for.
    pub async fn redeliver_failed(&self, window: chrono::Duration) -> Result<usize, GitHubError> {
        #[derive(Deserialize)]
        struct Delivery {
            id: u64,
            guid: String,
            delivered_at: chrono::DateTime<chrono::Utc>,
            status_code: u16,
        }
        let deliveries: Vec<Delivery> = send(
            &self.app,
            &self.retry,
            Method::GET,
            "/app/hook/deliveries?per_page=100",
            None,
        )
        .await?;
        let since = chrono::Utc::now() - window;
        let mut by_guid: HashMap<&str, Vec<&Delivery>> = HashMap::new();
        for d in deliveries.iter().filter(|d| d.delivered_at >= since) {
            by_guid.entry(d.guid.as_str()).or_default().push(d);
        }
        let mut asked = 0;
        for (guid, attempts) in by_guid {
            if attempts.iter().any(|a| (200..300).contains(&a.status_code)) {
                continue;
            }
            let Some(newest) = attempts.iter().max_by_key(|a| a.delivered_at) else {
                continue;
            };
            let path = format!("/app/hook/deliveries/{}/attempts", newest.id);
            let _: Value = send(&self.app, &self.retry, Method::POST, &path, None).await?;
            tracing::info!(
                guid,
                delivery = newest.id,
                "asked GitHub to redeliver a failed delivery"
            );
            asked += 1;
        }
        Ok(asked)
    }
}
