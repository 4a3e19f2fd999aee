-- rails: a user's default bank account (one among the open ones)
ALTER TABLE bank_accounts ADD COLUMN is_default boolean NOT NULL DEFAULT false;
CREATE UNIQUE INDEX bank_accounts_one_default ON bank_accounts (owner_user_id)
    WHERE is_default AND status <> 'closed';
