-- Values admins set manually where Entra ID sent none (provenance, DESIGN.md): {"title": "…"}.
alter table members.members add column manual jsonb not null default '{}';

-- Company settings carry a version so that `tenant.settings_changed` events follow the
-- ordering and idempotency rule like every other entity.
alter table tenancy.tenant_settings add column version bigint not null default 1;

-- The rest of the company's settings (DESIGN.md, "Manager settings"; issue 6 acts on the
-- manager ones). With provisioning off, the SCIM API answers 403 so Entra ID reports it.
alter table tenancy.tenant_settings
    add column provisioning_enabled boolean not null default true,
    add column provisioning_source text not null default 'azure' check (provisioning_source in ('azure')),
    add column notify_managers_on_import boolean not null default false,
    add column managers_toggle_data_capture boolean not null default false;
