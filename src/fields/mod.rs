//! Typed wedding field values: validation and normalisation of the jsonb `value` of a
//! `form_field_values` row, according to its `field_type` (see `shared/FIELD_TYPES.md`).
//!
//! This module owns one pure function, [`check`], that turns `(field_type, value)` into a [`Checked`]:
//! `valid`, the `normalized` JSON form (only when valid), `errors` and `warnings`. It never panics on any
//! input and never fails: an invalid value becomes a `Checked` with `valid: false`, so a bad answer can
//! never stop the change stream.
//!
//! # Invariants
//! - Privacy: an [`Issue`] names the field *path* and the *rule*, never the value. Messages are built
//!   only from fixed text, the path and the JSON kind of what was found ("found a string"). Paths are
//!   built from the schema's key names and array indices; a caller-chosen key that does not look like
//!   an identifier (dietary counts accept any numeric key) is replaced by `<key>`.
//! - `normalized` is `Some` exactly when `valid` is true (no errors). Warnings never make a value invalid.
//! - A JSON `null` value (field cleared) is valid for every type and normalises to `null`.
//! - Unknown field types ([`FieldType::Other`]) pass through unchanged and valid.
//! - Unknown extra keys in an object value are ignored. In every normalised object an optional input key
//!   that is missing (or `null`) is **absent**, never zero or empty; derived keys are always present.
//!
//! # Normalised shapes
//! - `guest_count_matrix`: `{"adults": 120, "children": 14, "infants": 3, "total": 137,
//!   "breakdown": "120 adults, 14 children, 3 infants"}`. Counts are non-negative integers; a missing count
//!   is absent but counts as 0 in `total`. The breakdown omits absent parts, uses "1 adult" / "1 child" /
//!   "1 infant" and says "no guests" when the total is 0. Warnings: `venue_capacity_bound` (total above
//!   [`Rules::venue_capacity_warning`]), `over_venue_capacity` (total above [`Context::venue_capacity`]).
//! - `wedding_date`: `{"date": "2027-06-19", "weekday": "saturday", "season": "summer", "in_past": false}`.
//!   Input is a strict `YYYY-MM-DD` string (surrounding spaces trimmed); 29 February only in leap years.
//!   Seasons are Northern hemisphere: Mar–May spring, Jun–Aug summer, Sep–Nov autumn, else winter.
//!   A date before [`Rules::today`] gives `past_date` as a warning or error per [`Rules::past_wedding_date`].
//! - `venue_selector` (Google Places result): `{"name", "formatted_address", "place_id", "lat", "lng",
//!   "phone", "website", "kind", "estimated_capacity", "rating", "price_level"}`. `name` is required;
//!   `lat`/`lng` come from `geometry.location` and must be in [-90, 90] / [-180, 180] and come as a pair;
//!   `phone` comes from `international_phone_number` or `phone_number`, in E.164 when it can be (else the
//!   trimmed text and an `e164_phone` warning); `website` must be an http(s) URL. `kind` is always present:
//!   the first entry of `types` that maps (church, place_of_worship, mosque, synagogue, hindu_temple →
//!   `religious`; hotel, lodging → `hotel`; restaurant → `restaurant`; park → `outdoor`; banquet_hall →
//!   `banquet_hall`), else `other`. `rating` is in [0, 5], `price_level` an integer in [0, 4].
//! - `timeline_builder` (input `{"events": [...]}`): `{"items": [{"time": "23:30", "end": "00:30",
//!   "duration": 60, "ends_next_day": true, "title", "description", "category", "vendor_assignments"}],
//!   "total_duration": 60, "ceremony_time": "13:00" | null, "reception_time": "17:00" | null}`. Items are
//!   sorted by time (stable). `time` is `HH:MM` 00:00–23:59; `duration` a whole number of minutes from 1 to
//!   1440 (default 60). An item that reaches or passes midnight has `ends_next_day: true` and `end` is the
//!   wall-clock time on the next day. `ceremony_time` is the time of the first item whose category is
//!   "ceremony" or whose title contains "ceremony" (case-insensitive); `reception_time` likewise.
//! - `budget_category`: `{"category", "budgeted_amount", "actual_amount", "currency", "variance",
//!   "percentage_of_total", "payment_status", "vendor_id"}`. `category` is a required non-empty string;
//!   amounts are integers in minor units (i64); `currency` is an ISO 4217 code (trimmed and upper-cased,
//!   default "GBP"); `variance` = actual − budgeted when both are present (checked: an overflow is the
//!   error `amount_range`); `percentage_of_total` in [0, 100]; `vendor_id` a string (a number is turned
//!   into its decimal text).
//! - `dietary_matrix`: `{"counts": {"vegetarian": 12, ...}, "total_requirements": 22, "notes": "..."}`.
//!   Counts are non-negative integers for the known keys (vegetarian, vegan, gluten_free, halal, kosher,
//!   nut_allergy, dairy_free, shellfish_allergy, other) and for any other key holding a number; other keys
//!   holding non-numbers are ignored, and so are `total` and `total_requirements` (recomputed, never
//!   counted twice). `notes` is a string or absent; it is personal data and never appears in an issue.
//!   Warning `exceeds_guest_total` when the sum exceeds [`Context::guest_total`].
//! - `text` and `select`: the string unchanged. `number`: the (finite) number. `checkbox`: the boolean.
//!   `date`: a strict `YYYY-MM-DD` string. `email`: trimmed, domain lower-cased, one `@`, non-empty local
//!   part, a domain with a dot and no empty label. `phone`: E.164 (`+447700900123`): spaces, dashes and
//!   parentheses are removed, a leading `00` becomes `+`, then 8–15 digits not starting with 0.
//!
//! # Rule names
//! `type`, `required`, `non_negative_integer`, `count_range`, `iso_date`, `past_date`, `hh_mm_time`,
//! `positive_duration`, `duration_range`, `latitude_range`, `longitude_range`, `http_url`, `rating_range`,
//! `price_level_range`, `iso4217_currency`, `integer_amount`, `amount_range`, `percentage_range`,
//! `finite_number`, `email_syntax`, `e164_phone`, `venue_capacity_bound`, `over_venue_capacity`,
//! `exceeds_guest_total`; reading the value's text ([`read_json`]): `json_depth`, `number_range`,
//! `number_precision`; the wedding's context ([`context_issues`]): `wedding_date_range`,
//! `iana_time_zone`.

mod counts;
mod currency;
mod dates;
mod generic;
mod money;
mod numbers;
mod report;
mod text;
mod timeline;
mod venue;

#[cfg(test)]
mod tests;

pub use text::{context_issues, read_json, MAX_DEPTH};

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use report::Report;

/// Default for [`Rules::venue_capacity_warning`]: a guest total above it is worth a second look.
pub const DEFAULT_VENUE_CAPACITY_WARNING: u32 = 500;

/// The `field_type` column of a form field value. Unknown names are kept as [`FieldType::Other`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FieldType {
    GuestCountMatrix,
    WeddingDate,
    VenueSelector,
    TimelineBuilder,
    BudgetCategory,
    DietaryMatrix,
    Text,
    Number,
    Date,
    Email,
    Phone,
    Select,
    Checkbox,
    Other(String),
}

const NAMED: [(FieldType, &str); 13] = [
    (FieldType::GuestCountMatrix, "guest_count_matrix"),
    (FieldType::WeddingDate, "wedding_date"),
    (FieldType::VenueSelector, "venue_selector"),
    (FieldType::TimelineBuilder, "timeline_builder"),
    (FieldType::BudgetCategory, "budget_category"),
    (FieldType::DietaryMatrix, "dietary_matrix"),
    (FieldType::Text, "text"),
    (FieldType::Number, "number"),
    (FieldType::Date, "date"),
    (FieldType::Email, "email"),
    (FieldType::Phone, "phone"),
    (FieldType::Select, "select"),
    (FieldType::Checkbox, "checkbox"),
];

impl FieldType {
    /// Exact, case-sensitive names from FIELD_TYPES.md; anything else is `Other(s)`.
    pub fn parse(s: &str) -> FieldType {
        NAMED
            .iter()
            .find(|(_, name)| *name == s)
            .map(|(t, _)| t.clone())
            .unwrap_or_else(|| FieldType::Other(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        match self {
            FieldType::Other(s) => s,
            known => NAMED
                .iter()
                .find(|(t, _)| t == known)
                .map(|(_, name)| *name)
                .unwrap_or(""),
        }
    }

    /// Priority of this field when a queue is backlogged.
    pub fn default_priority(&self) -> Priority {
        match self {
            FieldType::WeddingDate | FieldType::VenueSelector | FieldType::GuestCountMatrix => {
                Priority::Critical
            }
            FieldType::TimelineBuilder | FieldType::BudgetCategory | FieldType::DietaryMatrix => {
                Priority::Important
            }
            _ => Priority::Optional,
        }
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for FieldType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FieldType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Ok(FieldType::parse(&s))
    }
}

/// Delivery priority; `Ord` puts the most urgent first (`Critical < Important < Optional`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Critical,
    Important,
    Optional,
}

impl Priority {
    /// The label of logs, metrics and the admin views.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::Important => "important",
            Priority::Optional => "optional",
        }
    }
}

/// What a wedding date before [`Rules::today`] is: fine, a warning, or an error.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PastDatePolicy {
    Allow,
    #[default]
    Warn,
    Error,
}

/// Checking rules that do not depend on the wedding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    /// The day against which `wedding_date` is judged past (the caller picks the time zone).
    pub today: chrono::NaiveDate,
    pub past_wedding_date: PastDatePolicy,
    /// Warn (`venue_capacity_bound`) when a guest total exceeds this.
    pub venue_capacity_warning: u32,
}

impl Rules {
    /// Default rules judged against `today`.
    pub fn new(today: chrono::NaiveDate) -> Rules {
        Rules {
            today,
            past_wedding_date: PastDatePolicy::default(),
            venue_capacity_warning: DEFAULT_VENUE_CAPACITY_WARNING,
        }
    }

    /// Default rules judged against today's date in UTC.
    pub fn today_utc() -> Rules {
        Rules::new(chrono::Utc::now().date_naive())
    }
}

/// What is known about the wedding the value belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    /// Known guest total of the wedding, for dietary consistency.
    pub guest_total: Option<u32>,
    /// The wedding's venue `estimated_capacity`, if known: a guest total above it is a warning.
    pub venue_capacity: Option<u32>,
}

/// One validation error or warning. Never contains the value itself.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Issue {
    /// Where in the value: `"adults"`, `"events[2].time"`, or `""` for the whole value.
    pub path: String,
    /// Stable snake_case rule name.
    pub rule: &'static str,
    /// A human sentence naming the path and the rule, without the value.
    pub message: String,
}

/// The outcome of checking one value.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Checked {
    pub valid: bool,
    /// The normalised form; `None` when invalid.
    pub normalized: Option<Value>,
    pub errors: Vec<Issue>,
    pub warnings: Vec<Issue>,
}

/// Validate and normalise one field value. Pure, total and panic-free.
pub fn check(field_type: &FieldType, value: &Value, ctx: &Context, rules: &Rules) -> Checked {
    if value.is_null() {
        return Report::default().finish(Some(Value::Null));
    }
    let mut out = Report::default();
    let normalized = match field_type {
        FieldType::GuestCountMatrix => counts::guest_count_matrix(value, ctx, rules, &mut out),
        FieldType::DietaryMatrix => counts::dietary_matrix(value, ctx, &mut out),
        FieldType::WeddingDate => dates::wedding_date(value, rules, &mut out),
        FieldType::Date => dates::date(value, &mut out),
        FieldType::VenueSelector => venue::venue_selector(value, &mut out),
        FieldType::TimelineBuilder => timeline::timeline_builder(value, &mut out),
        FieldType::BudgetCategory => money::budget_category(value, &mut out),
        FieldType::Text | FieldType::Select => generic::string(value, &mut out),
        FieldType::Number => generic::number(value, &mut out),
        FieldType::Checkbox => generic::checkbox(value, &mut out),
        FieldType::Email => generic::email(value, &mut out),
        FieldType::Phone => generic::phone(value, &mut out),
        FieldType::Other(_) => Some(value.clone()),
    };
    out.finish(normalized)
}
