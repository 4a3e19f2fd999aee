-- refunds: the recovery loop's lookup of refunds left processing (api/payment_service.recover_refunds)
CREATE INDEX refunds_processing ON refunds (updated_at) WHERE status = 'processing';
