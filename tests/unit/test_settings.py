"""Configuration: a bound next to every number, frozen after start, no dead fields."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from paynode.domain.settings import Settings, from_env

_ROOT = Path(__file__).resolve().parents[2]
_PACKAGES = ("domain", "storage", "actors", "api", "node")


def _fields() -> list[msgspec.inspect.Field]:
    info = msgspec.inspect.type_info(Settings)
    assert isinstance(info, msgspec.inspect.StructType)
    return list(info.fields)


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
    dead = [
        f.name
        for f in _fields()
        if not re.search(rf"\b{f.name}\b", source)
        # read only by the settings' own methods (front_url, providers, ...)
        and not re.search(rf"self\.{f.name}\b", settings_source)
    ]
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
    assert (settings.batch_window_ms, settings.webhook_allow_private, settings.shards) == (
        0.5,
        True,
        3,
    )
    with pytest.raises(AttributeError):
        settings.shards = 4  # type: ignore[misc]
