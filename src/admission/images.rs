//! Image configurations for the mutation (`kubeharden admission --registry-access`), so that
//! `/mutate` makes the same image decision as `fix --inspect-images`: `runAsNonRoot: true`
//! becomes a safe patch for an image that runs as a non-zero UID, and stays out for a root one.
//!
//! The API server waits `timeoutSeconds` for an answer, so a request waits for registries at
//! most its budget. A configuration not read by then is left out of that request's decision,
//! which is then what it is without registry access; its read goes on and fills the cache for
//! the next request. Reads are cached by image as written and platform (a tag can move, so its
//! entry lives minutes; a digest's a day), one read per image at a time, a bounded number at
//! once.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kubeharden_core::facts::Inspection;
use tokio::sync::watch;

use crate::oci::OciClient;

type Key = (String, String);

/// Entries kept; the cache is emptied when full (entries are cheap to read again).
const CACHE_ENTRIES: usize = 4096;
/// Reads running at once; beyond that a new image waits for a later request.
const MAX_READS: usize = 64;
const TAG_TTL: Duration = Duration::from_secs(300);
const DIGEST_TTL: Duration = Duration::from_secs(24 * 3600);
/// A configuration that could not be read is asked for again soon, not at every request.
const FAILURE_TTL: Duration = Duration::from_secs(30);

pub struct ImageInspector {
    client: Arc<OciClient>,
    budget: Duration,
    default_platform: String,
    cache: Mutex<HashMap<Key, (Instant, Inspection)>>,
    reads: Mutex<HashMap<Key, watch::Receiver<Option<Inspection>>>>,
}

impl ImageInspector {
    /// Inspection through `client` (its network guard and credentials), waiting at most
    /// `budget` per request; pods that name no `kubernetes.io/arch` run `default_platform`.
    pub fn new(client: Arc<OciClient>, budget: Duration, default_platform: String) -> Arc<Self> {
        Arc::new(Self {
            client,
            budget,
            default_platform,
            cache: Mutex::new(HashMap::new()),
            reads: Mutex::new(HashMap::new()),
        })
    }

    pub fn default_platform(&self) -> &str {
        &self.default_platform
    }

    /// The configurations of `wanted` that are known within the budget.
    pub async fn configs(self: &Arc<Self>, wanted: Vec<Key>) -> BTreeMap<Key, Inspection> {
        let deadline = tokio::time::Instant::now() + self.budget;
        let mut out = BTreeMap::new();
        let mut waiting = Vec::new();
        for key in wanted {
            if let Some(hit) = self.cached(&key) {
                out.insert(key, hit);
            } else if let Some(read) = self.read(&key) {
                waiting.push((key, read));
            }
        }
        for (key, mut read) in waiting {
            if let Ok(Ok(done)) =
                tokio::time::timeout_at(deadline, read.wait_for(Option::is_some)).await
                && let Some(inspection) = done.clone()
            {
                out.insert(key, inspection);
            }
        }
        out
    }

    fn cached(&self, key: &Key) -> Option<Inspection> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let (at, inspection) = cache.get(key)?;
        let ttl = match inspection {
            Inspection::NotChecked(_) => FAILURE_TTL,
            Inspection::Read(_) if key.0.contains('@') => DIGEST_TTL,
            Inspection::Read(_) => TAG_TTL,
        };
        (at.elapsed() < ttl).then(|| inspection.clone())
    }

    /// The read of `key` under way, or a new one; `None` when too many are.
    fn read(self: &Arc<Self>, key: &Key) -> Option<watch::Receiver<Option<Inspection>>> {
        let mut reads = self.reads.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(read) = reads.get(key) {
            return Some(read.clone());
        }
        if reads.len() >= MAX_READS {
            return None;
        }
        let (done, read) = watch::channel(None);
        reads.insert(key.clone(), read.clone());
        let me = self.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let inspection = crate::oci::inspect_all(&me.client, vec![key.clone()])
                .await
                .remove(&key)
                .unwrap_or_else(|| {
                    Inspection::NotChecked("the read of its configuration failed".into())
                });
            {
                let mut cache = me.cache.lock().unwrap_or_else(|e| e.into_inner());
                if cache.len() >= CACHE_ENTRIES {
                    cache.clear();
                }
                cache.insert(key.clone(), (Instant::now(), inspection.clone()));
            }
            me.reads
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
            let _ = done.send(Some(inspection));
        });
        Some(read)
    }
}
