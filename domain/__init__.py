"""The pure domain: models, rules, codecs and settings. No Ray, no I/O."""
