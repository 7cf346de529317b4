//! Integration credentials: where an adapter's API keys, tokens and signing secrets come from.
//!
//! In an integration's `config`, a secret is one of:
//! - `{"env": "NAME"}`: the daemon's environment variable `NAME`;
//! - `{"file": "/path"}`: the file's contents, without the trailing newline;
//! - `{"encrypted": "fsenc1:…"}`: AES-256-GCM under the daemon's key (`[secrets] key_file`),
//!   made with `fieldsync secret encrypt`;
//! - a plain string: accepted, with a warning, since it then sits in the database in clear.
//!
//! Errors name the config key and the reference (variable name, path), never a secret.

use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::Value;

use crate::secret::Secret;

const PREFIX: &str = "fsenc1:";

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("{key} is missing: {hint}")]
    Missing { key: String, hint: String },
    #[error("{key}: {why}")]
    Invalid { key: String, why: String },
}

/// The daemon's key for encrypted secrets, when it has one.
#[derive(Default)]
pub struct Credentials {
    key: Option<LessSafeKey>,
}

impl Credentials {
    pub fn new(key: Option<&[u8; 32]>) -> Credentials {
        Credentials {
            key: key.map(|k| LessSafeKey::new(UnboundKey::new(&AES_256_GCM, k).expect("32-byte key"))),
        }
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
        let invalid = |why: String| CredentialError::Invalid {
            key: key.to_owned(),
            why,
        };
        let value = match config.get(key) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) => {
                tracing::warn!(
                    "integration config {key} holds a secret in plain text: use {{\"env\": …}}, {{\"file\": …}} or {{\"encrypted\": …}} (fieldsync secret encrypt)"
                );
                s.clone()
            }
            Some(Value::Object(reference)) => {
                if let Some(name) = reference.get("env").and_then(Value::as_str) {
                    std::env::var(name).map_err(|_| {
                        invalid(format!(
                            "environment variable {name} is not set in the daemon's environment"
                        ))
                    })?
                } else if let Some(path) = reference.get("file").and_then(Value::as_str) {
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| invalid(format!("cannot read secret file {path} ({})", e.kind())))?;
                    text.trim_end_matches(['\n', '\r']).to_owned()
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

    /// Like [`get`](Self::get), for a secret the adapter cannot work without.
    pub fn require(&self, config: &Value, key: &str, hint: &str) -> Result<Secret<String>, CredentialError> {
        self.get(config, key)?.ok_or_else(|| CredentialError::Missing {
            key: key.to_owned(),
            hint: hint.to_owned(),
        })
    }

    fn decrypt(&self, sealed: &str) -> Result<String, String> {
        let key = self.key.as_ref().ok_or(
            "is encrypted but the daemon has no key: set [secrets] key_file to the key it was encrypted with",
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
        assert!(e.to_string().contains("[secrets] key_file"), "{e}");
    }

    #[test]
    fn references_resolve_and_errors_name_the_reference_not_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "from-file\n").unwrap();
        let c = Credentials::default();
        let config =
            json!({"a": {"file": path}, "b": {"env": "FIELDSYNC_TEST_UNSET_VARIABLE"}, "c": "plain", "d": 5});
        assert_eq!(c.get(&config, "a").unwrap().unwrap().expose(), "from-file");
        let e = c.get(&config, "b").unwrap_err().to_string();
        assert!(e.contains("FIELDSYNC_TEST_UNSET_VARIABLE"), "{e}");
        assert_eq!(c.get(&config, "c").unwrap().unwrap().expose(), "plain");
        assert!(c.get(&config, "d").is_err());
        assert!(c.get(&config, "missing").unwrap().is_none());
        let e = c.require(&config, "missing", "set it").unwrap_err().to_string();
        assert_eq!(e, "missing is missing: set it");
    }
}
