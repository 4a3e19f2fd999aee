"""The one error of the billing rules: a refusal with the API's problem code."""

from __future__ import annotations


class BillingError(ValueError):
    """``code`` is the API's problem code (``invalid_field``, ``transition_refused``, ...):
    the rules refuse with a code so the next layer maps it without parsing the text."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
