"""Pure ledger: the data model and the rules, with no Ray and no I/O."""
