-- Services cache who a bearer token is (muster_infra::token_cache); every change to tokens or
-- to the settings a token's answer depends on is announced, whoever makes it.
create function tenancy.notify_auth_change() returns trigger language plpgsql as $$
begin
    perform pg_notify('muster_auth', tg_table_name);
    return null;
end
$$;

create trigger api_tokens_changed after insert or update or delete or truncate on tenancy.api_tokens
    for each statement execute function tenancy.notify_auth_change();
create trigger tenant_settings_changed after insert or update or delete or truncate on tenancy.tenant_settings
    for each statement execute function tenancy.notify_auth_change();
