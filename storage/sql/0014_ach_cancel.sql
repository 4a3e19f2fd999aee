-- rails: an ACH payment may be canceled while its entry waits for the next file
-- The entry's row lock decides between a cancel and the cutoff (which takes pending
-- entries FOR UPDATE SKIP LOCKED): whichever locks it first wins, the other sees it
-- canceled or submitted.
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check CHECK (status IN (
    'processing', 'completed', 'failed', 'pending', 'submitted', 'settled',
    'returned', 'requires_action', 'in_review', 'canceled'));

ALTER TABLE ach_entries DROP CONSTRAINT ach_entries_status_check;
ALTER TABLE ach_entries ADD CONSTRAINT ach_entries_status_check CHECK (status IN (
    'pending', 'submitted', 'settled', 'returned', 'canceled'));
