-- billing: subscriptions paid by card (issue 20 item 5: "paid from the default payment method or a wallet account")
-- A card subscription's source_account_id holds the payment method (pm_...) charged for
-- each invoice, through the card rail (api/card_service.py); a wallet one's, the account
-- debited. The inline CHECK of 0027 is named by PostgreSQL's convention.
ALTER TABLE billing_subscriptions DROP CONSTRAINT billing_subscriptions_source_kind_check;
ALTER TABLE billing_subscriptions ADD CONSTRAINT billing_subscriptions_source_kind_check
    CHECK (source_kind IN ('wallet', 'card'));
-- Detaching a card asks whether a subscription still charges it.
CREATE INDEX billing_subscriptions_card ON billing_subscriptions (source_account_id)
    WHERE source_kind = 'card' AND status <> 'canceled';
