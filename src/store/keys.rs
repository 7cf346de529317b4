//! Which keys may have sealed the store's values: `meta/keys` → [`KeyRecord`] JSON.
//!
//! The record is written (and flushed) before the first value under a new key, so it always
//! names every key a stored value may need. On open, a store that needs a key the configuration
//! lacks is refused before anything is written; `Store::reencrypt` narrows the record to the
//! current key once every value is sealed under it.

use serde::{Deserialize, Serialize};

use super::cipher::{KeyId, Sealer};
use super::{corrupt, StoreError};

const KEYS: &[u8] = b"keys";

/// Trees whose values are sealed when encryption is on.
pub(super) const SEALED_TREES: [&str; 6] = [
    "changes",
    "ctx_weddings",
    "ctx_organizations",
    "ctx_integrations",
    "dl_dead",
    "dl_log",
];

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Keys that may have sealed a stored value.
    pub keys: Vec<KeyId>,
    /// Values may be stored in clear (encryption was off at some point, or not yet re-encrypted).
    pub plain: bool,
}

pub(super) fn read(meta: &sled::Tree) -> Result<Option<KeyRecord>, StoreError> {
    meta.get(KEYS)?
        .map(|v| serde_json::from_slice(&v).map_err(|e| corrupt("meta/keys", &e.to_string())))
        .transpose()
}

pub(super) fn write(meta: &sled::Tree, record: &KeyRecord) -> Result<(), StoreError> {
    meta.insert(KEYS, serde_json::to_vec(record).expect("KeyRecord serializes"))?;
    meta.flush()?;
    Ok(())
}

/// Refuses a store that needs a key `sealer` lacks; then records the key new values will use.
pub(super) fn check(db: &sled::Db, meta: &sled::Tree, sealer: &Sealer, path: &str) -> Result<(), StoreError> {
    let fresh = || -> Result<bool, StoreError> {
        for name in SEALED_TREES {
            if !db.open_tree(name)?.is_empty() {
                return Ok(false);
            }
        }
        Ok(meta.is_empty())
    };
    let before = match read(meta)? {
        Some(r) => r,
        None => KeyRecord {
            keys: Vec::new(),
            plain: !fresh()?,
        },
    };
    let configured = sealer.ids();
    if let Some(id) = before.keys.iter().find(|id| !configured.contains(id)) {
        return Err(StoreError::MissingKey {
            id: *id,
            what: format!("the queue at {path}"),
        });
    }
    let mut after = before.clone();
    match sealer.current() {
        Some(id) if !after.keys.contains(&id) => after.keys.push(id),
        Some(_) => {}
        None => after.plain = true,
    }
    if read(meta)?.as_ref() != Some(&after) {
        write(meta, &after)?;
    }
    Ok(())
}
