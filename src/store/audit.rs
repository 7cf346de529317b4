//! The audit trail: every operator action (requeue, pause, resume, and those refused for lack of
//! a role), who took it, from which address, when, on what, and the result. It never holds field
//! values: targets are integration ids, event ids and wedding ids.
//!
//! Tree `audit`: `unix micros (u64 BE) ‖ sequence (u32 BE)` → [`AuditEntry`] JSON, oldest first;
//! kept for `[admin] audit_retention` ([`AuditTrail::prune`]). An entry is flushed before the
//! action's answer goes out, so an acknowledged action is on record.

use std::sync::atomic::{AtomicU32, Ordering};

use serde::{Deserialize, Serialize};

use super::StoreError;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// One operator action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// RFC 3339, microseconds, UTC.
    pub at: String,
    /// The admin user, the HTTP token's name, or `cli` (the command line on a stopped daemon's
    /// store).
    pub actor: String,
    /// `read` or `operate`.
    pub role: String,
    /// `admin` (the SQL port), `http` or `cli`.
    pub via: String,
    /// The client's address, when it came over the network.
    pub from: Option<String>,
    /// `requeue`, `pause` or `resume`.
    pub action: String,
    pub integration: Option<String>,
    /// Event ids the action named, if any.
    pub events: Vec<String>,
    /// `ok: …`, `denied: …` or `failed: …`.
    pub result: String,
}

#[derive(Clone)]
pub struct AuditTrail {
    tree: sled::Tree,
}

impl AuditTrail {
    pub(super) fn open(db: &sled::Db) -> Result<AuditTrail, StoreError> {
        Ok(AuditTrail {
            tree: db.open_tree("audit")?,
        })
    }

    /// Records `entry` and flushes it.
    pub fn record(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let micros = chrono::Utc::now().timestamp_micros().max(0) as u64;
        let mut k = [0u8; 12];
        k[..8].copy_from_slice(&micros.to_be_bytes());
        k[8..].copy_from_slice(&SEQ.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        self.tree
            .insert(k, serde_json::to_vec(entry).expect("an audit entry serializes"))?;
        self.tree.flush()?;
        Ok(())
    }

    /// The newest `last` entries, oldest first.
    pub fn newest(&self, last: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.iter().rev().take(last) {
            let (_, v) = item?;
            out.push(serde_json::from_slice(&v).map_err(|e| super::corrupt("audit entry", &e.to_string()))?);
        }
        out.reverse();
        Ok(out)
    }

    /// Removes entries older than `retention`; returns how many.
    pub fn prune(&self, retention: std::time::Duration) -> Result<u64, StoreError> {
        let now = chrono::Utc::now().timestamp_micros().max(0) as u64;
        let cutoff = now.saturating_sub(retention.as_micros() as u64).to_be_bytes();
        let mut removed = 0;
        for item in self.tree.range(..&cutoff[..]) {
            let (k, _) = item?;
            self.tree.remove(k)?;
            removed += 1;
        }
        Ok(removed)
    }
}

/// Prunes the trail at start and then every hour, until `stop` turns true.
pub async fn run(
    trail: AuditTrail,
    retention: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        let t = trail.clone();
        match tokio::task::spawn_blocking(move || t.prune(retention)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!("audit trail: removing old entries failed, retrying in an hour: {e}")
            }
            Err(e) => tracing::error!("audit trail: pruning ended abnormally: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: &str) -> AuditEntry {
        AuditEntry {
            at: crate::store::deliveries::now_rfc3339(),
            actor: "ops".to_owned(),
            role: "operate".to_owned(),
            via: "admin".to_owned(),
            from: Some("127.0.0.1:5000".to_owned()),
            action: action.to_owned(),
            integration: Some("i-1".to_owned()),
            events: Vec::new(),
            result: "ok: paused".to_owned(),
        }
    }

    #[test]
    fn entries_are_kept_in_order_and_pruned_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let trail = AuditTrail::open(&db).unwrap();
        for a in ["pause", "resume", "requeue"] {
            trail.record(&entry(a)).unwrap();
        }
        let actions: Vec<String> = trail.newest(2).unwrap().into_iter().map(|e| e.action).collect();
        assert_eq!(actions, ["resume", "requeue"]);
        assert_eq!(trail.prune(std::time::Duration::from_secs(3600)).unwrap(), 0);
        assert_eq!(trail.prune(std::time::Duration::ZERO).unwrap(), 3);
        assert!(trail.newest(10).unwrap().is_empty());
    }
}
