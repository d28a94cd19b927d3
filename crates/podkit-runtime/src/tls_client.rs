//! The rustls client configuration the binaries share (waitfor's https targets, logship's
//! network sinks): the bundled Mozilla roots (webpki-roots) plus any `--ca-file` certificates,
//! or, with `--insecure`, no verification at all (the handshake signatures are still checked, so
//! the connection is TLS, just unauthenticated); and a client certificate for mTLS.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("--ca-file {path}: {reason}; give a PEM file with one or more CERTIFICATE blocks")]
    CaFile { path: String, reason: String },
    #[error("--client-cert {cert} / --client-key {key}: {reason}; give the PEM certificate chain and its private key")]
    ClientAuth {
        cert: String,
        key: String,
        reason: String,
    },
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A client certificate chain and its key, both PEM files.
#[derive(Debug, Clone, Copy)]
pub struct ClientAuth<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
}

/// Builds the client configuration once, at start-up. ALPN offers http/1.1; clear
/// `alpn_protocols` for protocols other than HTTP.
pub fn client_config(
    ca_file: Option<&Path>,
    insecure: bool,
    client_auth: Option<ClientAuth<'_>>,
) -> Result<ClientConfig, TlsConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    } else {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = ca_file {
            let ca_err = |reason: String| TlsConfigError::CaFile {
                path: path.display().to_string(),
                reason,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| ca_err(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ca_err(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca_err("no certificate found in it".into()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
            }
        }
        builder.with_root_certificates(roots)
    };
    let mut config = match client_auth {
        None => builder.with_no_client_auth(),
        Some(auth) => {
            let err = |reason: String| TlsConfigError::ClientAuth {
                cert: auth.cert.display().to_string(),
                key: auth.key.display().to_string(),
                reason,
            };
            let chain = CertificateDer::pem_file_iter(auth.cert)
                .map_err(|e| err(format!("the certificate: {e}")))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| err(format!("the certificate: {e}")))?;
            if chain.is_empty() {
                return Err(err("no certificate found in the certificate file".into()));
            }
            let key =
                PrivateKeyDer::from_pem_file(auth.key).map_err(|e| err(format!("the key: {e}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| err(e.to_string()))?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// `--insecure`: accepts any certificate, but still verifies that the peer holds the key it
/// presents, so the handshake itself is sound.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
