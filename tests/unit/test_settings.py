"""Configuration: a bound next to every number, frozen after start, no dead fields."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from paynode.domain.settings import FLAT, RENAMED, SECTIONS, Settings, build, from_env

_ROOT = Path(__file__).resolve().parents[2]
_PACKAGES = ("domain", "storage", "actors", "api", "node")


def _fields() -> list[msgspec.inspect.Field]:
    """Every setting: the top level's and each section's (named by its flat name)."""
    info = msgspec.inspect.type_info(Settings)
    assert isinstance(info, msgspec.inspect.StructType)
    out = []
    for f in info.fields:
        if isinstance(f.type, msgspec.inspect.StructType):
            out += [msgspec.structs.replace(g, name=SECTIONS[f.name] + g.name)
                    for g in f.type.fields]  # fmt: skip
        else:
            out.append(f)
    return out


def _bounds(t: msgspec.inspect.Type) -> tuple[object, object]:
    if isinstance(t, msgspec.inspect.UnionType):  # "X | None": the X
        (t,) = [x for x in t.types if not isinstance(x, msgspec.inspect.NoneType)]
    low = getattr(t, "ge", None) if getattr(t, "gt", None) is None else t.gt
    high = getattr(t, "le", None) if getattr(t, "lt", None) is None else t.lt
    return low, high


def test_every_number_has_both_bounds_next_to_it() -> None:
    unbounded = [
        f.name
        for f in _fields()
        if isinstance(f.type, msgspec.inspect.IntType | msgspec.inspect.FloatType)
        and None in _bounds(f.type)
    ]
    assert not unbounded, f"settings without a lower and upper bound: {unbounded}"


def test_every_setting_is_read_by_the_product() -> None:
    source = "\n".join(
        p.read_text()
        for pkg in _PACKAGES
        for p in (_ROOT / pkg).rglob("*.py")
        if p.name != "settings.py"
    )
    settings_source = (_ROOT / "domain" / "settings.py").read_text()
    dead = []
    for f in _fields():
        section, field = FLAT[f.name]
        # settings.notify.batch, or a section handed over: self._notify.batch, notify_s.batch
        read = rf"\b_?{section}(_s)?\.{field}\b" if section else rf"\b{field}\b"
        own = rf"self\.{section}\.{field}\b" if section else rf"self\.{field}\b"
        # read by the product, or only by the settings' own methods (providers, ...)
        if not re.search(read, source) and not re.search(own, settings_source):
            dead.append(f.name)
    assert not dead, f"settings nobody reads: {dead}"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"shards": -1}, "shards must be `int` >= 0 (PAYNODE_SHARDS)"),
        ({"batch_window_ms": 2000}, "batch_window_ms must be `float` <= 1000"),
        ({"workers": "many"}, "workers must be `int`, got `str` (PAYNODE_WORKERS)"),
        ({"ach_company_id": "123"}, "ach_company_id must be `str` of length >= 10"),
        ({"queue_limit": 10}, "queue_limit must be >= batch_max_items"),
        ({"access_token_ttl_s": 3600, "refresh_token_ttl_s": 600}, "refresh_token_ttl_s must be"),
        ({"ach_odfi_routing": "011000016"}, "ach_odfi_routing must be a 9-digit routing number"),
    ],
)
def test_out_of_bounds_is_refused_by_name(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match="invalid configuration") as refused:
        from_env(**overrides)
    assert message in str(refused.value)


def test_a_refused_secret_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYNODE_API_KEY", "tooshort-secret")
    with pytest.raises(ValueError, match="api_key must be `str` of length >= 16") as refused:
        from_env()
    assert "tooshort-secret" not in str(refused.value)


def test_environment_is_read_and_the_result_is_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYNODE_BATCH_WINDOW_MS", "0.5")
    monkeypatch.setenv("PAYNODE_WEBHOOK_ALLOW_PRIVATE", "true")
    settings = from_env(shards=3)
    assert (settings.batch.window_ms, settings.webhook.allow_private, settings.shards) == (
        0.5,
        True,
        3,
    )
    with pytest.raises(AttributeError):
        settings.shards = 4  # type: ignore[misc]


def test_sections_flat_names_are_unique_and_round_trip() -> None:
    assert len(FLAT) == len(_fields()) == len({f.name for f in _fields()})
    changed = build(recon_interval_ms=0, batch_max_items=7, webhook_allow_private=True, port=9)
    assert (changed.recon.interval_ms, changed.batch.max_items, changed.port) == (0, 7, 9)
    assert changed.webhook.allow_private and changed.recon.full_every == 10


@pytest.mark.parametrize(("old", "new"), sorted(RENAMED.items()))
def test_a_renamed_variable_is_refused_with_its_new_name(
    old: str, new: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"PAYNODE_{old.upper()}", "1")
    with pytest.raises(ValueError, match=f"PAYNODE_{new.upper()}"):
        from_env()


def test_an_unknown_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="no setting named recon_period"):
        build(recon_period=3)


def test_secrets_are_redacted_in_every_repr() -> None:
    secret = "provider-secret-0123456789"
    s = build(api_key="k" * 20, webhook_providers=f'{{"bank": "{secret}"}}')
    for shown in (repr(s), repr(s.webhook), str(s)):
        assert secret not in shown and "k" * 20 not in shown, shown


def test_one_field_of_a_section_keeps_the_others_defaults() -> None:
    s = build(auth_rate_burst=1000, webhook_max_attempts=3)
    assert (s.auth_rate.per_s, s.auth_rate.burst) == (5.0, 1000)
    assert (s.webhook.max_attempts, s.webhook.timeout_s) == (3, 10.0)


def test_rate_limits_are_split_between_front_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    from paynode.node.fronts import worker_environment

    settings = build(rate_per_s=100.0, rate_burst=9, auth_rate_per_s=5.0, auth_rate_burst=1)
    env = worker_environment(settings, 2)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    worker = from_env()
    assert (worker.rate.per_s, worker.rate.burst) == (50.0, 5)
    assert (worker.auth_rate.per_s, worker.auth_rate.burst) == (2.5, 1)
    assert worker.ip_rate.per_s == settings.ip_rate.per_s / 2
