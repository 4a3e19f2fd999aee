"""API fuzzing: requests generated from the node's own ``/openapi.json`` (schemathesis).

Every operation gets a bounded number of valid and invalid requests, made with the
operator key (so authorization lets them through to validation and the handlers).
No request may get a 5xx other than the documented, retryable 503s.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable

from tests.support.node import ADMIN_HEADERS, RunningNode

EXAMPLES = 6  # per operation and generation mode: bounded so CI stays short
RETRYABLE_503 = {"overloaded", "timeout", "storage_unavailable", "transfer_in_flight"}


def _fuzz(node: RunningNode, op, mode, failures: list[str], statuses: Counter[int]) -> None:
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case) -> None:
        # The operator key, even where the case made up an Authorization header.
        case.headers = {**(case.headers or {}), **ADMIN_HEADERS}
        r = case.call(base_url=node.url, timeout=30)
        statuses[r.status_code] += 1
        if r.status_code < 500:
            return
        code = r.json().get("code") if "json" in r.headers.get("content-type", "") else None
        if r.status_code != 503 or code not in RETRYABLE_503:
            failures.append(f"{op.label} ({mode.value}): {r.status_code} {r.text[:200]}")

    run()


def test_generated_requests_get_no_server_errors(node: RunningNode) -> None:
    import schemathesis
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_dict(node.http.get("/openapi.json").json())
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    operations = 0
    for result in schema.get_all_operations():
        op = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz(node, op, mode, failures, statuses)
            except Unsatisfiable:  # nothing to make invalid (no parameters, no body)
                assert mode == GenerationMode.NEGATIVE, op.label
    print(f"{operations} operations, {sum(statuses.values())} requests: {dict(statuses)}")
    assert operations > 40
    assert not failures, "\n".join(failures[:20])


def test_answers_match_the_published_contract(node: RunningNode, tmp_path: Path) -> None:
    """Schemathesis' own runner (examples, coverage, fuzzing, stateful phases): every answer
    has a documented status, content type and body schema, and none is a server error."""
    checks = ("not_a_server_error,status_code_conformance,content_type_conformance,"
              "response_schema_conformance")  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{node.url}/openapi.json",
         "-H", f"Authorization: {ADMIN_HEADERS['Authorization']}", "--checks", checks,
         "--max-examples", str(EXAMPLES), "--seed", "1", "--no-color",
         "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
