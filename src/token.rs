//! Stream tokens: signed, expiring grants that open the live stream (`/events/stream`) for one
//! organisation, or one wedding of it, so that an app's backend can hand one to a browser.
//! `fieldsync token` makes them; the HTTP port checks them. Pure: no I/O, the clock is passed in.
//!
//! A token is `fst1.<payload>.<signature>`, both parts base64url without padding. The payload is
//! JSON, `{"organization": ID, "wedding": ID (optional), "exp": Unix seconds}`. The signature is
//! HMAC-SHA256, under the server's key (`[http] stream_signing_key_file`), of `fst1.<payload>`.
//! The signature is checked before the payload is read, in constant time (ring's `hmac::verify`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use serde::{Deserialize, Serialize};

/// What every stream token starts with (the format's version).
pub const PREFIX: &str = "fst1.";

/// What a token opens, and until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub organization: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wedding: Option<String>,
    /// Expiry, Unix seconds: the token is refused from this second on.
    pub exp: i64,
}

/// Why a token is refused (HTTP 401).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a stream token: expected fst1.<payload>.<signature>, as `fieldsync token` prints")]
    Malformed,
    #[error("the token's signature does not verify: it was altered, or signed with another key")]
    BadSignature,
    #[error("the token expired at {0}: ask the app for a new one")]
    Expired(String),
}

/// Why a valid token does not open the stream asked for (HTTP 403).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Forbidden {
    #[error("this token opens another organisation's stream, not organization={0}")]
    Organization(String),
    #[error("this token opens one wedding's stream only, not wedding={0}")]
    Wedding(String),
}

impl Grant {
    /// The wedding the stream is to be limited to when this grant opens `organization`'s stream,
    /// asked for with `wedding` (a wedding grant limits a stream asked for without one).
    pub fn allows(&self, organization: &str, wedding: Option<&str>) -> Result<Option<String>, Forbidden> {
        if organization != self.organization {
            return Err(Forbidden::Organization(organization.to_owned()));
        }
        match (&self.wedding, wedding) {
            (Some(own), Some(asked)) if own != asked => Err(Forbidden::Wedding(asked.to_owned())),
            (Some(own), _) => Ok(Some(own.clone())),
            (None, asked) => Ok(asked.map(str::to_owned)),
        }
    }
}

/// Signs and checks tokens under one key.
pub struct Signer {
    key: hmac::Key,
}

impl Signer {
    pub fn new(key: &[u8; 32]) -> Signer {
        Signer {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        }
    }

    /// The token for `grant`.
    pub fn sign(&self, grant: &Grant) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(grant).expect("a grant serializes"));
        let signed = format!("{PREFIX}{payload}");
        let tag = hmac::sign(&self.key, signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// The grant of `token` at `now` (Unix seconds), once its signature verifies and it has not
    /// expired.
    pub fn verify(&self, token: &str, now: i64) -> Result<Grant, TokenError> {
        if !token.starts_with(PREFIX) {
            return Err(TokenError::Malformed);
        }
        let (signed, tag) = token
            .rsplit_once('.')
            .filter(|(signed, tag)| signed.len() > PREFIX.len() && !tag.is_empty())
            .ok_or(TokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| TokenError::Malformed)?;
        hmac::verify(&self.key, signed.as_bytes(), &tag).map_err(|_| TokenError::BadSignature)?;
        let payload = URL_SAFE_NO_PAD
            .decode(&signed[PREFIX.len()..])
            .map_err(|_| TokenError::Malformed)?;
        let grant: Grant = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
        if now >= grant.exp {
            let at = chrono::DateTime::from_timestamp(grant.exp, 0)
                .map_or_else(|| grant.exp.to_string(), |t| t.to_rfc3339());
            return Err(TokenError::Expired(at));
        }
        Ok(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn grant(wedding: Option<&str>) -> Grant {
        Grant {
            organization: "org-a".to_owned(),
            wedding: wedding.map(str::to_owned),
            exp: NOW + 3600,
        }
    }

    #[test]
    fn a_signed_grant_verifies_until_it_expires() {
        let s = Signer::new(&[7; 32]);
        let token = s.sign(&grant(Some("w-1")));
        assert!(token.starts_with(PREFIX));
        assert_eq!(s.verify(&token, NOW), Ok(grant(Some("w-1"))));
        assert_eq!(s.verify(&token, NOW + 3599), Ok(grant(Some("w-1"))));
        assert!(
            matches!(s.verify(&token, NOW + 3600), Err(TokenError::Expired(at)) if at.starts_with("2027-01-15T"))
        );
    }

    #[test]
    fn altered_or_foreign_tokens_do_not_verify() {
        let s = Signer::new(&[7; 32]);
        let token = s.sign(&grant(None));
        // another key
        assert_eq!(
            Signer::new(&[8; 32]).verify(&token, NOW),
            Err(TokenError::BadSignature)
        );
        // a payload widened to another organisation, the signature kept
        let (_, tag) = token.rsplit_once('.').unwrap();
        let mut other = grant(None);
        other.organization = "org-b".to_owned();
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&other).unwrap());
        assert_eq!(
            s.verify(&format!("{PREFIX}{forged_payload}.{tag}"), NOW),
            Err(TokenError::BadSignature)
        );
        // one character of the signature changed
        let mut bytes = token.clone().into_bytes();
        let last = bytes.len() - 1;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            s.verify(&String::from_utf8(bytes).unwrap(), NOW),
            Err(TokenError::BadSignature)
        );
        for bad in ["", "fst1.", "fst1.x", "Bearer x", "fst2.abc.def", "fst1.abc.!!!"] {
            assert_eq!(s.verify(bad, NOW), Err(TokenError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn a_grant_opens_its_organisation_and_limits_to_its_wedding() {
        let org = grant(None);
        assert_eq!(org.allows("org-a", None), Ok(None));
        assert_eq!(org.allows("org-a", Some("w-2")), Ok(Some("w-2".to_owned())));
        assert_eq!(
            org.allows("org-b", None),
            Err(Forbidden::Organization("org-b".to_owned()))
        );
        let one = grant(Some("w-1"));
        assert_eq!(one.allows("org-a", None), Ok(Some("w-1".to_owned())));
        assert_eq!(one.allows("org-a", Some("w-1")), Ok(Some("w-1".to_owned())));
        assert_eq!(
            one.allows("org-a", Some("w-2")),
            Err(Forbidden::Wedding("w-2".to_owned()))
        );
        assert_eq!(
            one.allows("org-b", Some("w-1")),
            Err(Forbidden::Organization("org-b".to_owned()))
        );
    }
}
