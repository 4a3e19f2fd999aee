-- billing history: every version of a subscription's and an invoice's state, append-only, for analytics
-- Subscriptions and invoices are updated in place (status, attempts), and analytics follows
-- append-only tables in (txid, id) order. So a trigger appends the new state of a row to its
-- history table, in the transaction that changes it, whoever changes it (the scheduler, a
-- route, a person with psql): analytics exports the histories like the journal and its
-- views take the latest version per id (seq: one object's versions are written under its
-- row lock, so seq orders them as they committed).
--
-- at_us: when the version took effect, on the subscription's clock (a test clock's time,
-- else the wall clock), in unix microseconds. The billing service says it for what it
-- applies (the event's time: a renewal's period end, an attempt's due time) with
-- set_config('paynode.billing_at', ..., true); anything else (a void by hand) takes the
-- subscription's clock's now, else now().
CREATE SEQUENCE billing_history_seq;

CREATE TABLE billing_subscription_history (
    id                   text COLLATE "C" PRIMARY KEY,  -- seq zero-padded to 20 digits
    seq                  bigint NOT NULL,
    subscription_id      text NOT NULL,
    customer_user_id     text NOT NULL,
    merchant_user_id     text NOT NULL,
    price_id             text NOT NULL,  -- the price now (a plan change moves it)
    price_amount         bigint NOT NULL,
    currency             char(3) NOT NULL,
    interval             text NOT NULL,
    interval_count       integer NOT NULL,
    quantity             integer NOT NULL,
    status               text NOT NULL,
    cancel_at_period_end boolean NOT NULL,
    started_us           bigint NOT NULL,  -- the subscription's created_at (its clock)
    canceled_us          bigint,
    test_clock_id        text,
    at_us                bigint NOT NULL,
    txid                 bigint NOT NULL DEFAULT txid_current(),
    ts                   bigint NOT NULL  -- unix nanoseconds of the write (wall clock)
);
CREATE INDEX billing_subscription_history_txid ON billing_subscription_history (txid, id);

CREATE TABLE billing_invoice_history (
    id               text COLLATE "C" PRIMARY KEY,  -- seq zero-padded to 20 digits
    seq              bigint NOT NULL,
    invoice_id       text NOT NULL,
    number           text NOT NULL,
    subscription_id  text NOT NULL,
    customer_user_id text NOT NULL,
    merchant_user_id text NOT NULL,
    period_index     integer,
    currency         char(3) NOT NULL,
    total            bigint NOT NULL,
    amount_due       bigint NOT NULL,
    status           text NOT NULL,
    attempts         integer NOT NULL,
    last_code        text,
    at_us            bigint NOT NULL,
    txid             bigint NOT NULL DEFAULT txid_current(),
    ts               bigint NOT NULL
);
CREATE INDEX billing_invoice_history_txid ON billing_invoice_history (txid, id);

CREATE FUNCTION billing_history_us(t timestamptz) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT (extract(epoch FROM t) * 1000000)::bigint
$$;

-- When what is being written took effect: the service's word, else the clock's now.
CREATE FUNCTION billing_history_at(clock text) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT billing_history_us(coalesce(
        nullif(current_setting('paynode.billing_at', true), '')::timestamptz,
        (SELECT c.now FROM billing_test_clocks c WHERE c.id = clock),
        now()))
$$;

CREATE FUNCTION billing_subscription_version() RETURNS trigger LANGUAGE plpgsql AS $$
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
        billing_history_at(NEW.test_clock_id),
        (extract(epoch FROM clock_timestamp()) * 1000000000)::bigint);
    RETURN NULL;
END $$;

CREATE FUNCTION billing_invoice_version() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    n bigint := nextval('billing_history_seq');
BEGIN
    INSERT INTO billing_invoice_history (id, seq, invoice_id, number, subscription_id,
        customer_user_id, merchant_user_id, period_index, currency, total, amount_due,
        status, attempts, last_code, at_us, ts)
    VALUES (lpad(n::text, 20, '0'), n, NEW.id, NEW.number, NEW.subscription_id,
        NEW.customer_user_id, NEW.merchant_user_id, NEW.period_index, NEW.currency,
        NEW.total, NEW.amount_due, NEW.status, NEW.attempts, NEW.last_code,
        billing_history_at((SELECT s.test_clock_id FROM billing_subscriptions s
                            WHERE s.id = NEW.subscription_id)),
        (extract(epoch FROM clock_timestamp()) * 1000000000)::bigint);
    RETURN NULL;
END $$;

-- What is there before this migration: its state now, as of its last update (on a test
-- clock, as of the clock's now: the same time base as the versions after it). No history
-- before that: the views count them from then on.
INSERT INTO billing_subscription_history (id, seq, subscription_id, customer_user_id,
    merchant_user_id, price_id, price_amount, currency, interval, interval_count, quantity,
    status, cancel_at_period_end, started_us, canceled_us, test_clock_id, at_us, ts)
SELECT lpad(n::text, 20, '0'), n, id, customer_user_id, merchant_user_id,
       st -> 'price' ->> 'id', (st -> 'price' ->> 'amount')::bigint,
       st -> 'price' ->> 'currency', st -> 'price' ->> 'interval',
       coalesce((st -> 'price' ->> 'interval_count')::integer, 1),
       coalesce((st ->> 'quantity')::integer, 1), status, cancel_at_period_end,
       billing_history_us((st ->> 'created_at')::timestamptz),
       billing_history_us((st ->> 'canceled_at')::timestamptz), test_clock_id,
       billing_history_us(coalesce(clock_now, updated_at)),
       (extract(epoch FROM now()) * 1000000000)::bigint
FROM (SELECT s.*, s.state::jsonb AS st, nextval('billing_history_seq') AS n
      FROM (SELECT b.*, c.now AS clock_now FROM billing_subscriptions b
            LEFT JOIN billing_test_clocks c ON c.id = b.test_clock_id ORDER BY b.id) s) x;

INSERT INTO billing_invoice_history (id, seq, invoice_id, number, subscription_id,
    customer_user_id, merchant_user_id, period_index, currency, total, amount_due, status,
    attempts, last_code, at_us, ts)
SELECT lpad(n::text, 20, '0'), n, id, number, subscription_id, customer_user_id,
       merchant_user_id, period_index, currency, total, amount_due, status, attempts,
       last_code, billing_history_us(coalesce(clock_now, updated_at)),
       (extract(epoch FROM now()) * 1000000000)::bigint
FROM (SELECT i.*, nextval('billing_history_seq') AS n
      FROM (SELECT b.*, c.now AS clock_now FROM billing_invoices b
            JOIN billing_subscriptions s ON s.id = b.subscription_id
            LEFT JOIN billing_test_clocks c ON c.id = s.test_clock_id ORDER BY b.id) i) x;

-- A new version when something analytics reads changes (not the scheduler's bookkeeping:
-- next_due_at, collecting, in_flight, due_at, the hosted page's token).
CREATE TRIGGER billing_subscription_created AFTER INSERT ON billing_subscriptions
    FOR EACH ROW EXECUTE FUNCTION billing_subscription_version();
CREATE TRIGGER billing_subscription_changed AFTER UPDATE ON billing_subscriptions
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status
        OR OLD.cancel_at_period_end IS DISTINCT FROM NEW.cancel_at_period_end
        OR (OLD.state::jsonb -> 'price') IS DISTINCT FROM (NEW.state::jsonb -> 'price')
        OR (OLD.state::jsonb -> 'quantity') IS DISTINCT FROM (NEW.state::jsonb -> 'quantity'))
    EXECUTE FUNCTION billing_subscription_version();
CREATE TRIGGER billing_invoice_created AFTER INSERT ON billing_invoices
    FOR EACH ROW EXECUTE FUNCTION billing_invoice_version();
CREATE TRIGGER billing_invoice_changed AFTER UPDATE ON billing_invoices
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status
        OR OLD.attempts IS DISTINCT FROM NEW.attempts
        OR OLD.total IS DISTINCT FROM NEW.total
        OR OLD.amount_due IS DISTINCT FROM NEW.amount_due)
    EXECUTE FUNCTION billing_invoice_version();
