//! Which integrations an event goes to. Capture decides it when it queues the event, and the ids
//! travel in the stored record, so delivery state exists from the moment the event is durable.
//!
//! [`IntegrationType`] is the only list of the integration types that have an adapter, with the
//! field types each takes by default (`FIELD_TYPES.md`); an integration's config may narrow them
//! with `field_types`.

use super::context::Integration;

/// An integration type that has an adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IntegrationType {
    Webhook,
    Tave,
    GoogleCalendar,
    Stripe,
    HoneyBook,
    LightBlue,
}

impl IntegrationType {
    pub const ALL: [IntegrationType; 6] = [
        IntegrationType::Webhook,
        IntegrationType::Tave,
        IntegrationType::GoogleCalendar,
        IntegrationType::Stripe,
        IntegrationType::HoneyBook,
        IntegrationType::LightBlue,
    ];

    /// `organization_integrations.integration_type` as written in the database.
    pub fn parse(text: &str) -> Option<IntegrationType> {
        IntegrationType::ALL.into_iter().find(|t| t.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IntegrationType::Webhook => "webhook",
            IntegrationType::Tave => "tave",
            IntegrationType::GoogleCalendar => "google_calendar",
            IntegrationType::Stripe => "stripe",
            IntegrationType::HoneyBook => "honeybook",
            IntegrationType::LightBlue => "lightblue",
        }
    }

    /// The names of all types, for messages.
    pub fn names() -> String {
        IntegrationType::ALL.map(IntegrationType::as_str).join(", ")
    }

    /// The field types the adapter takes when the config names none (`None`: every type).
    pub fn default_field_types(self) -> Option<&'static [&'static str]> {
        const VENUE_DATE_GUESTS: [&str; 3] = ["guest_count_matrix", "wedding_date", "venue_selector"];
        match self {
            IntegrationType::Webhook => None,
            IntegrationType::Tave => Some(&[
                "guest_count_matrix",
                "wedding_date",
                "venue_selector",
                "timeline_builder",
                "budget_category",
                "dietary_matrix",
            ]),
            IntegrationType::GoogleCalendar => Some(&["wedding_date", "venue_selector", "timeline_builder"]),
            IntegrationType::Stripe => Some(&[
                "guest_count_matrix",
                "wedding_date",
                "venue_selector",
                "budget_category",
            ]),
            IntegrationType::HoneyBook => Some(&VENUE_DATE_GUESTS),
            IntegrationType::LightBlue => Some(&[
                "guest_count_matrix",
                "wedding_date",
                "venue_selector",
                "dietary_matrix",
            ]),
        }
    }
}

/// Does this integration take events of this field type? It must be active and have an adapter,
/// and the type must be in its config's `field_types`, else in its type's defaults.
pub fn accepts(i: &Integration, field_type: &str) -> bool {
    let Some(kind) = IntegrationType::parse(&i.integration_type).filter(|_| i.is_active) else {
        return false;
    };
    match i.config.get("field_types").and_then(|f| f.as_array()) {
        Some(list) => list.iter().any(|t| t.as_str() == Some(field_type)),
        None => kind
            .default_field_types()
            .map_or(true, |types| types.contains(&field_type)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn integration(kind: &str, config: serde_json::Value, active: bool) -> Integration {
        Integration::for_test(kind, config, active)
    }

    #[test]
    fn fan_out_takes_active_integrations_with_an_adapter_and_the_field_type() {
        let all = serde_json::json!({"url": "https://x/y"});
        assert!(accepts(
            &integration("webhook", all.clone(), true),
            "guest_count_matrix"
        ));
        assert!(!accepts(
            &integration("webhook", all, false),
            "guest_count_matrix"
        ));
        assert!(!accepts(&integration("fax", serde_json::json!({}), true), "text"));
        let some = serde_json::json!({"field_types": ["wedding_date"]});
        assert!(accepts(
            &integration("webhook", some.clone(), true),
            "wedding_date"
        ));
        assert!(!accepts(&integration("webhook", some, true), "text"));
        assert!(accepts(
            &integration("stripe", serde_json::json!({}), true),
            "budget_category"
        ));
        assert!(!accepts(
            &integration("stripe", serde_json::json!({}), true),
            "timeline_builder"
        ));
    }

    #[test]
    fn every_type_reads_back_from_its_name() {
        for t in IntegrationType::ALL {
            assert_eq!(IntegrationType::parse(t.as_str()), Some(t));
        }
        assert_eq!(IntegrationType::parse("Webhook"), None);
    }
}
