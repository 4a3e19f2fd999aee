"""Scheduled and recurring transfers over HTTP, run by the fronts' scheduler."""

from __future__ import annotations

import datetime as dt

import httpx
import psycopg

from paynode.storage.database import libpq_url
from tests.support.asserts import problem, signup
from tests.support.node import NodeStarter, RunningNode, wait_until

FAST = {"schedule_interval_ms": 50}


def _iso(t: dt.datetime) -> str:
    return t.isoformat()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _account(http: httpx.Client, account_id: str, **extra) -> None:
    r = http.post("/v1/accounts", json={"id": account_id, "currency": "USD", **extra})
    assert r.status_code == 201, r.text


def _schedule(http: httpx.Client, sid: str, dr: str, cr: str, amount: int, start: dt.datetime,
              **extra) -> httpx.Response:  # fmt: skip
    body = {"id": sid, "debit_account_id": dr, "credit_account_id": cr, "amount": amount,
            "currency": "USD", "start_at": _iso(start), **extra}  # fmt: skip
    return http.post("/v1/schedules", json=body)


def _runs(http: httpx.Client, sid: str, done: int) -> list[dict]:
    """The schedule's runs once ``done`` of them finished (posted, refused or skipped)."""

    def finished() -> list[dict] | None:
        runs = http.get(f"/v1/schedules/{sid}").json()["runs"]
        return runs if sum(r["status"] != "processing" for r in runs) >= done else None

    got = wait_until(finished, timeout=30, what=f"{done} runs of {sid}")
    return sorted(got, key=lambda r: r["occurrence"])


def test_recurring_transfers_catch_up_by_policy_and_belong_to_their_owner(make_node) -> None:
    node = make_node(**FAST)
    with node.anonymous() as anon:
        _, alice_h = signup(anon, "sched-alice")
        _, bob_h = signup(anon, "sched-bob")
    alice = httpx.Client(base_url=node.url, headers=alice_h, timeout=30)
    bob = httpx.Client(base_url=node.url, headers=bob_h, timeout=30)
    _account(alice, "sa-w")
    _account(bob, "sb-w")
    _account(node.http, "s-treasury")
    _account(alice, "sa-guard", flags=["debits_must_not_exceed_credits"])
    fund = {"id": "s-fund", "debit_account_id": "s-treasury", "credit_account_id": "sa-w",
            "amount": 100_000, "currency": "USD"}  # fmt: skip
    assert node.http.post("/v1/transfers", json=fund).status_code == 201

    # Daily since three days ago: the four occurrences due run at once, oldest first.
    start = _now() - dt.timedelta(days=3, minutes=1)
    r = _schedule(alice, "rent", "sa-w", "sb-w", 1_000, start, every="day")
    assert r.status_code == 201, r.text
    assert r.json()["state"] == "active" and r.json()["owner_user_id"] is not None
    runs = _runs(alice, "rent", 4)
    assert [(x["occurrence"], x["status"], x["transfer_id"]) for x in runs] == [
        (n, "posted", f"sched:rent:{n}") for n in range(4)]  # fmt: skip
    got = alice.get("/v1/schedules/rent").json()
    assert got["next_occurrence"] == 4
    assert dt.datetime.fromisoformat(got["next_run_at"]) == start + dt.timedelta(days=4)
    assert node.http.get("/v1/accounts/sb-w").json()["credits_posted"] == 4_000
    assert node.http.get("/v1/transfers/sched:rent:2").json()["metadata"] == {
        "schedule_id": "rent", "occurrence": "2"}  # fmt: skip
    # The same request again is a replay; another body under the id is refused.
    assert _schedule(alice, "rent", "sa-w", "sb-w", 1_000, start, every="day").status_code == 200
    problem(_schedule(alice, "rent", "sa-w", "sb-w", 999, start, every="day"), 409,
            "exists_with_different_fields")  # fmt: skip

    # Only the latest missed occurrence, the older ones recorded as skipped.
    _schedule(alice, "latest", "sa-w", "sb-w", 10, start, every="day", catch_up="latest")
    assert [x["status"] for x in _runs(alice, "latest", 4)] == ["skipped"] * 3 + ["posted"]
    # max_runs bounds it; a refusal is recorded and the schedule moves on.
    _schedule(alice, "twice", "sa-w", "sb-w", 1, start, every="day", max_runs=2)
    assert [x["status"] for x in _runs(alice, "twice", 2)] == ["posted", "posted"]
    wait_until(lambda: alice.get("/v1/schedules/twice").json()["state"] == "finished",
               what="the finished schedule")  # fmt: skip
    _schedule(alice, "broke", "sa-guard", "sb-w", 5, start, every="week")
    (refused,) = _runs(alice, "broke", 1)
    assert (refused["status"], refused["code"]) == ("refused", "insufficient_funds")

    # Ownership: nobody schedules debits of an account they do not own, nor sees others'.
    problem(_schedule(bob, "steal", "sa-w", "sb-w", 1, start), 403, "forbidden")
    problem(bob.get("/v1/schedules/rent"), 404, "schedule_not_found")
    problem(bob.post("/v1/schedules/rent/pause"), 404, "schedule_not_found")
    assert {s["id"] for s in bob.get("/v1/schedules").json()["schedules"]} == set()
    assert {s["id"] for s in alice.get("/v1/schedules").json()["schedules"]} == {
        "rent", "latest", "twice", "broke"}  # fmt: skip
    problem(_schedule(alice, "naive", "sa-w", "sb-w", 1, _now().replace(tzinfo=None)), 422,
            "invalid_field")  # fmt: skip

    # Pause, resume (what fell due meanwhile never runs), cancel for good.
    later = _schedule(alice, "later", "sa-w", "sb-w", 7, _now() + dt.timedelta(hours=1))
    assert later.json()["runs"] == [] and later.json()["every"] == "once"
    assert alice.post("/v1/schedules/later/pause").json()["state"] == "paused"
    assert alice.post("/v1/schedules/later/pause").json()["state"] == "paused"
    assert alice.post("/v1/schedules/later/resume").json()["state"] == "active"
    canceled = alice.post("/v1/schedules/later/cancel").json()
    assert (canceled["state"], canceled["next_run_at"]) == ("canceled", None)
    problem(alice.post("/v1/schedules/later/resume"), 409, "schedule_not_changeable")
    assert alice.get("/v1/schedules/later").json()["runs"] == []
    alice.close()
    bob.close()


def test_a_restart_mid_run_doubles_nothing_and_misses_nothing(make_node: NodeStarter) -> None:
    """Down while occurrences fell due, and killed between moving a run's money and
    recording it: on return, each occurrence moved exactly once."""
    node: RunningNode = make_node(schedule_interval_ms=0)  # the scheduler is off: "down"
    _account(node.http, "sr-a")
    _account(node.http, "sr-b")
    start = _now() - dt.timedelta(days=2, minutes=1)
    assert _schedule(node.http, "wages", "sr-a", "sr-b", 100, start, every="day").status_code == 201
    # What a pass killed after its move leaves: occurrence 0 claimed and moved, unrecorded.
    with psycopg.connect(libpq_url(node.database_url), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO schedule_runs (schedule_id, occurrence, due_at, transfer_id, status)"
            " VALUES ('wages', 0, %s, 'sched:wages:0', 'processing')", (start,))  # fmt: skip
    moved = {"id": "sched:wages:0", "debit_account_id": "sr-a", "credit_account_id": "sr-b",
             "amount": 100, "currency": "USD",
             "metadata": {"schedule_id": "wages", "occurrence": "0"}}  # fmt: skip
    assert node.http.post("/v1/transfers", json=moved).status_code == 201
    make_node.stop_all()

    node = make_node(**FAST)  # back, on the same database
    runs = _runs(node.http, "wages", 3)
    assert [(x["occurrence"], x["status"]) for x in runs] == [(0, "posted"), (1, "posted"),
                                                              (2, "posted")]  # fmt: skip
    account = node.http.get("/v1/accounts/sr-a").json()
    assert account["debits_posted"] == 300  # three occurrences, each once
    with psycopg.connect(libpq_url(node.database_url)) as conn:
        rows = conn.execute("SELECT id FROM transfers WHERE id LIKE 'sched:wages:%%'"
                            " ORDER BY id").fetchall()  # fmt: skip
    assert [r[0] for r in rows] == ["sched:wages:0", "sched:wages:1", "sched:wages:2"]
