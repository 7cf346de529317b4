//! Where and how to reach PostgreSQL: one checked target shared by the ordinary SQL connection
//! (tokio-postgres, for checks and queries) and the replication connection (`source::conn`).

use std::path::PathBuf;
use std::time::Duration;

use crate::secret::Secret;

/// TLS policy, libpq's `sslmode` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Plain TCP only.
    Disable,
    /// TLS when the server offers it, plain otherwise; certificate not verified.
    Prefer,
    /// TLS or fail; certificate not verified (libpq semantics).
    Require,
    /// TLS or fail; the chain is verified against `ca_file` (or the web PKI roots) and the host name
    /// must match.
    VerifyFull,
}

/// Everything needed to open a connection to the database.
#[derive(Clone, Debug)]
pub struct PgTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<Secret<String>>,
    pub dbname: String,
    pub tls: TlsMode,
    /// PEM bundle of trusted roots for `verify-full`.
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub application_name: String,
}

impl PgTarget {
    /// `postgres://user@host:port/db`, never with the password: safe for logs and messages.
    pub fn redacted_url(&self) -> String {
        let pw = if self.password.is_some() { ":***" } else { "" };
        format!(
            "postgres://{}{}@{}:{}/{}",
            self.user, pw, self.host, self.port, self.dbname
        )
    }
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot read CA bundle {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("cannot connect to {url}: {source}")]
    Postgres {
        url: String,
        #[source]
        source: tokio_postgres::Error,
    },
}

/// The rustls client configuration for `target.tls`, or `None` for `disable`.
///
/// `prefer` and `require` encrypt without verifying the certificate, as libpq does;
/// `verify-full` checks the chain against `ca_file` (else the web PKI roots) and the host name.
pub fn tls_client_config(
    target: &PgTarget,
) -> Result<Option<std::sync::Arc<rustls::ClientConfig>>, ConnectError> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
    let config = match target.tls {
        TlsMode::Disable => return Ok(None),
        TlsMode::Prefer | TlsMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(tls::AcceptAnyCertificate(provider, None)))
            .with_no_client_auth(),
        TlsMode::VerifyFull => {
            let mut roots = rustls::RootCertStore::empty();
            match &target.ca_file {
                Some(path) => {
                    let ca_err = |reason: String| ConnectError::CaFile {
                        path: path.clone(),
                        reason,
                    };
                    let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
                    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                        let cert = cert.map_err(|e| ca_err(e.to_string()))?;
                        roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
                    }
                    if roots.is_empty() {
                        return Err(ca_err("no PEM certificate found".into()));
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Some(std::sync::Arc::new(config)))
}

/// The PEM certificates in `path`, at least one; errors name the file.
pub fn pem_certs(path: &std::path::Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {} ({e})", path.display()))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// A TLS client that trusts exactly the certificate (the first) in `cert_file`: how the command line
/// reaches its own daemon's HTTPS port, whose certificate the configuration names.
pub fn pinned_client_config(
    cert_file: &std::path::Path,
) -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
    let cert = pem_certs(cert_file)?.swap_remove(0);
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(tls::AcceptAnyCertificate(
            provider,
            Some(cert),
        )))
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

/// Opens an ordinary SQL connection (not a replication one) and drives it on a background task.
pub async fn connect_sql(target: &PgTarget) -> Result<tokio_postgres::Client, ConnectError> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&target.host)
        .port(target.port)
        .user(&target.user)
        .dbname(&target.dbname)
        .connect_timeout(target.connect_timeout)
        .application_name(&target.application_name);
    if let Some(pw) = &target.password {
        cfg.password(pw.expose());
    }
    let pg_err = |source| ConnectError::Postgres {
        url: target.redacted_url(),
        source,
    };
    match tls_client_config(target)? {
        None => {
            cfg.ssl_mode(tokio_postgres::config::SslMode::Disable);
            let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.map_err(pg_err)?;
            tokio::spawn(conn);
            Ok(client)
        }
        Some(tls) => {
            cfg.ssl_mode(match target.tls {
                TlsMode::Prefer => tokio_postgres::config::SslMode::Prefer,
                _ => tokio_postgres::config::SslMode::Require,
            });
            let connector = tokio_postgres_rustls::MakeRustlsConnect::new((*tls).clone());
            let (client, conn) = cfg.connect(connector).await.map_err(pg_err)?;
            tokio::spawn(conn);
            Ok(client)
        }
    }
}

mod tls {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    /// libpq's `sslmode=require`: encrypt, but trust any certificate (signatures are still checked);
    /// with a pinned certificate, trust that one only.
    #[derive(Debug)]
    pub(super) struct AcceptAnyCertificate(
        pub(super) std::sync::Arc<rustls::crypto::CryptoProvider>,
        pub(super) Option<CertificateDer<'static>>,
    );

    impl ServerCertVerifier for AcceptAnyCertificate {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            match &self.1 {
                Some(pinned) if pinned.as_ref() != end_entity.as_ref() => Err(rustls::Error::General(
                    "the server's certificate is not the one configured".to_owned(),
                )),
                _ => Ok(ServerCertVerified::assertion()),
            }
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
}
