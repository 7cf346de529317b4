-- fieldsync default wedding schema.
--
-- The tables a wedding-planning app keeps and fieldsync reads by default. Column names here are the
-- defaults of fieldsync's table mapping (organisation, wedding, field id, field type, value, user);
-- another schema works too when the mapping is configured.
--
-- Idempotent: every statement can run again on a database that already has the schema.
-- Requires PostgreSQL 13+ (gen_random_uuid() is in core).

CREATE TABLE IF NOT EXISTS organizations (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name       text NOT NULL,
    timezone   text NOT NULL DEFAULT 'UTC'
);

COMMENT ON TABLE organizations IS 'A wedding-planning business (a tenant).';
COMMENT ON COLUMN organizations.timezone IS 'IANA time zone name, e.g. Europe/Lisbon.';

CREATE TABLE IF NOT EXISTS weddings (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    couple_names    text NOT NULL,
    wedding_date    date,
    timezone        text,
    venue           jsonb,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE weddings IS 'One wedding planned by an organization.';
COMMENT ON COLUMN weddings.timezone IS 'IANA time zone of the wedding; NULL means the organization''s.';
COMMENT ON COLUMN weddings.venue IS 'Venue details: name, address, coordinates, contact.';

CREATE INDEX IF NOT EXISTS weddings_organization_id_idx ON weddings (organization_id);
CREATE INDEX IF NOT EXISTS weddings_wedding_date_idx ON weddings (wedding_date);

CREATE TABLE IF NOT EXISTS form_field_values (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    wedding_id      uuid NOT NULL REFERENCES weddings (id) ON DELETE CASCADE,
    field_id        uuid NOT NULL,
    field_type      text NOT NULL,
    value           jsonb,
    updated_by      uuid,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT form_field_values_wedding_field_key UNIQUE (wedding_id, field_id)
);

COMMENT ON TABLE form_field_values IS
    'Current value of each form field of each wedding: one row per (wedding_id, field_id).';
COMMENT ON COLUMN form_field_values.field_type IS 'text, number, date, choice, guest_count, ...';
COMMENT ON COLUMN form_field_values.value IS 'The value as JSON; personal data, never logged.';
COMMENT ON COLUMN form_field_values.updated_by IS 'User who made the change; NULL for system writes.';

CREATE INDEX IF NOT EXISTS form_field_values_organization_id_idx ON form_field_values (organization_id);

CREATE TABLE IF NOT EXISTS organization_integrations (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    integration_type text NOT NULL,
    config           jsonb NOT NULL DEFAULT '{}'::jsonb,
    is_active        boolean NOT NULL DEFAULT true,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE organization_integrations IS
    'External systems (CRMs, calendars, webhooks) an organization syncs wedding fields to.';
COMMENT ON COLUMN organization_integrations.config IS
    'Per-integration settings (account, field mapping); credentials belong in fieldsync''s secrets.';

CREATE INDEX IF NOT EXISTS organization_integrations_organization_id_idx
    ON organization_integrations (organization_id);
