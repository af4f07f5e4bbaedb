-- Operator tokens: not bound to a tenant, they see every tenant's dead-lettered messages
-- through the admin API. Tenant tokens (scim, admin) keep their tenant.
alter table tenancy.api_tokens alter column tenant_id drop not null;
alter table tenancy.api_tokens drop constraint api_tokens_kind_check;
alter table tenancy.api_tokens add constraint api_tokens_kind_check check (kind in ('scim', 'admin', 'operator'));
alter table tenancy.api_tokens add constraint api_tokens_tenant_scope
    check ((kind = 'operator') = (tenant_id is null));
