//! External mapping ids: how every entity the adapter creates is found again (at most 64
//! characters, stable across replays).

use serde_json::Value;

/// A hex digest prefix, for external mapping ids that would pass 64 characters.
fn short_hash(text: &str, chars: usize) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()[..chars]
        .to_owned()
}

/// The job's external mapping id: the wedding id (hashed past 64 characters).
pub fn job_mapping_id(wedding_id: &str) -> String {
    if (1..=64).contains(&wedding_id.len()) {
        wedding_id.to_owned()
    } else {
        format!("w-{}", short_hash(wedding_id, 40))
    }
}

/// The prefix of every other mapping id of a wedding: `<wedding>:` (hashed past 36 characters).
fn wedding_prefix(wedding_id: &str) -> String {
    if wedding_id.len() <= 36 {
        format!("{wedding_id}:")
    } else {
        format!("w-{}:", short_hash(wedding_id, 24))
    }
}

/// The venue link's external mapping id.
pub fn venue_mapping_id(wedding_id: &str) -> String {
    format!("{}venue", wedding_prefix(wedding_id))
}

pub(super) fn timeline_prefix(wedding_id: &str) -> String {
    format!("{}tl:", wedding_prefix(wedding_id))
}

/// A timeline event's external mapping id: `<wedding>:tl:<item key>`, at most 64 characters.
pub fn event_mapping_id(wedding_id: &str, key: &str) -> String {
    let prefix = timeline_prefix(wedding_id);
    if prefix.len() + key.len() <= 64 {
        format!("{prefix}{key}")
    } else {
        format!("{prefix}#{}", short_hash(key, 63 - prefix.len()))
    }
}

pub(super) fn mapping_ids(v: &Value) -> impl Iterator<Item = &str> {
    v["externalMappings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["id"].as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tave_mapping_ids_fit_64_characters_and_stay_stable() {
        let w = "7d3c3a52-8f0e-4c1e-9a57-6c1f4f4b8f02";
        assert_eq!(job_mapping_id(w), w);
        assert_eq!(venue_mapping_id(w), format!("{w}:venue"));
        assert_eq!(event_mapping_id(w, "ceremony"), format!("{w}:tl:ceremony"));
        let long = "a-very-long-timeline-item-title-that-goes-on-and-on";
        let id = event_mapping_id(w, long);
        assert!(id.len() <= 64 && id.starts_with(&format!("{w}:tl:#")), "{id}");
        assert_eq!(id, event_mapping_id(w, long));
        assert_ne!(id, event_mapping_id(w, &format!("{long}-2")));
        let huge = "w".repeat(100);
        assert!(job_mapping_id(&huge).len() <= 64);
        assert!(event_mapping_id(&huge, long).len() <= 64);
    }
}
