//! Shared integration-test support: the throwaway PostgreSQL cluster (`fieldsync_dev::devdb`) and
//! helpers that wait on a condition with a deadline instead of sleeping.
#![allow(dead_code)] // shared by test modules; not every module uses every helper

pub mod crm;
pub mod daemon;
pub mod proxy;
pub mod spec;

use std::future::Future;
use std::time::{Duration, Instant};

pub use fieldsync_dev::devdb::{Cluster, ClusterOptions, HbaAuth, StopMode, TlsFiles};

const FIRST_PAUSE: Duration = Duration::from_millis(5);
const MAX_PAUSE: Duration = Duration::from_millis(200);

/// Polls `f` until it returns true, with a short growing pause between polls; panics naming `what`
/// and the time waited when `deadline` passes first.
pub fn wait_for(deadline: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    let mut pause = FIRST_PAUSE;
    loop {
        if f() {
            return;
        }
        let elapsed = start.elapsed();
        if elapsed >= deadline {
            panic!("timed out waiting for {what} after {elapsed:?}");
        }
        std::thread::sleep(pause.min(deadline - elapsed));
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// The async form of [`wait_for`]: awaits `f()` until it yields true.
pub async fn wait_for_async<F, Fut>(deadline: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    let mut pause = FIRST_PAUSE;
    loop {
        if f().await {
            return;
        }
        let elapsed = start.elapsed();
        if elapsed >= deadline {
            panic!("timed out waiting for {what} after {elapsed:?}");
        }
        tokio::time::sleep(pause.min(deadline - elapsed)).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// Starts a default cluster (trust auth, no TLS) or panics with the reason.
pub fn cluster() -> Cluster {
    Cluster::start(ClusterOptions::default()).unwrap_or_else(|e| panic!("dev cluster did not start: {e}"))
}

/// Starts a default cluster and applies the default schema and setup to `postgres`.
pub fn cluster_with_schema() -> Cluster {
    let c = cluster();
    c.apply_default_schema("postgres")
        .unwrap_or_else(|e| panic!("default schema failed: {e}\n{}", c.log_tail(30)));
    c
}

/// A CA and a server certificate it signed for `localhost` and `127.0.0.1`.
pub struct Pki {
    pub ca_pem: String,
    pub server: TlsFiles,
}

pub fn pki(alg: &'static rcgen::SignatureAlgorithm) -> Pki {
    let ca_key = rcgen::KeyPair::generate_for(alg).unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "fieldsync test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    Pki {
        ca_pem: ca.pem(),
        server: TlsFiles {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        },
    }
}
