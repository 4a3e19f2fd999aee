"""Pure pieces of the email and SMS channels: templates (per locale, escaping,
fallback) and Twilio's request signature."""

from __future__ import annotations

import pytest

from paynode.actors.notify.codes import order
from paynode.domain.notify import templates as tpl
from paynode.domain.notify import twilio

STEP_UP_DATA = {"code": "123456", "payment_id": "pay-1", "amount": 1000, "currency": "USD",
                "minutes": 5}  # fmt: skip


@pytest.fixture(scope="module")
def shipped() -> tpl.Templates:
    return tpl.load()


def test_the_shipped_templates_cover_what_the_product_sends(shipped: tpl.Templates) -> None:
    assert {tpl.STEP_UP, tpl.PAYMENT_EVENT, tpl.GENERIC} <= shipped.names()
    r = shipped.render(tpl.STEP_UP, "en", STEP_UP_DATA)
    assert r.locale == "en"
    assert "123456" in r.subject and "123456" in r.text and "123456" in r.html
    assert "123456" in r.sms and len(r.sms) <= 160  # one SMS segment
    assert r.push.startswith("Code 123456 confirms payment pay-1 ")
    event = shipped.render(tpl.PAYMENT_EVENT, "en", {"event_type": "payment.completed",
                           "payment_id": "p", "amount": 5, "currency": "EUR",
                           "status": "completed"})  # fmt: skip
    assert event.subject == "Payment p: completed" and "payment.completed" in event.text


def test_a_locale_is_used_and_a_missing_one_falls_back_to_english(
    shipped: tpl.Templates,
) -> None:
    es = shipped.render(tpl.STEP_UP, "es", STEP_UP_DATA)
    assert es.locale == "es" and "código" in es.text
    assert shipped.render(tpl.STEP_UP, "fr-CA", STEP_UP_DATA).locale == "en"
    # A template missing in a locale that exists falls back too.
    generic = shipped.render(tpl.GENERIC, "es", {"subject": "Hola", "body": "b"})
    assert generic.locale == "en" and generic.subject == "Hola"


def test_data_is_escaped_in_html_only_and_cannot_add_headers(shipped: tpl.Templates) -> None:
    r = shipped.render(tpl.GENERIC, "en", {
        "subject": "Hi\r\nBcc: victim@example.com", "body": '<script>alert("x")</script> & co',
    })  # fmt: skip
    assert "<script>" not in r.html and "&lt;script&gt;" in r.html and "&amp; co" in r.html
    assert r.text.strip() == '<script>alert("x")</script> & co'  # plain text stays plain
    assert "\n" not in r.subject and "\r" not in r.subject
    # A value is data, never a template: its own $placeholders stay as they are.
    r = shipped.render(tpl.GENERIC, "en", {"subject": "$code", "body": "${body}"})
    assert r.subject == "$code" and r.text.strip() == "${body}"


def test_missing_data_and_unknown_templates_are_errors(shipped: tpl.Templates) -> None:
    with pytest.raises(tpl.TemplateError, match="needs 'code'"):
        shipped.render(tpl.STEP_UP, "en", {"payment_id": "p"})
    with pytest.raises(tpl.TemplateError, match="no template"):
        shipped.render("nope", "en", {})
    with pytest.raises(tpl.TemplateError, match="missing"):
        tpl.parse({"en/x.subject.txt": b"s", "en/x.text.txt": b"t"})  # no HTML part
    with pytest.raises(tpl.TemplateError, match="no 'en'"):
        tpl.parse({"de/x.subject.txt": b"s", "de/x.text.txt": b"t", "de/x.html": b"h"})


def test_twilio_signature_matches_twilios_documented_example() -> None:
    # https://www.twilio.com/docs/usage/security#validating-requests
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {"CallSid": "CA1234567890ABCDE", "Caller": "+12349013030", "Digits": "1234",
              "From": "+12349013030", "To": "+18005551212"}  # fmt: skip
    expected = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    assert twilio.signature("12345", url, params.items()) == expected
    # Parameter order on the wire does not matter: they are sorted by name.
    assert twilio.valid("12345", url, reversed(list(params.items())), expected)
    assert not twilio.valid("12346", url, params.items(), expected)
    assert not twilio.valid("12345", url + "&baz=3", params.items(), expected)
    assert not twilio.valid("12345", url, {**params, "Digits": "1235"}.items(), expected)
    assert not twilio.valid("", url, params.items(), expected)
    assert not twilio.valid("12345", url, params.items(), "")


def test_code_channel_order_keeps_every_channel_as_a_fallback() -> None:
    assert order(None) == ["push", "sms", "email"]
    assert order(["email"]) == ["email", "push", "sms"]
    assert order(["sms", "email", "push"]) == ["sms", "email", "push"]
