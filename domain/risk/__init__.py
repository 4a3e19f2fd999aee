"""Risk rules, send limits, one-time codes and sanctions screening (pure)."""
