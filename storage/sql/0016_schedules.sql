-- schedules: one-off and recurring transfers, run by the fronts' scheduler
-- A run's transfer id is derived from the schedule and the occurrence
-- (domain/rails/schedule.transfer_id): a run repeated after a crash is a replay.
-- next_occurrence and next_run_at move only once a run's outcome is recorded.
CREATE TABLE schedules (
    id                text COLLATE "C" PRIMARY KEY,
    owner_user_id     text,
    debit_account_id  text NOT NULL,
    credit_account_id text NOT NULL,
    amount            bigint NOT NULL CHECK (amount > 0),
    currency          char(3) NOT NULL,
    every             text NOT NULL CHECK (every IN ('once', 'day', 'week', 'month')),
    start_at          timestamptz NOT NULL,
    end_at            timestamptz,
    max_runs          integer CHECK (max_runs > 0),
    catch_up          text NOT NULL CHECK (catch_up IN ('all', 'latest')),
    metadata          text NOT NULL DEFAULT '{}',
    state             text NOT NULL CHECK (state IN ('active', 'paused', 'canceled',
        'finished')),
    next_occurrence   integer NOT NULL DEFAULT 0,
    next_run_at       timestamptz,  -- NULL once finished or canceled
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE state = 'active';
CREATE INDEX schedules_owner ON schedules (owner_user_id, id);

CREATE TABLE schedule_runs (
    schedule_id text COLLATE "C" NOT NULL REFERENCES schedules (id),
    occurrence  integer NOT NULL,
    due_at      timestamptz NOT NULL,
    transfer_id text NOT NULL,
    status      text NOT NULL CHECK (status IN ('processing', 'posted', 'refused',
        'skipped')),
    code        text,  -- a refusal's code
    ran_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule_id, occurrence)
);
