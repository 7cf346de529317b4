//! The certificate and key the HTTP port serves TLS with, read and checked at load (a missing
//! file, a file without a certificate or key, or a key that is not the certificate's: each an
//! error naming the key).

use std::path::Path;
use std::sync::Arc;

/// A rustls server configuration from PEM files, offering `alpn` (a client that offers none is
/// served too).
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
    alpn: &[u8],
) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs = crate::pg::pem_certs(cert_file)?;
    let key_pem = std::fs::read(key_file).map_err(|e| format!("cannot read {} ({e})", key_file.display()))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| format!("{} is not PEM: {e}", key_file.display()))?
        .ok_or_else(|| format!("{} holds no PEM private key", key_file.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => format!(
                "the key in {} is not the key of the certificate in {}",
                key_file.display(),
                cert_file.display()
            ),
            e => format!("{}: {e}", key_file.display()),
        })?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(config))
}
