//! The resources the sandbox serves: their paths, collection names, stored lists, sortable and
//! read-only properties.

use serde_json::Value;

use super::State;

/// The resources the sandbox serves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Kind {
    Job,
    Contact,
    JobContact,
    Event,
    CustomField,
}

impl Kind {
    pub(super) fn parse(segment: &str) -> Option<Kind> {
        Some(match segment {
            "job" => Kind::Job,
            "address-book" => Kind::Contact,
            "job-contact" => Kind::JobContact,
            "event" => Kind::Event,
            "custom-field" => Kind::CustomField,
            _ => return None,
        })
    }

    pub(super) fn segment(self) -> &'static str {
        match self {
            Kind::Job => "job",
            Kind::Contact => "address-book",
            Kind::JobContact => "job-contact",
            Kind::Event => "event",
            Kind::CustomField => "custom-field",
        }
    }

    pub(super) fn collection(self) -> &'static str {
        match self {
            Kind::Job => "job-collection",
            Kind::Contact => "addressbook-collection",
            Kind::JobContact => "jobcontact-collection",
            Kind::Event => "event-collection",
            Kind::CustomField => "customfield-collection",
        }
    }

    pub(super) fn title(self) -> &'static str {
        match self {
            Kind::Job => "job",
            Kind::Contact => "contact",
            Kind::JobContact => "job contact",
            Kind::Event => "event",
            Kind::CustomField => "custom field",
        }
    }

    pub(super) fn list(self, st: &State) -> &Vec<Value> {
        match self {
            Kind::Job => &st.jobs,
            Kind::Contact => &st.contacts,
            Kind::JobContact => &st.job_contacts,
            Kind::Event => &st.events,
            Kind::CustomField => &st.custom_fields,
        }
    }

    pub(super) fn list_mut(self, st: &mut State) -> &mut Vec<Value> {
        match self {
            Kind::Job => &mut st.jobs,
            Kind::Contact => &mut st.contacts,
            Kind::JobContact => &mut st.job_contacts,
            Kind::Event => &mut st.events,
            Kind::CustomField => &mut st.custom_fields,
        }
    }

    /// Properties sortable with `sortBy` (the spec's lists, the ones we store).
    pub(super) fn sortable(self) -> &'static [&'static str] {
        match self {
            Kind::Job => &[
                "id",
                "modified",
                "created",
                "name",
                "eventDate",
                "guestCount",
                "bookingDate",
                "closed",
                "stage",
            ],
            Kind::Contact => &["id", "modified", "created", "name", "kind"],
            Kind::JobContact => &["id", "modified", "created"],
            Kind::Event | Kind::CustomField => &["id", "modified", "created", "name"],
        }
    }

    /// Read-only properties: ignored when sent (assumption).
    pub(super) fn read_only(self) -> &'static [&'static str] {
        match self {
            Kind::Job => &[
                "title",
                "accountBalance",
                "creditBalance",
                "totalCost",
                "totalProfit",
                "totalRevenue",
                "jobTypeName",
                "leadSourceName",
                "leadStatusName",
                "closedReasonName",
                "workflowName",
                "sample",
                "staleDate",
                "primarySessionId",
                "nextInteractionDate",
                "nextInteractionItem",
                "previousInteractionDate",
                "previousInteractionItem",
                "lastClientActivity",
                "leadStatusChangedAt",
                "customNumber",
            ],
            Kind::Contact => &[
                "accountBalance",
                "creditBalance",
                "totalCost",
                "totalRevenue",
                "anonymized",
                "customNumber",
                "notes",
            ],
            Kind::JobContact => &["roleKinds"],
            Kind::Event => &["startUtc", "endUtc", "readOnly"],
            Kind::CustomField => &[],
        }
    }
}
