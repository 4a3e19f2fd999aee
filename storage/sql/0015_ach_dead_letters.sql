-- rails: ACH status updates that could not be applied wait here to be replayed
-- A settlement whose post the ledger refused, or a return whose void or reversal it
-- refused (a settled pull already spent: the wallet cannot give the money back),
-- used to be a log line. One open letter per entry and kind; a failed replay counts
-- an attempt and keeps the letter open.
CREATE TABLE ach_dead_letters (
    id              bigserial PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('settlement', 'return')),
    entry_id        bigint NOT NULL REFERENCES ach_entries (id),
    payment_id      text,
    trace_number    text NOT NULL,
    return_code     text,            -- a return's NACHA code
    last_error      text NOT NULL,   -- the ledger's code
    attempts        integer NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_attempt_at timestamptz NOT NULL DEFAULT now(),
    replayed_at     timestamptz      -- applied by a replay: closed
);
CREATE UNIQUE INDEX ach_dead_letters_open ON ach_dead_letters (entry_id, kind)
    WHERE replayed_at IS NULL;
