"""Billing rules (issue #20 items 4 and 5): pure, not yet wired to storage or the API.

One job per module, each a set of functions over msgspec Structs, no I/O:

* ``errors``: ``BillingError`` (a problem code the API can return as is);
* ``periods``: prices and billing periods anchored on a cycle anchor;
* ``proration``: credit for unused time, charge for remaining time;
* ``invoices``: lines, totals, statuses, numbers;
* ``dunning``: the retry schedule after a failed payment;
* ``subscriptions``: the subscription state machine and what each event produces;
* ``clocks``: test clocks and the events due when one advances.

Money is integer minor units everywhere; instants are UTC-aware datetimes.
"""
