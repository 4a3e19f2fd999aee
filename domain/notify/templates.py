"""Message templates: subject, text, HTML and a short SMS form, per locale; pure.

A template is a set of files ``templates/<locale>/<name>.<part>`` shipped next to
this module (package data): ``subject.txt``, ``text.txt``, ``html`` and, optionally,
``sms.txt`` (else the SMS is the text part) and ``push.txt`` (else the SMS form).
Placeholders are ``$name`` or ``${name}`` (:class:`string.Template`: no
expressions, nothing a data value can reach). A missing locale, or a template
missing in it, falls back to ``en``.

Data values are escaped in the HTML part only (``html.escape``): the text parts
are plain text, and a payee's chosen name must not become markup in a mailbox.
A placeholder without a value is an error (:class:`TemplateError`), never an
empty string in a message a user acts on.
"""

from __future__ import annotations

import html
import string
from collections.abc import Mapping
from pathlib import Path

import msgspec

TEMPLATE_DIR = Path(__file__).with_name("templates")
FALLBACK_LOCALE = "en"
PARTS = ("subject.txt", "text.txt", "html", "sms.txt", "push.txt")
MAX_TEMPLATE_BYTES = 64 * 1024  # per file: a template is a page, not a document
MAX_VALUE_CHARS = 2000  # per data value: a longer one is cut (it is someone's free text)

STEP_UP = "step_up_code"  # data: code, payment_id, amount, currency, minutes
PAYMENT_EVENT = "payment_event"  # data: event_type, payment_id, amount, currency, status
GENERIC = "generic"  # data: subject, body (the send API's free text)


class TemplateError(ValueError):
    """An unknown template or locale part, or a placeholder with no value."""


class Rendered(msgspec.Struct, frozen=True, kw_only=True):
    locale: str  # the locale actually used (after any fallback)
    subject: str
    text: str
    html: str
    sms: str
    push: str


class Templates(msgspec.Struct, frozen=True):
    """Template sources: ``sources[locale][name][part]``."""

    sources: dict[str, dict[str, dict[str, str]]]

    def names(self) -> set[str]:
        return {n for by_name in self.sources.values() for n in by_name}

    def render(self, name: str, locale: str, data: Mapping[str, object]) -> Rendered:
        """``name`` in ``locale`` (or ``en``) with ``data``; raises :class:`TemplateError`."""
        used = locale if name in self.sources.get(locale, {}) else FALLBACK_LOCALE
        parts = self.sources.get(used, {}).get(name)
        if parts is None:
            raise TemplateError(f"no template {name!r}")
        plain = {k: _clip(v) for k, v in data.items()}
        escaped = {k: html.escape(v, quote=True) for k, v in plain.items()}
        try:
            subject = _fill(parts["subject.txt"], plain).strip()
            text = _fill(parts["text.txt"], plain)
            sms = _fill(parts["sms.txt"], plain).strip() if "sms.txt" in parts else text.strip()
            push = _fill(parts["push.txt"], plain).strip() if "push.txt" in parts else sms
            markup = _fill(parts["html"], escaped)
        except KeyError as e:
            raise TemplateError(f"template {name!r} needs {e.args[0]!r}") from None
        # A subject is one header line: a value with a newline must not add headers.
        subject = " ".join(subject.split())
        return Rendered(locale=used, subject=subject, text=text, html=markup, sms=sms, push=push)


def _clip(value: object) -> str:
    return str(value)[:MAX_VALUE_CHARS]


def _fill(source: str, values: Mapping[str, str]) -> str:
    return string.Template(source).substitute(values)


def parse(files: Mapping[str, bytes]) -> Templates:
    """Templates from ``{"<locale>/<name>.<part>": bytes}``; every template needs a
    subject, a text and an HTML part."""
    sources: dict[str, dict[str, dict[str, str]]] = {}
    for rel, raw in files.items():
        if len(raw) > MAX_TEMPLATE_BYTES:
            raise TemplateError(f"{rel}: over {MAX_TEMPLATE_BYTES} bytes")
        locale, _, filename = rel.partition("/")
        part = next((p for p in PARTS if filename.endswith("." + p)), None)
        if part is None:
            continue
        name = filename[: -len(part) - 1]
        sources.setdefault(locale, {}).setdefault(name, {})[part] = raw.decode("utf-8")
    for locale, by_name in sources.items():
        for name, parts in by_name.items():
            missing = {"subject.txt", "text.txt", "html"} - parts.keys()
            if missing:
                raise TemplateError(f"{locale}/{name}: missing {sorted(missing)}")
    if FALLBACK_LOCALE not in sources:
        raise TemplateError(f"no {FALLBACK_LOCALE!r} templates")
    return Templates(sources)


def load(directory: Path = TEMPLATE_DIR) -> Templates:
    """The templates under ``directory`` (the shipped ones by default)."""
    files = {
        f"{p.parent.name}/{p.name}": p.read_bytes()
        for p in sorted(directory.glob("*/*"))
        if p.is_file()
    }
    return parse(files)
