-- billing: each row carries when its latest write took effect (version_at), for the history triggers
-- A renewal pass writes hundreds of rows in one statement per table (storage/billing.py),
-- each with its own effective time (its period end, its attempt's due time), which one
-- transaction-wide setting (paynode.billing_at, migration 29) cannot say. Every writer of
-- the node sets version_at with each write; the triggers stamp the version with it. A
-- change by hand should set it too (else its version carries the previous write's time);
-- NULL falls back to the setting, then the clock's now, as before.
ALTER TABLE billing_subscriptions ADD COLUMN version_at timestamptz;
ALTER TABLE billing_invoices ADD COLUMN version_at timestamptz;

CREATE OR REPLACE FUNCTION billing_subscription_version() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    st jsonb := NEW.state::jsonb;
    n bigint := nextval('billing_history_seq');
BEGIN
    INSERT INTO billing_subscription_history (id, seq, subscription_id, customer_user_id,
        merchant_user_id, price_id, price_amount, currency, interval, interval_count,
        quantity, status, cancel_at_period_end, started_us, canceled_us, test_clock_id,
        at_us, ts)
    VALUES (lpad(n::text, 20, '0'), n, NEW.id, NEW.customer_user_id, NEW.merchant_user_id,
        st -> 'price' ->> 'id', (st -> 'price' ->> 'amount')::bigint,
        st -> 'price' ->> 'currency', st -> 'price' ->> 'interval',
        coalesce((st -> 'price' ->> 'interval_count')::integer, 1),
        coalesce((st ->> 'quantity')::integer, 1), NEW.status, NEW.cancel_at_period_end,
        billing_history_us((st ->> 'created_at')::timestamptz),
        billing_history_us((st ->> 'canceled_at')::timestamptz), NEW.test_clock_id,
        coalesce(billing_history_us(NEW.version_at), billing_history_at(NEW.test_clock_id)),
        (extract(epoch FROM clock_timestamp()) * 1000000000)::bigint);
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION billing_invoice_version() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    n bigint := nextval('billing_history_seq');
BEGIN
    INSERT INTO billing_invoice_history (id, seq, invoice_id, number, subscription_id,
        customer_user_id, merchant_user_id, period_index, currency, total, amount_due,
        status, attempts, last_code, at_us, ts)
    VALUES (lpad(n::text, 20, '0'), n, NEW.id, NEW.number, NEW.subscription_id,
        NEW.customer_user_id, NEW.merchant_user_id, NEW.period_index, NEW.currency,
        NEW.total, NEW.amount_due, NEW.status, NEW.attempts, NEW.last_code,
        coalesce(billing_history_us(NEW.version_at),
                 billing_history_at((SELECT s.test_clock_id FROM billing_subscriptions s
                                     WHERE s.id = NEW.subscription_id))),
        (extract(epoch FROM clock_timestamp()) * 1000000000)::bigint);
    RETURN NULL;
END $$;
