-- bank linking: aggregator items (sealed access tokens) and bank accounts verified through them
CREATE TABLE link_items (
    id                 text PRIMARY KEY,
    owner_user_id      text NOT NULL,
    provider           text NOT NULL,
    external_item_id   text NOT NULL,
    access_ct          bytea NOT NULL,
    institution_id     text NOT NULL,
    institution_name   text NOT NULL,
    status             text NOT NULL CHECK (status IN ('active', 'login_required',
        'revoked', 'removed')),
    error_code         text,
    consent_expires_at timestamptz,
    balances_at        timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- One item per aggregator item: a public token exchanged twice finds the first.
CREATE UNIQUE INDEX link_items_external ON link_items (provider, external_item_id);

CREATE INDEX link_items_owner ON link_items (owner_user_id);

ALTER TABLE bank_accounts
    ADD COLUMN link_item_id text REFERENCES link_items (id),
    ADD COLUMN external_account_id text,
    ADD COLUMN account_name text,
    ADD COLUMN verification_method text NOT NULL DEFAULT 'microdeposits'
        CHECK (verification_method IN ('microdeposits', 'instant')),
    ADD COLUMN balance_available bigint,
    ADD COLUMN balance_current bigint,
    ADD COLUMN balances_at timestamptz,
    ALTER COLUMN micro_ct DROP NOT NULL;

-- An item's account is one bank account, however often the item is exchanged or re-linked.
CREATE UNIQUE INDEX bank_accounts_link ON bank_accounts (link_item_id, external_account_id)
    WHERE link_item_id IS NOT NULL;
