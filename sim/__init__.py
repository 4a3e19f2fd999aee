"""A deterministic simulator of the ledger core (``paynode sim``): the real shard and
front code over a virtual clock, an in-memory journal and a simulated network, with
faults drawn from a seeded PRNG. See ``sim/world.py`` and ``docs/reliability.md``."""
