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

use super::cipher::{SealedTree, Sealer};
use super::StoreError;

/// Facts about a wedding learnt from its field values, which later events carry in its context.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Facts {
    /// The newest valid `guest_count_matrix` total.
    pub guest_total: Option<u32>,
    /// The newest valid `venue_selector` value (normalised), and its `estimated_capacity`.
    pub venue: Option<serde_json::Value>,
    pub venue_capacity: Option<u32>,
}

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
    /// The newest of the wedding row's venue column and its valid `venue_selector` field.
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

/// An integration row. Its `config` holds credentials, so `Debug` leaves it out.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Integration {
    pub id: String,
    pub organization_id: String,
    pub integration_type: String,
    pub config: serde_json::Value,
    pub is_active: bool,
}

#[cfg(test)]
impl Integration {
    /// An integration of organisation `o1` for unit tests.
    pub(crate) fn for_test(kind: &str, config: serde_json::Value, active: bool) -> Integration {
        Integration {
            id: "i1".into(),
            organization_id: "o1".into(),
            integration_type: kind.into(),
            config,
            is_active: active,
        }
    }
}

impl std::fmt::Debug for Integration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Integration")
            .field("id", &self.id)
            .field("organization_id", &self.organization_id)
            .field("integration_type", &self.integration_type)
            .field("is_active", &self.is_active)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
pub struct ContextStore {
    weddings: SealedTree,
    organizations: SealedTree,
    integrations: SealedTree,
}

impl ContextStore {
    pub(crate) fn open(db: &sled::Db, sealer: &Sealer) -> Result<ContextStore, StoreError> {
        Ok(ContextStore {
            weddings: SealedTree::open(db, "ctx_weddings", sealer)?,
            organizations: SealedTree::open(db, "ctx_organizations", sealer)?,
            integrations: SealedTree::open(db, "ctx_integrations", sealer)?,
        })
    }

    /// A wedding row changed: replace its columns, keep the facts learnt from its fields (a
    /// venue column left empty keeps the venue of the venue field).
    pub fn upsert_wedding(&self, mut w: WeddingContext) -> Result<(), StoreError> {
        if let Some(old) = self.get::<WeddingContext>(&self.weddings, &w.id)? {
            w.guest_total = w.guest_total.or(old.guest_total);
            w.venue = w.venue.or(old.venue);
            w.venue_capacity = w.venue_capacity.or(old.venue_capacity);
        }
        put(&self.weddings, w.id.as_bytes(), &w)
    }

    pub fn delete_wedding(&self, id: &str) -> Result<(), StoreError> {
        self.weddings.remove(id.as_bytes())?;
        Ok(())
    }

    /// Records facts learnt from field values (guest total, venue and its capacity).
    pub fn learn(&self, wedding_id: &str, facts: Facts) -> Result<(), StoreError> {
        let mut w = self
            .get::<WeddingContext>(&self.weddings, wedding_id)?
            .unwrap_or_else(|| WeddingContext {
                id: wedding_id.to_owned(),
                ..WeddingContext::default()
            });
        w.guest_total = facts.guest_total.or(w.guest_total);
        w.venue = facts.venue.or(w.venue);
        w.venue_capacity = facts.venue_capacity.or(w.venue_capacity);
        put(&self.weddings, wedding_id.as_bytes(), &w)
    }

    pub fn upsert_organization(&self, o: OrganizationContext) -> Result<(), StoreError> {
        put(&self.organizations, o.id.as_bytes(), &o)
    }

    pub fn delete_organization(&self, id: &str) -> Result<(), StoreError> {
        self.organizations.remove(id.as_bytes())?;
        Ok(())
    }

    pub fn upsert_integration(&self, i: Integration) -> Result<(), StoreError> {
        // an integration may move to another organisation: drop any old key first
        self.delete_integration(&i.id)?;
        put(
            &self.integrations,
            &integration_key(&i.organization_id, &i.id),
            &i,
        )
    }

    pub fn delete_integration(&self, id: &str) -> Result<(), StoreError> {
        for item in self.integrations.iter() {
            let (key, _) = item?;
            if key.rsplit(|b| *b == 0).next() == Some(id.as_bytes()) {
                self.integrations.remove(key)?;
            }
        }
        Ok(())
    }

    /// `TRUNCATE` of a context table.
    pub fn clear_weddings(&self) -> Result<(), StoreError> {
        Ok(self.weddings.raw().clear()?)
    }
    pub fn clear_organizations(&self) -> Result<(), StoreError> {
        Ok(self.organizations.raw().clear()?)
    }
    pub fn clear_integrations(&self) -> Result<(), StoreError> {
        Ok(self.integrations.raw().clear()?)
    }

    /// The wedding's context with its organisation's name and, when the wedding has none, time zone.
    pub fn wedding(&self, id: &str) -> Result<Option<WeddingContext>, StoreError> {
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

    /// Every integration (active or not), by id.
    pub fn integrations(&self) -> Result<std::collections::HashMap<String, Integration>, StoreError> {
        let mut out = std::collections::HashMap::new();
        for item in self.integrations.iter() {
            let (key, value) = item?;
            let i: Integration = decode(&key, &value)?;
            out.insert(i.id.clone(), i);
        }
        Ok(out)
    }

    /// The active integrations of an organisation.
    pub fn active_integrations(&self, organization_id: &str) -> Result<Vec<Integration>, StoreError> {
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

    fn get<T: serde::de::DeserializeOwned>(
        &self,
        tree: &SealedTree,
        id: &str,
    ) -> Result<Option<T>, StoreError> {
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

fn put<T: Serialize>(tree: &SealedTree, key: &[u8], value: &T) -> Result<(), StoreError> {
    tree.insert(key, &serde_json::to_vec(value).expect("context serializes"))?;
    Ok(())
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(value).map_err(|e| StoreError::Corrupt {
        what: format!("context entry {}", String::from_utf8_lossy(key)),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, ContextStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new()
            .path(dir.path())
            .temporary(true)
            .open()
            .unwrap();
        let store = ContextStore::open(&db, &Sealer::default()).unwrap();
        (dir, store)
    }

    #[test]
    fn a_wedding_gets_its_organisation_name_and_time_zone_and_keeps_learnt_facts() {
        let (_dir, s) = store();
        s.upsert_organization(OrganizationContext {
            id: "o1".into(),
            name: Some("Studio".into()),
            timezone: Some("Europe/London".into()),
        })
        .unwrap();
        s.learn(
            "w1",
            Facts {
                guest_total: Some(120),
                venue: Some(serde_json::json!({"name": "Kew Gardens"})),
                venue_capacity: None,
            },
        )
        .unwrap();
        s.upsert_wedding(WeddingContext {
            id: "w1".into(),
            organization_id: Some("o1".into()),
            couple_names: Some("A & B".into()),
            ..WeddingContext::default()
        })
        .unwrap();
        let w = s.wedding("w1").unwrap().unwrap();
        assert_eq!(w.organization_name.as_deref(), Some("Studio"));
        assert_eq!(w.timezone.as_deref(), Some("Europe/London"));
        assert_eq!(
            w.guest_total,
            Some(120),
            "a wedding row update keeps the learnt guest total"
        );
        assert_eq!(
            w.venue,
            Some(serde_json::json!({"name": "Kew Gardens"})),
            "an empty venue column keeps the venue field's venue"
        );
        s.delete_wedding("w1").unwrap();
        assert!(s.wedding("w1").unwrap().is_none());
    }

    #[test]
    fn only_active_integrations_of_the_organisation_are_listed_and_a_moved_one_follows() {
        let (_dir, s) = store();
        let i = |id: &str, org: &str, active: bool| Integration {
            id: id.into(),
            organization_id: org.into(),
            integration_type: "webhook".into(),
            config: serde_json::json!({}),
            is_active: active,
        };
        s.upsert_integration(i("a", "o1", true)).unwrap();
        s.upsert_integration(i("b", "o1", false)).unwrap();
        s.upsert_integration(i("c", "o2", true)).unwrap();
        let ids = |org: &str| {
            s.active_integrations(org)
                .unwrap()
                .into_iter()
                .map(|i| i.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids("o1"), vec!["a"]);
        s.upsert_integration(i("c", "o1", true)).unwrap();
        assert_eq!(ids("o1"), vec!["a", "c"]);
        assert!(ids("o2").is_empty());
        s.delete_integration("a").unwrap();
        assert_eq!(ids("o1"), vec!["c"]);
    }
}
