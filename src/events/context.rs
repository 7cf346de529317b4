//! The wedding context store: the newest known state of each wedding, organisation and
//! integration, kept in sled and fed by the same replication stream (and the initial snapshot),
//! so every event can carry its wedding's context, also for weddings unchanged since start.
//!
//! Trees: `ctx_weddings` (wedding id → [`WeddingContext`] JSON), `ctx_organizations`
//! (organisation id → [`OrganizationContext`] JSON), `ctx_integrations`
//! (`organisation id ‖ 0x00 ‖ integration id` → [`Integration`] JSON, so an organisation's
//! integrations are one range scan).
//!
//! Updates are upserts and deletes of whole rows applied in commit order. A transaction applied
//! twice (a replay after a crash before its records were flushed) leaves the same state, so the
//! store needs no flush of its own: it is flushed with the queue.

use serde::{Deserialize, Serialize};

use crate::queue::QueueError;

/// What every event carries about its wedding.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WeddingContext {
    pub id: String,
    pub organization_id: Option<String>,
    pub organization_name: Option<String>,
    pub couple_names: Option<String>,
    pub wedding_date: Option<String>,
    /// The wedding's time zone, else its organisation's.
    pub timezone: Option<String>,
    pub venue: Option<serde_json::Value>,
    /// From the newest valid `guest_count_matrix` field, when known.
    pub guest_total: Option<u32>,
    /// From the newest valid `venue_selector` field's `estimated_capacity`, when known.
    pub venue_capacity: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OrganizationContext {
    pub id: String,
    pub name: Option<String>,
    pub timezone: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Integration {
    pub id: String,
    pub organization_id: String,
    pub integration_type: String,
    pub config: serde_json::Value,
    pub is_active: bool,
}

#[derive(Clone)]
pub struct ContextStore {
    weddings: sled::Tree,
    organizations: sled::Tree,
    integrations: sled::Tree,
}

impl ContextStore {
    pub(crate) fn open(db: &sled::Db) -> Result<ContextStore, QueueError> {
        Ok(ContextStore {
            weddings: db.open_tree("ctx_weddings")?,
            organizations: db.open_tree("ctx_organizations")?,
            integrations: db.open_tree("ctx_integrations")?,
        })
    }

    /// A wedding row changed: replace its columns, keep the facts learnt from its fields.
    pub fn upsert_wedding(&self, mut w: WeddingContext) -> Result<(), QueueError> {
        if let Some(old) = self.get::<WeddingContext>(&self.weddings, &w.id)? {
            w.guest_total = w.guest_total.or(old.guest_total);
            w.venue_capacity = w.venue_capacity.or(old.venue_capacity);
        }
        put(&self.weddings, w.id.as_bytes(), &w)
    }

    pub fn delete_wedding(&self, id: &str) -> Result<(), QueueError> {
        self.weddings.remove(id.as_bytes())?;
        Ok(())
    }

    /// Records facts learnt from a field value (guest total, venue capacity).
    pub fn learn(
        &self,
        wedding_id: &str,
        guest_total: Option<u32>,
        venue_capacity: Option<u32>,
    ) -> Result<(), QueueError> {
        let mut w = self
            .get::<WeddingContext>(&self.weddings, wedding_id)?
            .unwrap_or_else(|| WeddingContext {
                id: wedding_id.to_owned(),
                ..WeddingContext::default()
            });
        w.guest_total = guest_total.or(w.guest_total);
        w.venue_capacity = venue_capacity.or(w.venue_capacity);
        put(&self.weddings, wedding_id.as_bytes(), &w)
    }

    pub fn upsert_organization(&self, o: OrganizationContext) -> Result<(), QueueError> {
        put(&self.organizations, o.id.as_bytes(), &o)
    }

    pub fn delete_organization(&self, id: &str) -> Result<(), QueueError> {
        self.organizations.remove(id.as_bytes())?;
        Ok(())
    }

    pub fn upsert_integration(&self, i: Integration) -> Result<(), QueueError> {
        // an integration may move to another organisation: drop any old key first
        self.delete_integration(&i.id)?;
        put(
            &self.integrations,
            &integration_key(&i.organization_id, &i.id),
            &i,
        )
    }

    pub fn delete_integration(&self, id: &str) -> Result<(), QueueError> {
        for item in self.integrations.iter() {
            let (key, _) = item?;
            if key.rsplit(|b| *b == 0).next() == Some(id.as_bytes()) {
                self.integrations.remove(key)?;
            }
        }
        Ok(())
    }

    /// `TRUNCATE` of a context table.
    pub fn clear_weddings(&self) -> Result<(), QueueError> {
        Ok(self.weddings.clear()?)
    }
    pub fn clear_organizations(&self) -> Result<(), QueueError> {
        Ok(self.organizations.clear()?)
    }
    pub fn clear_integrations(&self) -> Result<(), QueueError> {
        Ok(self.integrations.clear()?)
    }

    /// The wedding's context with its organisation's name and, when the wedding has none, time zone.
    pub fn wedding(&self, id: &str) -> Result<Option<WeddingContext>, QueueError> {
        let Some(mut w) = self.get::<WeddingContext>(&self.weddings, id)? else {
            return Ok(None);
        };
        if let Some(org_id) = &w.organization_id {
            if let Some(org) = self.get::<OrganizationContext>(&self.organizations, org_id)? {
                w.organization_name = org.name;
                w.timezone = w.timezone.or(org.timezone);
            }
        }
        Ok(Some(w))
    }

    /// The active integrations of an organisation.
    pub fn active_integrations(&self, organization_id: &str) -> Result<Vec<Integration>, QueueError> {
        let mut prefix = organization_id.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.integrations.scan_prefix(prefix) {
            let (key, value) = item?;
            let i: Integration = decode(&key, &value)?;
            if i.is_active {
                out.push(i);
            }
        }
        Ok(out)
    }

    pub fn counts(&self) -> (usize, usize, usize) {
        (
            self.organizations.len(),
            self.weddings.len(),
            self.integrations.len(),
        )
    }

    fn get<T: serde::de::DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        id: &str,
    ) -> Result<Option<T>, QueueError> {
        tree.get(id.as_bytes())?
            .map(|v| decode(id.as_bytes(), &v))
            .transpose()
    }
}

fn integration_key(organization_id: &str, id: &str) -> Vec<u8> {
    let mut k = organization_id.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

fn put<T: Serialize>(tree: &sled::Tree, key: &[u8], value: &T) -> Result<(), QueueError> {
    tree.insert(key, serde_json::to_vec(value).expect("context serializes"))?;
    Ok(())
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T, QueueError> {
    serde_json::from_slice(value).map_err(|e| QueueError::Corrupt {
        what: format!("context entry {}", String::from_utf8_lossy(key)),
        reason: e.to_string(),
    })
}
