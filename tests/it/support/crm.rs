//! Field-sync events for adapter contract tests, built the way capture builds them (the value
//! checked and normalised by `fieldsync::fields`), without a database.

use fieldsync::adapters::Payload;
use fieldsync::fields::{check, Context, FieldType, Rules};
use fieldsync::lsn::Lsn;
use fieldsync::store::record::EventId;
use serde_json::{json, Value};

/// A wedding's context as events carry it.
pub fn wedding(id: &str) -> Value {
    json!({
        "id": id,
        "organization_id": "0b5c3a52-8f0e-4c1e-9a57-6c1f4f4b8f01",
        "organization_name": "Petals & Vows",
        "couple_names": "Amara & Tom",
        "wedding_date": "2027-06-19",
        "timezone": "Europe/London",
        "venue": {"name": "Kew Gardens", "formatted_address": "Richmond, London TW9 3AE, UK"},
        "guest_total": 137
    })
}

/// Makes events with increasing ids, as one transaction after another.
#[derive(Default)]
pub struct Events {
    lsn: u64,
}

impl Events {
    /// An event of `kind` (`field.created`, `field.updated`, `field.deleted`) for one field of the
    /// wedding. `value` is what the app wrote (for a delete: the value the row held).
    pub fn payload(
        &mut self,
        kind: &str,
        field_type: &str,
        field_id: &str,
        value: Value,
        wedding: &Value,
    ) -> Payload {
        self.lsn += 0x100;
        let id = EventId {
            commit_lsn: Lsn(0x1600000 + self.lsn),
            index: 0,
        };
        let checked = check(
            &FieldType::parse(field_type),
            &value,
            &Context::default(),
            &Rules::today_utc(),
        );
        let deleted = kind == "field.deleted";
        let envelope = json!({
            "type": kind,
            "timestamp": "2027-01-05T10:00:00.123456Z",
            "data": {
                "event_id": id,
                "organization_id": wedding["organization_id"],
                "wedding_id": wedding["id"],
                "field_id": field_id,
                "field_type": field_type,
                "old_value": if deleted { value.clone() } else { Value::Null },
                "new_value": if deleted { Value::Null } else { value },
                "normalized": if deleted { Value::Null } else { checked.normalized.unwrap_or(Value::Null) },
                "valid": deleted || checked.valid,
                "errors": if deleted { json!([]) } else { serde_json::to_value(&checked.errors).unwrap() },
                "warnings": [],
                "user_id": null,
                "updated_at": null,
                "committed_at": "2027-01-05T10:00:00.123456Z",
                "commit_lsn": Lsn(0x1600000 + self.lsn).to_string(),
                "priority": "critical",
                "snapshot": false,
                "wedding": wedding,
            }
        });
        Payload {
            id,
            body: serde_json::to_vec(&envelope).unwrap().into(),
        }
    }
}

#[test]
fn events_read_back_as_changes() {
    let w = wedding("7d3c3a52-8f0e-4c1e-9a57-6c1f4f4b8f02");
    let p = Events::default().payload(
        "field.updated",
        "guest_count_matrix",
        "f1",
        json!({"adults": 2, "children": 1, "infants": 0}),
        &w,
    );
    let c = fieldsync::adapters::crm::Change::read(&p).unwrap();
    assert_eq!(c.int("total"), Some(3));
    assert_eq!(c.wedding.timezone.as_deref(), Some("Europe/London"));
}

/// The sandboxes on a free loopback port, with their documented test credentials.
pub async fn sandbox() -> fieldsync_dev::sandbox::Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    fieldsync_dev::sandbox::spawn(listener, fieldsync_dev::sandbox::Accounts::default()).unwrap()
}

/// Credentials that let adapters send to the sandboxes at `running` (the daemon's
/// `[dispatch] allowed_base_urls`).
pub fn credentials(running: &fieldsync_dev::sandbox::Running) -> fieldsync::credentials::Credentials {
    fieldsync::credentials::Credentials::default().allowing(&[running.url()])
}

/// The client adapters are given (as the dispatcher builds it: no redirects).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A response body as JSON.
pub async fn json(r: reqwest::Response) -> Value {
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

/// Seeds organisation `org` (in Europe/London), its integrations ((id or a generated one, type,
/// config)) and its weddings (couple "Couple n", married on 2027-06-19 in Europe/London).
pub async fn seed(
    db: &tokio_postgres::Client,
    org: &str,
    integrations: Vec<(Option<&str>, &str, Value)>,
    weddings: &[String],
) {
    db.execute(
        "INSERT INTO organizations (id, name, timezone) VALUES ($1::text::uuid, 'Petals & Vows', 'Europe/London')",
        &[&org],
    )
    .await
    .unwrap();
    for (id, kind, config) in integrations {
        db.execute(
            "INSERT INTO organization_integrations (id, organization_id, integration_type, config)
             VALUES (coalesce($1::text::uuid, gen_random_uuid()), $2::text::uuid, $3, $4::text::jsonb)",
            &[&id, &org, &kind, &config.to_string()],
        )
        .await
        .unwrap();
    }
    for (n, w) in weddings.iter().enumerate() {
        db.execute(
            "INSERT INTO weddings (id, organization_id, couple_names, wedding_date, timezone)
             VALUES ($1::text::uuid, $2::text::uuid, $3, '2027-06-19', 'Europe/London')",
            &[w, &org, &format!("Couple {n}")],
        )
        .await
        .unwrap();
    }
}
