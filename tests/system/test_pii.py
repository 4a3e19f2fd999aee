"""Personal data at rest: sealed in PostgreSQL, bound to its row, readable across key rotation."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import psycopg
import pytest

from paynode.storage import pii
from paynode.storage.database import libpq_url
from paynode.storage.keyring import Keyring, KeyringError, load, rotated, write_file

PROFILE = {
    "name": "Zelda Quixote-Marchetti",
    "phone": "+14155550199",
    "birth_date": "1987-06-05",
    "address": {
        "line1": "742 Evergreen Terrace",
        "city": "Springfield",
        "postal_code": "49007",
        "country": "US",
    },
}
SSN = "219-09-9999"
SSN_DIGITS = SSN.replace("-", "")


# -- the module on its own ------------------------------------------------------------


@pytest.fixture
def keys(tmp_path: Path) -> Keyring:
    return load(tmp_path, create=True)


def test_seal_round_trip_and_random_nonce(keys: Keyring) -> None:
    a = pii.seal(keys, "secret value", "users", "name_ct", "usr_1")
    b = pii.seal(keys, "secret value", "users", "name_ct", "usr_1")
    assert a != b, "a fresh nonce per value"
    assert b"secret value" not in a
    assert pii.kid_of(a) == keys.pii_active
    assert pii.open_(keys, a, "users", "name_ct", "usr_1") == "secret value"


@pytest.mark.parametrize(
    ("table", "column", "row"),
    [("users", "name_ct", "usr_2"), ("users", "phone_ct", "usr_1"), ("others", "name_ct", "usr_1")],
)
def test_a_value_moved_to_another_row_or_field_does_not_open(
    keys: Keyring, table: str, column: str, row: str
) -> None:
    sealed = pii.seal(keys, "Ada", "users", "name_ct", "usr_1")
    with pytest.raises(pii.SealError) as e:
        pii.open_(keys, sealed, table, column, row)
    assert "Ada" not in str(e.value)


def test_a_flipped_bit_does_not_open(keys: Keyring) -> None:
    sealed = bytearray(pii.seal(keys, "Ada", "users", "name_ct", "usr_1"))
    sealed[-1] ^= 1
    with pytest.raises(pii.SealError):
        pii.open_(keys, bytes(sealed), "users", "name_ct", "usr_1")


def test_old_keys_still_open_after_rotation_and_a_removed_key_is_named(
    keys: Keyring, tmp_path: Path
) -> None:
    assert keys.path is not None
    old = pii.seal(keys, "before", "users", "name_ct", "usr_1")
    write_file(keys.path, rotated(keys.doc))
    other = Keyring.open(keys.path)  # another process reading the rotated file
    assert other.pii_active != pii.kid_of(old)
    assert pii.open_(other, old, "users", "name_ct", "usr_1") == "before"
    new = pii.seal(other, "after", "users", "name_ct", "usr_1")
    assert pii.kid_of(new) == other.pii_active
    # The first process learns the new key when it meets it.
    assert pii.open_(keys, new, "users", "name_ct", "usr_1") == "after"

    fresh = load(tmp_path / "elsewhere", create=True)  # a keyring without that key
    with pytest.raises(pii.SealError, match=pii.kid_of(old)):
        pii.open_(fresh, old, "users", "name_ct", "usr_1")


def test_blind_index_is_keyed_normalized_and_kind_separated(keys: Keyring, tmp_path: Path) -> None:
    a = pii.blind_index(keys, "email", pii.normalize_email(" Ada@Example.COM "))
    assert a == pii.blind_index(keys, "email", "ada@example.com")
    assert a != pii.blind_index(keys, "phone", "ada@example.com")
    assert a != pii.blind_index(load(tmp_path / "other", create=True), "email", "ada@example.com")


def test_keyring_file_must_be_private(keys: Keyring) -> None:
    assert keys.path is not None
    os.chmod(keys.path, 0o644)
    with pytest.raises(KeyringError, match="readable by others"):
        Keyring.open(keys.path)


def test_keyring_repr_has_no_key_material(keys: Keyring) -> None:
    text = repr(keys)
    for key in keys.doc.pii.keys.values():
        assert key not in text


# -- through the node -----------------------------------------------------------------


def _user_with_profile(node, email: str) -> str:
    r = node.http.post("/v1/users", json={"email": email, **PROFILE})
    assert r.status_code == 201, r.text
    user_id = r.json()["id"]
    r = node.http.post(f"/v1/users/{user_id}/kyc", json={"id_type": "ssn", "id_number": SSN})
    assert r.status_code == 200, r.text
    return user_id


def _raw_rows(database_url: str) -> list[bytes]:
    """Every row of every table, as PostgreSQL's own text form (bytea as hex)."""
    out = []
    with psycopg.connect(libpq_url(database_url)) as conn:
        tables = [
            r[0]
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ]
        for table in tables:
            for (row,) in conn.execute(f"SELECT t::text FROM {table} t"):
                out.append(row.encode())
    return out


def _bytea_payloads(database_url: str) -> list[bytes]:
    """The raw bytes of every sealed column (a hex dump alone would hide plaintext)."""
    cols = ", ".join(pii.SEALED_COLUMNS[0].columns)
    with psycopg.connect(libpq_url(database_url)) as conn:
        return [bytes(v) for row in conn.execute(f"SELECT {cols} FROM users") for v in row if v]


def test_personal_data_is_never_plaintext_in_postgresql_or_logs(
    node, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    email = "zelda.qm@example.org"
    user_id = _user_with_profile(node, email)
    with node.anonymous() as anon:
        r = anon.post("/v1/auth/register", json={"email": "reg." + email, "password": "pw-" + SSN})
        assert r.status_code == 201

    secrets = [
        email, "reg." + email, PROFILE["name"], PROFILE["phone"], "742 Evergreen", "Springfield",
        "1987-06-05", SSN, SSN_DIGITS, "pw-" + SSN,
    ]  # fmt: skip
    needles = [s.encode() for s in secrets] + [s.encode().hex().encode() for s in secrets]
    for row in _raw_rows(node.database_url) + _bytea_payloads(node.database_url):
        for needle in needles:
            assert needle not in row.lower(), f"plaintext in the database: {row[:80]!r}"

    # The API gives the profile back to its owner, and only the last 4 of the SSN.
    got = node.http.get(f"/v1/users/{user_id}").json()
    assert got["email"] == email and got["name"] == PROFILE["name"]
    assert got["address"] == PROFILE["address"] and got["birth_date"] == "1987-06-05"
    kyc = node.http.get(f"/v1/users/{user_id}/kyc").json()
    assert kyc["id_last4"] == "9999" and kyc["status"] == "pending"
    assert SSN_DIGITS not in str(kyc) and SSN not in str(kyc)

    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    for s in secrets:
        assert s not in logged


def test_a_ciphertext_swapped_between_rows_fails_loudly(node, caplog) -> None:
    a = _user_with_profile(node, "swap.a@example.org")
    b = _user_with_profile(node, "swap.b@example.org")
    with psycopg.connect(libpq_url(node.database_url)) as conn:
        conn.execute(
            "UPDATE users SET name_ct = (SELECT name_ct FROM users WHERE id = %s) WHERE id = %s",
            (a, b),
        )
    r = node.http.get(f"/v1/users/{b}")
    assert r.status_code == 500, r.text
    assert r.json()["code"] == "sealed_value_unreadable"
    assert PROFILE["name"] not in r.text and PROFILE["name"] not in caplog.text
    assert node.http.get(f"/v1/users/{a}").status_code == 200  # the source row is intact


def _paynode(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "paynode.node.cli", *args],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_rotation_while_the_node_serves_keeps_every_record_readable(node) -> None:
    users = [_user_with_profile(node, f"rot{i}@example.org") for i in range(12)]
    before = {u: node.http.get(f"/v1/users/{u}").json() for u in users}
    old_kid = node.keys.pii_active

    # Profile writes keep arriving during the rotation.
    stop = threading.Event()
    failures: list[str] = []

    def writer() -> None:
        with httpx.Client(base_url=node.url, headers=node.http.headers, timeout=30) as http:
            n = 0
            while not stop.is_set():
                u = users[n % len(users)]
                r = http.patch(f"/v1/users/{u}", json={"phone": f"+1415555{n % 10000:04d}"})
                if r.status_code != 200:
                    failures.append(r.text)
                n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        env = {**os.environ, "DATABASE_URL": node.database_url}
        done = _paynode(
            "keys", "rotate", "--only", "pii", "--batch", "5",
            "--data-dir", node.settings.data_dir, env=env,
        )  # fmt: skip
    finally:
        stop.set()
        thread.join()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 still under old keys" in done.stdout
    assert not failures, failures[:3]

    node.keys.refresh(force=True)
    assert node.keys.pii_active != old_kid
    with psycopg.connect(libpq_url(node.database_url)) as conn:
        cols = ", ".join(pii.SEALED_COLUMNS[0].columns)
        kids = {
            pii.kid_of(bytes(v))
            for row in conn.execute(f"SELECT {cols} FROM users")
            for v in row
            if v
        }
    assert kids == {node.keys.pii_active}, "every value moved to the new key"
    for u in users:
        after = node.http.get(f"/v1/users/{u}").json()
        assert {k: v for k, v in after.items() if k not in ("phone", "updated_at")} == {
            k: v for k, v in before[u].items() if k not in ("phone", "updated_at")
        }
        assert node.http.get(f"/v1/users/{u}/kyc").json()["id_last4"] == "9999"
    shown = _paynode("keys", "show", "--data-dir", node.settings.data_dir, env=env)
    assert shown.returncode == 0 and old_kid in shown.stdout
    for key in node.keys.doc.pii.keys.values():
        assert key not in shown.stdout + done.stdout + done.stderr
