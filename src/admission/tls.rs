//! TLS from certificate and key files (a cert-manager Secret mounted as a volume), reloaded
//! when they change, without a restart; and the accept loop, whose handshakes have a deadline
//! so that a client that stalls holds a task for seconds, not forever.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio_rustls::rustls::{
    self, crypto::ring, pki_types, server::ResolvesServerCert, sign::CertifiedKey,
};

use pki_types::pem::PemObject;

/// The certificate and key in use, and what their files held when they were read.
#[derive(Debug)]
pub struct Certificates {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, Vec<u8>)>,
}

impl Certificates {
    /// Read both files; an unreadable or mismatched pair is an error at start.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<Certificates>> {
        let (key, stamp) = read_pair(cert_path, key_path)?;
        Ok(Arc::new(Certificates {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: RwLock::new((key, stamp)),
        }))
    }

    /// Read the files again and use them if they changed. A half-written pair (cert-manager
    /// and the kubelet swap the Secret's files, not write them in place, but a hand edit may
    /// be seen midway) keeps the old certificate and reports why; the next poll tries again.
    pub fn reload(&self) -> Result<bool> {
        let cert = std::fs::read(&self.cert_path)
            .with_context(|| format!("cannot read {}", self.cert_path.display()))?;
        let key = std::fs::read(&self.key_path)
            .with_context(|| format!("cannot read {}", self.key_path.display()))?;
        let stamp = [cert.as_slice(), key.as_slice()].concat();
        if self.current.read().unwrap_or_else(|e| e.into_inner()).1 == stamp {
            return Ok(false);
        }
        let certified = certified_key(&cert, &key, &self.cert_path, &self.key_path)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (certified, stamp);
        Ok(true)
    }

    /// Poll the files every `interval` for as long as the server runs.
    pub fn watch(self: &Arc<Self>, interval: Duration) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let me = Arc::clone(&this);
                match tokio::task::spawn_blocking(move || me.reload()).await {
                    Ok(Ok(true)) => tracing::info!("certificate reloaded"),
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => tracing::warn!("certificate not reloaded: {e:#}"),
                    Err(e) => tracing::warn!("certificate reload failed: {e}"),
                }
            }
        });
    }

    /// The rustls configuration that always serves the current certificate.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>> {
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
                .with_safe_default_protocol_versions()
                .context("TLS protocol versions")?
                .with_no_client_auth()
                .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|e| e.into_inner()).0,
        ))
    }
}

fn read_pair(cert_path: &Path, key_path: &Path) -> Result<(Arc<CertifiedKey>, Vec<u8>)> {
    let cert = std::fs::read(cert_path)
        .with_context(|| format!("cannot read the TLS certificate {}", cert_path.display()))?;
    let key = std::fs::read(key_path)
        .with_context(|| format!("cannot read the TLS key {}", key_path.display()))?;
    let certified = certified_key(&cert, &key, cert_path, key_path)?;
    Ok((certified, [cert.as_slice(), key.as_slice()].concat()))
}

fn certified_key(
    cert: &[u8],
    key: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<CertifiedKey>> {
    let chain: Vec<pki_types::CertificateDer<'static>> =
        pki_types::CertificateDer::pem_slice_iter(cert)
            .collect::<Result<_, _>>()
            .with_context(|| format!("{}: not a PEM certificate chain", cert_path.display()))?;
    if chain.is_empty() {
        bail!("{}: holds no certificate", cert_path.display());
    }
    let key = pki_types::PrivateKeyDer::from_pem_slice(key)
        .with_context(|| format!("{}: not a PEM private key", key_path.display()))?;
    let provider = ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider).with_context(|| {
        format!(
            "{} and {} do not belong together",
            cert_path.display(),
            key_path.display()
        )
    })?;
    Ok(Arc::new(certified))
}
