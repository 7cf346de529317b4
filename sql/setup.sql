-- fieldsync setup: what a DBA runs once on the database that holds the wedding tables.
--
--   psql -v ON_ERROR_STOP=1 -d <database> -f sql/setup.sql
--   ALTER ROLE fieldsync PASSWORD '...';   -- then give fieldsync that password
--
-- Requires wal_level = logical on the server (a restart is needed after changing it) and a superuser
-- (or a role allowed to create roles and publications). Idempotent: safe to run again.

-- A least-privilege role: it may log in, open replication connections and read the four tables.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'fieldsync') THEN
        CREATE ROLE fieldsync LOGIN REPLICATION;
    END IF;
END
$$;

-- Re-assert the attributes in case the role existed with others.
ALTER ROLE fieldsync LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE;

GRANT SELECT ON TABLE organizations, weddings, form_field_values, organization_integrations TO fieldsync;

-- Updates and deletes carry the whole old row, so fieldsync sees what changed (values can be large
-- jsonb, which an index-only identity would omit when unchanged and TOASTed).
ALTER TABLE form_field_values REPLICA IDENTITY FULL;
ALTER TABLE weddings REPLICA IDENTITY FULL;
ALTER TABLE organization_integrations REPLICA IDENTITY FULL;

-- The publication fieldsync subscribes to.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_publication WHERE pubname = 'fieldsync') THEN
        CREATE PUBLICATION fieldsync
            FOR TABLE organizations, weddings, form_field_values, organization_integrations
            WITH (publish = 'insert, update, delete, truncate');
    ELSE
        ALTER PUBLICATION fieldsync
            SET TABLE organizations, weddings, form_field_values, organization_integrations;
        ALTER PUBLICATION fieldsync SET (publish = 'insert, update, delete, truncate');
    END IF;
END
$$;
