//! TLS termination (rustls): the certificate and key are read from `--tls-cert` and `--tls-key`
//! and read again whenever their content changes, which covers a Kubernetes Secret volume's
//! update (an atomic swap of the `..data` symlink). A new pair that does not load, or whose key
//! does not match its certificate, is refused with an error in the log and the old pair stays
//! in use. ALPN offers h2 and http/1.1.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use podkit_runtime::Shutdown;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// How often the files are looked at for a change.
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.0.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

/// The certificate in use, and where it comes from.
#[derive(Debug, Clone)]
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    current: Arc<Current>,
    pub config: Arc<rustls::ServerConfig>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks a certificate chain and its key.
pub fn load(cert: &Path, key: &Path) -> Result<(CertifiedKey, Vec<u8>), String> {
    let cert_pem =
        std::fs::read(cert).map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
    let key_pem = std::fs::read(key).map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            format!(
                "--tls-cert {}: not a PEM certificate chain ({e})",
                cert.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "--tls-cert {}: no CERTIFICATE block in it",
            cert.display()
        ));
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("--tls-key {}: not a PEM private key ({e})", key.display()))?;
    let signing = provider()
        .key_provider
        .load_private_key(private)
        .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match().map_err(|e| {
        format!(
            "--tls-key {} does not belong to --tls-cert {} ({e})",
            key.display(),
            cert.display()
        )
    })?;
    let mut fingerprint = cert_pem;
    fingerprint.extend_from_slice(&key_pem);
    Ok((certified, fingerprint))
}

impl Tls {
    /// Loads the pair now; an error here is a configuration error.
    pub fn new(cert: &Path, key: &Path) -> Result<Tls, String> {
        let (certified, _) = load(cert, key)?;
        let current = Arc::new(Current(RwLock::new(Arc::new(certified))));
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&current) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current,
            config: Arc::new(config),
        })
    }

    /// Watches the files until `stop` fires, swapping in a changed pair that loads.
    pub async fn watch(self, mut stop: Shutdown) {
        let mut seen = load(&self.cert, &self.key)
            .map(|(_, f)| f)
            .unwrap_or_default();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(RELOAD_EVERY) => {}
                _ = stop.recv() => return,
            }
            let (cert, key) = (self.cert.clone(), self.key.clone());
            let bytes = match (std::fs::read(&cert), std::fs::read(&key)) {
                (Ok(mut c), Ok(k)) => {
                    c.extend_from_slice(&k);
                    c
                }
                _ => continue,
            };
            if bytes == seen {
                continue;
            }
            match load(&cert, &key) {
                Ok((certified, fingerprint)) => {
                    *self.current.0.write().unwrap_or_else(|e| e.into_inner()) =
                        Arc::new(certified);
                    seen = fingerprint;
                    tracing::info!(cert = %cert.display(), "TLS certificate reloaded from {}", cert.display());
                }
                Err(e) => {
                    // Remember the bad content so the error is logged once, not every second.
                    seen = bytes;
                    tracing::error!(error = %e, "new TLS certificate refused, the old one stays in use: {e}");
                }
            }
        }
    }
}
