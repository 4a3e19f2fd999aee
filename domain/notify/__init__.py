"""Notification rules: delivery order, backoff and signatures (pure)."""
