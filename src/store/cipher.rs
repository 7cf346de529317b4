//! Encryption at rest of the values that hold personal data (change records, wedding context,
//! dead letters, the delivery log): AES-256-GCM under `[queue] encryption_key_file`.
//!
//! # Format
//! A sealed value is `MAGIC (4 bytes) ‖ key id (8) ‖ nonce (12) ‖ ciphertext ‖ tag (16)`; the
//! magic and the key id are the AEAD's associated data, so a value cannot be passed off as sealed
//! under another key. A value that does not start with [`MAGIC`] is plain JSON (written before
//! encryption was on, or with it off): it is read as it is, and `fieldsync reencrypt` seals it.
//! Nonces are random (96 bits): rotate the key well before 2^32 writes (years at full speed).
//!
//! # Key ids
//! A key's id is the first 8 bytes of SHA-256 over a label and the key, shown as 16 hex digits.
//! It names a key in errors and in the store's key record (`meta/keys`, see `Store::open`)
//! without revealing it.

use std::fmt;
use std::sync::Arc;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::StoreError;

/// The first bytes of a sealed value: never the first byte of JSON text.
pub const MAGIC: [u8; 4] = [0x00, b'f', b's', 0x01];
const ID_LEN: usize = 8;
const HEADER: usize = MAGIC.len() + ID_LEN;
const TAG_LEN: usize = 16;

/// A key's public name (see the module's notes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct KeyId([u8; ID_LEN]);

impl KeyId {
    pub fn of(key: &[u8; 32]) -> KeyId {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"fieldsync store key v1\0");
        ctx.update(key);
        let digest = ctx.finish();
        KeyId(digest.as_ref()[..ID_LEN].try_into().expect("8 of 32 bytes"))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<KeyId> for String {
    fn from(id: KeyId) -> String {
        id.to_string()
    }
}

impl TryFrom<String> for KeyId {
    type Error = String;
    fn try_from(s: String) -> Result<KeyId, String> {
        let bytes = (0..s.len())
            .step_by(2)
            .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
            .collect::<Option<Vec<u8>>>()
            .filter(|b| b.len() == ID_LEN)
            .ok_or_else(|| format!("{s:?} is not a key id (16 hex digits)"))?;
        Ok(KeyId(bytes.try_into().expect("8 bytes")))
    }
}

struct Keys {
    /// The key new values are sealed with; `None`: new values are written plain.
    current: Option<KeyId>,
    /// Every configured key, the current one included.
    all: Vec<(KeyId, LessSafeKey)>,
    rng: SystemRandom,
}

/// Seals and opens stored values. Cheap to clone; the default seals nothing.
#[derive(Clone, Default)]
pub struct Sealer(Option<Arc<Keys>>);

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("current", &self.current())
            .field("keys", &self.ids())
            .finish()
    }
}

impl Sealer {
    /// New values sealed under `current` (plain when `None`); `current` and `old` both open.
    pub fn new(current: Option<&[u8; 32]>, old: &[&[u8; 32]]) -> Sealer {
        if current.is_none() && old.is_empty() {
            return Sealer(None);
        }
        let mut all: Vec<(KeyId, LessSafeKey)> = Vec::new();
        for key in current.into_iter().chain(old.iter().copied()) {
            let id = KeyId::of(key);
            if all.iter().all(|(k, _)| *k != id) {
                let key = UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte key");
                all.push((id, LessSafeKey::new(key)));
            }
        }
        Sealer(Some(Arc::new(Keys {
            current: current.map(KeyId::of),
            all,
            rng: SystemRandom::new(),
        })))
    }

    /// The key new values are sealed with, if any.
    pub fn current(&self) -> Option<KeyId> {
        self.0.as_ref().and_then(|k| k.current)
    }

    /// Every key that opens values.
    pub fn ids(&self) -> Vec<KeyId> {
        self.0
            .as_ref()
            .map_or_else(Vec::new, |k| k.all.iter().map(|(id, _)| *id).collect())
    }

    /// `plain` as it is to be stored: sealed under the current key, or as it is without one.
    pub fn seal(&self, plain: &[u8]) -> sled::IVec {
        let Some((keys, id)) = self.0.as_ref().and_then(|k| Some((k, k.current?))) else {
            return sled::IVec::from(plain);
        };
        let key = keys.key(id).expect("the current key is configured");
        let mut nonce = [0u8; NONCE_LEN];
        keys.rng
            .fill(&mut nonce)
            .expect("the system's random source works");
        let mut out = Vec::with_capacity(HEADER + NONCE_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&id.0);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let (head, body) = out.split_at_mut(HEADER + NONCE_LEN);
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&head[..HEADER]),
                body,
            )
            .expect("AES-GCM seals any length the store writes");
        out.extend_from_slice(tag.as_ref());
        sled::IVec::from(out)
    }

    /// A stored value as plain bytes. `what` names it in errors (never its content).
    pub fn open(&self, what: &str, stored: sled::IVec) -> Result<sled::IVec, StoreError> {
        let Some(id) = sealed_by(&stored) else {
            return Ok(stored);
        };
        let key = self
            .0
            .as_ref()
            .and_then(|k| k.key(id))
            .ok_or_else(|| StoreError::MissingKey {
                id,
                what: what.to_owned(),
            })?;
        let mut buf = stored.to_vec();
        let (head, body) = buf.split_at_mut(HEADER);
        let (nonce, sealed) = body
            .split_at_mut_checked(NONCE_LEN)
            .ok_or_else(|| tampered(what, id))?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| tampered(what, id))?;
        let plain = key
            .open_in_place(nonce, Aad::from(&head[..]), sealed)
            .map_err(|_| tampered(what, id))?;
        Ok(sled::IVec::from(&*plain))
    }

    /// True when `stored` is not sealed under the current key (plain with encryption on, or
    /// sealed under an older key, or sealed at all with encryption off).
    pub fn is_stale(&self, stored: &[u8]) -> bool {
        sealed_by(stored) != self.current()
    }
}

impl Keys {
    fn key(&self, id: KeyId) -> Option<&LessSafeKey> {
        self.all.iter().find(|(k, _)| *k == id).map(|(_, key)| key)
    }
}

/// The key a stored value is sealed under; `None` for a plain value.
pub fn sealed_by(stored: &[u8]) -> Option<KeyId> {
    stored
        .strip_prefix(&MAGIC)
        .and_then(|rest| rest.get(..ID_LEN))
        .map(|id| KeyId(id.try_into().expect("8 bytes")))
}

fn tampered(what: &str, id: KeyId) -> StoreError {
    StoreError::Corrupt {
        what: what.to_owned(),
        reason: format!("fails authentication under key {id}: the value was altered or the file is damaged"),
    }
}

/// A sled tree whose values are sealed: the trees that hold field values go through this.
#[derive(Clone)]
pub struct SealedTree {
    tree: sled::Tree,
    sealer: Sealer,
    name: &'static str,
}

/// One entry of a [`SealedTree`], its value opened.
pub type Entry = (sled::IVec, sled::IVec);

impl SealedTree {
    pub fn open(db: &sled::Db, name: &'static str, sealer: &Sealer) -> Result<SealedTree, StoreError> {
        Ok(SealedTree {
            tree: db.open_tree(name)?,
            sealer: sealer.clone(),
            name,
        })
    }

    /// The tree itself, for what needs no value: keys, removals, counts.
    pub fn raw(&self) -> &sled::Tree {
        &self.tree
    }

    pub fn seal(&self, plain: &[u8]) -> sled::IVec {
        self.sealer.seal(plain)
    }

    /// Opens the values of a sled iterator (which borrows nothing, and neither does this).
    fn opened(&self, iter: sled::Iter) -> impl DoubleEndedIterator<Item = Result<Entry, StoreError>> {
        let (sealer, name) = (self.sealer.clone(), self.name);
        iter.map(move |item| {
            let (k, v) = item?;
            Ok((k, sealer.open(name, v)?))
        })
    }

    pub fn insert(&self, key: impl AsRef<[u8]>, plain: &[u8]) -> Result<(), StoreError> {
        self.tree.insert(key.as_ref(), self.seal(plain))?;
        Ok(())
    }

    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<sled::IVec>, StoreError> {
        self.tree
            .get(key)?
            .map(|v| self.sealer.open(self.name, v))
            .transpose()
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = Result<Entry, StoreError>> {
        self.opened(self.tree.iter())
    }

    pub fn range<K: AsRef<[u8]>, R: std::ops::RangeBounds<K>>(
        &self,
        range: R,
    ) -> impl DoubleEndedIterator<Item = Result<Entry, StoreError>> {
        self.opened(self.tree.range(range))
    }

    pub fn scan_prefix(
        &self,
        prefix: impl AsRef<[u8]>,
    ) -> impl DoubleEndedIterator<Item = Result<Entry, StoreError>> {
        self.opened(self.tree.scan_prefix(prefix))
    }

    pub fn remove(&self, key: impl AsRef<[u8]>) -> Result<(), StoreError> {
        self.tree.remove(key)?;
        Ok(())
    }

    /// Seals again, under the current key, every value that is not: each with a compare-and-swap,
    /// so a value written or removed meanwhile (by a writer, always under the current key) is
    /// left as that writer left it. Returns how many values were rewritten.
    pub fn reseal(&self) -> Result<u64, StoreError> {
        let mut rewritten = 0;
        for item in self.tree.iter() {
            let (key, stored) = item?;
            if !self.sealer.is_stale(&stored) {
                continue;
            }
            let fresh = self.seal(&self.sealer.open(self.name, stored.clone())?);
            if self
                .tree
                .compare_and_swap(&key, Some(stored), Some(fresh))?
                .is_ok()
            {
                rewritten += 1;
            }
        }
        Ok(rewritten)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 32] = [7; 32];
    const B: [u8; 32] = [9; 32];

    #[test]
    fn sealed_values_open_under_their_key_and_hide_the_plaintext() {
        let s = Sealer::new(Some(&A), &[]);
        let sealed = s.seal(b"{\"couple\":\"Ada & Grace\"}");
        assert_eq!(sealed_by(&sealed), Some(KeyId::of(&A)));
        assert!(!sealed.windows(5).any(|w| w == b"Grace"));
        assert_eq!(
            &*s.open("t", sealed.clone()).unwrap(),
            b"{\"couple\":\"Ada & Grace\"}"
        );
        // two seals of the same value differ (fresh nonces)
        assert_ne!(s.seal(b"x"), s.seal(b"x"));
    }

    #[test]
    fn plain_values_read_as_they_are_and_count_as_stale_once_a_key_is_set() {
        let s = Sealer::new(Some(&A), &[]);
        assert_eq!(&*s.open("t", sled::IVec::from(&b"{}"[..])).unwrap(), b"{}");
        assert!(s.is_stale(b"{}"));
        assert!(!Sealer::default().is_stale(b"{}"));
        assert_eq!(&*Sealer::default().seal(b"{}"), b"{}");
    }

    #[test]
    fn rotation_opens_old_values_and_a_missing_key_is_named() {
        let old = Sealer::new(Some(&A), &[]).seal(b"v");
        let rotated = Sealer::new(Some(&B), &[&A]);
        assert_eq!(&*rotated.open("t", old.clone()).unwrap(), b"v");
        assert!(rotated.is_stale(&old));
        let e = Sealer::new(Some(&B), &[])
            .open("dl_dead", old)
            .unwrap_err()
            .to_string();
        assert!(e.contains(&KeyId::of(&A).to_string()), "{e}");
        assert!(e.contains("dl_dead"), "{e}");
    }

    #[test]
    fn a_tampered_value_or_swapped_key_id_fails_authentication() {
        let s = Sealer::new(Some(&A), &[&B]);
        let mut v = s.seal(b"guest count 120").to_vec();
        let last = v.len() - 1;
        v[last] ^= 1;
        let e = s.open("changes", v.into()).unwrap_err().to_string();
        assert!(e.contains("fails authentication"), "{e}");
        let mut v = s.seal(b"guest count 120").to_vec();
        v[MAGIC.len()..HEADER].copy_from_slice(&KeyId::of(&B).0);
        assert!(s.open("changes", v.into()).is_err());
        let short = [&MAGIC[..], &KeyId::of(&A).0[..]].concat();
        let e = s.open("changes", short.into()).unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
    }

    #[test]
    fn key_ids_round_trip_as_hex() {
        let id = KeyId::of(&A);
        let text = id.to_string();
        assert_eq!(text.len(), 16);
        assert_eq!(KeyId::try_from(text).unwrap(), id);
        assert!(KeyId::try_from("zz".to_owned()).is_err());
    }
}
