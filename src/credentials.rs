//! Integration credentials: where an adapter's API keys, tokens and signing secrets come from.
//!
//! In an integration's `config`, a secret is one of:
//! - `{"env": "NAME"}`: the daemon's environment variable `NAME`, which must start with
//!   `[dispatch] secret_env_prefix` (default `FIELDSYNC_SECRET_`);
//! - `{"file": "/path"}`: the file's contents, without the trailing newline; the file must lie
//!   under `[dispatch] secret_dir` (links resolved), and file references are refused without it;
//! - `{"encrypted": "fsenc1:…"}`: AES-256-GCM under the daemon's key (`[dispatch]
//!   secrets_key_file`), made with `fieldsync secret encrypt`;
//! - a plain string: accepted, with a warning, since it then sits in the database in clear.
//!
//! # Trust
//! Integration rows are written by the application (and whoever can write its tables), not by
//! the operator, so a row may only point at what the operator's configuration allows: never the
//! daemon's own configuration variables (`FIELDSYNC__…`), its key file or its configuration file,
//! and an adapter's requests go only to its service's real hosts unless `[dispatch]
//! allowed_base_urls` lists another base (the sandboxes of the tests and the demo). A refused
//! reference or host is a configuration error of the integration: nothing is sent.
//!
//! Errors name the config key and a short excerpt of the reference (variable name, path), never a
//! secret.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::Value;

use crate::secret::{excerpt, Secret};

const PREFIX: &str = "fsenc1:";
/// The default `[dispatch] secret_env_prefix`.
pub const DEFAULT_ENV_PREFIX: &str = "FIELDSYNC_SECRET_";
/// The daemon's own configuration variables, never readable through a reference.
const CONFIG_ENV_PREFIX: &str = "FIELDSYNC__";

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("{key} is missing: {hint}")]
    Missing { key: String, hint: String },
    #[error("{key}: {why}")]
    Invalid { key: String, why: String },
}

/// What an integration row may point at, as the daemon's configuration allows it.
#[derive(Clone, Debug)]
pub struct Trust {
    /// `{"env": NAME}` only for names that start with it.
    pub env_prefix: String,
    /// `{"file": PATH}` only under it (resolved); `None`: file references are refused.
    pub secret_dir: Option<PathBuf>,
    /// Files never readable through a reference (the key file, the configuration file).
    pub protected: Vec<PathBuf>,
    /// Bases an adapter may send to besides its service's own hosts.
    pub allowed_urls: Vec<reqwest::Url>,
}

impl Default for Trust {
    fn default() -> Trust {
        Trust {
            env_prefix: DEFAULT_ENV_PREFIX.to_owned(),
            secret_dir: None,
            protected: Vec::new(),
            allowed_urls: Vec::new(),
        }
    }
}

/// The daemon's key for encrypted secrets, when it has one, and what rows may point at.
#[derive(Default)]
pub struct Credentials {
    key: Option<LessSafeKey>,
    trust: Trust,
}

impl Credentials {
    pub fn new(key: Option<&[u8; 32]>) -> Credentials {
        Credentials {
            key: key.map(|k| LessSafeKey::new(UnboundKey::new(&AES_256_GCM, k).expect("32-byte key"))),
            trust: Trust::default(),
        }
    }

    /// The same key under another trust policy.
    pub fn with_trust(mut self, trust: Trust) -> Credentials {
        self.trust = trust;
        self
    }

    /// Also allows requests to these bases (for the sandboxes: `Credentials::default()
    /// .allowing(&[sandbox.url()])`).
    pub fn allowing(mut self, bases: &[String]) -> Credentials {
        self.trust
            .allowed_urls
            .extend(bases.iter().filter_map(|b| reqwest::Url::parse(b).ok()));
        self
    }

    /// Checks that an adapter may send to `url` (config key `key`): one of its service's `hosts`
    /// over HTTPS, or under a base of `[dispatch] allowed_base_urls`. Never a URL with a user or
    /// password in it.
    pub fn check_url(&self, key: &str, url: &reqwest::Url, hosts: &[&str]) -> Result<(), CredentialError> {
        let invalid = |why: String| CredentialError::Invalid {
            key: key.to_owned(),
            why,
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid("must not carry a user name or password".to_owned()));
        }
        let own = url.scheme() == "https"
            && url.port().is_none()
            && url.host_str().is_some_and(|h| hosts.contains(&h));
        let allowed = self
            .trust
            .allowed_urls
            .iter()
            .any(|base| base.origin() == url.origin() && url.path().starts_with(base.path()));
        if own || allowed {
            return Ok(());
        }
        Err(invalid(format!(
            "{} is not the service's own ({}): another base must be listed in [dispatch] allowed_base_urls of the daemon's configuration",
            excerpt(&format!("{}{}", url.origin().ascii_serialization(), url.path()), 80),
            hosts.iter().map(|h| format!("https://{h}")).collect::<Vec<_>>().join(", ")
        )))
    }

    /// Reads a key file (`fieldsync secret keygen` writes one: 32 bytes, base64, one line).
    pub fn from_key_file(path: &Path) -> Result<Credentials, CredentialError> {
        let invalid = |why: String| CredentialError::Invalid {
            key: "[secrets] key_file".to_owned(),
            why,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid(format!("cannot read {} ({e})", path.display())))?;
        Ok(Credentials::new(Some(
            &parse_key(text.trim()).map_err(|why| invalid(format!("{} {why}", path.display())))?,
        )))
    }

    /// The secret under `key` in an integration's config; `None` when the key is absent.
    pub fn get(&self, config: &Value, key: &str) -> Result<Option<Secret<String>>, CredentialError> {
        self.resolve(key, config.get(key))
    }

    /// Like [`get`](Self::get), for a secret the adapter cannot work without.
    pub fn require(&self, config: &Value, key: &str, hint: &str) -> Result<Secret<String>, CredentialError> {
        self.resolve_required(key, config.get(key), hint)
    }

    /// The secret `value` of config key `key` (plain text or a reference); `None` when absent.
    pub fn resolve(
        &self,
        key: &str,
        value: Option<&Value>,
    ) -> Result<Option<Secret<String>>, CredentialError> {
        let invalid = |why: String| CredentialError::Invalid {
            key: key.to_owned(),
            why,
        };
        let value = match value {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) => {
                tracing::warn!(
                    "integration config {key} holds a secret in plain text: use {{\"env\": …}}, {{\"file\": …}} or {{\"encrypted\": …}} (fieldsync secret encrypt)"
                );
                s.clone()
            }
            Some(Value::Object(reference)) => {
                if let Some(name) = reference.get("env").and_then(Value::as_str) {
                    self.env(name).map_err(invalid)?
                } else if let Some(path) = reference.get("file").and_then(Value::as_str) {
                    self.file(path).map_err(invalid)?
                } else if let Some(sealed) = reference.get("encrypted").and_then(Value::as_str) {
                    self.decrypt(sealed).map_err(invalid)?
                } else {
                    return Err(invalid(
                        "must be {\"env\": NAME}, {\"file\": PATH} or {\"encrypted\": \"fsenc1:…\"}"
                            .to_owned(),
                    ));
                }
            }
            Some(_) => {
                return Err(invalid(
                    "must be a string or a secret reference object".to_owned(),
                ))
            }
        };
        if value.is_empty() {
            return Err(invalid("resolves to an empty secret".to_owned()));
        }
        Ok(Some(Secret::new(value)))
    }

    /// Like [`resolve`](Self::resolve), for a secret the adapter cannot work without.
    pub fn resolve_required(
        &self,
        key: &str,
        value: Option<&Value>,
        hint: &str,
    ) -> Result<Secret<String>, CredentialError> {
        self.resolve(key, value)?.ok_or_else(|| CredentialError::Missing {
            key: key.to_owned(),
            hint: hint.to_owned(),
        })
    }

    fn env(&self, name: &str) -> Result<String, String> {
        let shown = excerpt(name, 64);
        if !name.starts_with(&self.trust.env_prefix) || name.starts_with(CONFIG_ENV_PREFIX) {
            return Err(format!(
                "environment variable {shown} may not be read: references may name only variables that start with {} ([dispatch] secret_env_prefix)",
                self.trust.env_prefix
            ));
        }
        std::env::var(name)
            .map_err(|_| format!("environment variable {shown} is not set in the daemon's environment"))
    }

    fn file(&self, path: &str) -> Result<String, String> {
        let shown = excerpt(path, 80);
        let Some(dir) = &self.trust.secret_dir else {
            return Err(format!(
                "cannot read secret file {shown}: file references are off; set [dispatch] secret_dir to the directory that holds integration secrets"
            ));
        };
        let real = std::fs::canonicalize(path)
            .map_err(|e| format!("cannot read secret file {shown} ({})", e.kind()))?;
        let protected = self
            .trust
            .protected
            .iter()
            .any(|p| std::fs::canonicalize(p).is_ok_and(|p| p == real));
        if !real.starts_with(dir) || protected {
            return Err(format!(
                "secret file {shown} is not under [dispatch] secret_dir ({})",
                dir.display()
            ));
        }
        let text = std::fs::read_to_string(&real)
            .map_err(|e| format!("cannot read secret file {shown} ({})", e.kind()))?;
        Ok(text.trim_end_matches(['\n', '\r']).to_owned())
    }

    fn decrypt(&self, sealed: &str) -> Result<String, String> {
        let key = self.key.as_ref().ok_or(
            "is encrypted but the daemon has no key: set [dispatch] secrets_key_file to the key it was encrypted with",
        )?;
        let bytes = sealed
            .strip_prefix(PREFIX)
            .and_then(|b| STANDARD.decode(b).ok())
            .filter(|b| b.len() > NONCE_LEN)
            .ok_or("is not an fsenc1: value (make one with fieldsync secret encrypt)")?;
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| "has a bad nonce")?;
        let mut buf = ciphertext.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::empty(), &mut buf)
            .map_err(|_| "cannot be decrypted with the daemon's key (another key, or altered)")?;
        String::from_utf8(plain.to_vec()).map_err(|_| "does not decrypt to UTF-8 text".to_owned())
    }
}

/// Seals a secret under a key: `fsenc1:` and base64 of nonce and ciphertext.
pub fn encrypt(key: &[u8; 32], plaintext: &str) -> String {
    let sealing = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("32-byte key"));
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).expect("system randomness");
    let mut buf = plaintext.as_bytes().to_vec();
    sealing
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
        .expect("AES-GCM seals any length we pass");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buf);
    format!("{PREFIX}{}", STANDARD.encode(out))
}

/// A new random key, base64.
pub fn generate_key() -> String {
    let mut key = [0u8; 32];
    SystemRandom::new().fill(&mut key).expect("system randomness");
    STANDARD.encode(key)
}

/// A key as written in a key file.
pub fn parse_key(text: &str) -> Result<[u8; 32], String> {
    STANDARD
        .decode(text)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| "must hold 32 bytes in base64 (fieldsync secret keygen)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_encrypted_secret_opens_with_its_key_only() {
        let key = parse_key(&generate_key()).unwrap();
        let sealed = encrypt(&key, "sk_test_123");
        assert!(!sealed.contains("sk_test_123"));
        let config = json!({"api_key": {"encrypted": sealed}});
        let got = Credentials::new(Some(&key))
            .get(&config, "api_key")
            .unwrap()
            .unwrap();
        assert_eq!(got.expose(), "sk_test_123");
        let other = parse_key(&generate_key()).unwrap();
        let e = Credentials::new(Some(&other))
            .get(&config, "api_key")
            .unwrap_err();
        assert!(e.to_string().contains("cannot be decrypted"), "{e}");
        let e = Credentials::default().get(&config, "api_key").unwrap_err();
        assert!(e.to_string().contains("[dispatch] secrets_key_file"), "{e}");
    }

    #[test]
    fn references_resolve_and_errors_name_the_reference_not_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "from-file\n").unwrap();
        let c = Credentials::default().with_trust(Trust {
            secret_dir: Some(std::fs::canonicalize(dir.path()).unwrap()),
            ..Trust::default()
        });
        let config = json!({"a": {"file": path}, "b": {"env": "FIELDSYNC_SECRET_TEST_UNSET_VARIABLE"}, "c": "plain", "d": 5});
        assert_eq!(c.get(&config, "a").unwrap().unwrap().expose(), "from-file");
        let e = c.get(&config, "b").unwrap_err().to_string();
        assert!(
            e.contains("FIELDSYNC_SECRET_TEST_UNSET_VARIABLE") && e.contains("not set"),
            "{e}"
        );
        assert_eq!(c.get(&config, "c").unwrap().unwrap().expose(), "plain");
        assert!(c.get(&config, "d").is_err());
        assert!(c.get(&config, "missing").unwrap().is_none());
        let e = c.require(&config, "missing", "set it").unwrap_err().to_string();
        assert_eq!(e, "missing is missing: set it");
    }

    #[test]
    fn references_reach_only_what_the_operator_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("secrets");
        std::fs::create_dir(&secrets).unwrap();
        std::fs::write(secrets.join("ok"), "fine").unwrap();
        let key_file = secrets.join("fieldsync.key");
        std::fs::write(&key_file, "the daemon's own key").unwrap();
        std::fs::write(dir.path().join("outside"), "not for rows").unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), secrets.join("link")).unwrap();
        let c = Credentials::default().with_trust(Trust {
            secret_dir: Some(std::fs::canonicalize(&secrets).unwrap()),
            protected: vec![key_file.clone()],
            ..Trust::default()
        });
        let refused = |config: Value| c.get(&config, "k").unwrap_err().to_string();
        assert_eq!(
            c.get(&json!({"k": {"file": secrets.join("ok")}}), "k")
                .unwrap()
                .unwrap()
                .expose(),
            "fine"
        );
        for path in [
            dir.path().join("outside"),
            secrets.join("link"),
            secrets.join("..").join("outside"),
            key_file,
        ] {
            let e = refused(json!({"k": {"file": path}}));
            assert!(
                e.starts_with("k: ") && e.contains("secret_dir") && !e.contains("not for rows"),
                "{e}"
            );
        }
        for name in ["FIELDSYNC__ADMIN__PASSWORD", "HOME", "PATH"] {
            let e = refused(json!({"k": {"env": name}}));
            assert!(e.contains("secret_env_prefix"), "{e}");
        }
        let off = Credentials::default();
        let e = off
            .get(&json!({"k": {"file": secrets.join("ok")}}), "k")
            .unwrap_err()
            .to_string();
        assert!(e.contains("file references are off"), "{e}");
        let long = "FIELDSYNC_SECRET_".to_owned() + &"X".repeat(100_000);
        let e = refused(json!({"k": {"env": long}}));
        assert!(
            e.len() < 400,
            "a long reference is echoed as a short excerpt: {} bytes",
            e.len()
        );
    }

    #[test]
    fn adapters_send_only_to_their_service_or_an_allowed_base() {
        let url = |u: &str| reqwest::Url::parse(u).unwrap();
        let hosts = ["api.stripe.com"];
        let c = Credentials::default().allowing(&["http://127.0.0.1:4000/stripe".to_owned()]);
        assert!(c
            .check_url("base_url", &url("https://api.stripe.com/v1"), &hosts)
            .is_ok());
        assert!(c
            .check_url("base_url", &url("http://127.0.0.1:4000/stripe/v1"), &hosts)
            .is_ok());
        for bad in [
            "http://api.stripe.com/v1",
            "https://api.stripe.com:8443/v1",
            "https://elsewhere.example/v1",
            "http://127.0.0.1:4001/stripe/v1",
            "http://127.0.0.1:4000/other",
            "https://user:pw@api.stripe.com/v1",
            "http://127.0.0.1:4000@elsewhere.example/stripe",
        ] {
            let e = c
                .check_url("base_url", &url(bad), &hosts)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("base_url: ") && !e.contains("pw"), "{bad}: {e}");
        }
    }
}
