-- Least privilege for Muster on PostgreSQL (docs/security.md).
--
-- Two roles: an owner that owns Muster's schema and tables and runs
-- `muster db migrate`, and an app role that `muster serve` (and the CLI's
-- token and audit commands) connect as. The app role owns nothing, so it can
-- neither disable the audit log's triggers nor alter or drop its tables; on
-- audit_log it may only INSERT and SELECT.
--
-- Run as the owner after every `muster db migrate` (it is idempotent):
--   psql "$OWNER_DATABASE_URL" -v schema=public -v app_role=muster_app -f least-privilege.sql
-- The app role must exist first, e.g. CREATE ROLE muster_app LOGIN PASSWORD '…';
\set ON_ERROR_STOP on

GRANT USAGE ON SCHEMA :"schema" TO :"app_role";
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA :"schema" TO :"app_role";
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA :"schema" TO :"app_role";

-- The audit log: append and read, nothing else.
REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON :"schema".audit_log FROM :"app_role";
-- Migrations are the owner's: the app only reads which ones are applied.
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON :"schema".schema_migrations FROM :"app_role";
