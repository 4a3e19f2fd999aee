"""``paynode bench`` end to end, tiny: a node, a load, the audit, the baseline, the files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("mode", ["batch", "single"])
def test_bench_runs_audits_and_compares(tmp_path: Path, mode: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env.pop("DATABASE_URL", None)  # the bench's node brings its own embedded PostgreSQL
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "paynode.node.cli", "bench", "--mode", mode, "--accounts", "60",
           "-d", "1.5", "-c", "4", "-b", "50", "--shards", "2", "--baseline",
           "--baseline-concurrency", "4", "--results", str(results),
           "--data-dir", str(tmp_path / "node")]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (run_dir,) = results.iterdir()
    report = json.loads((run_dir / "result.json").read_text())
    assert report["audit"]["problems"] == [] and report["audit"]["journal_checked"]
    assert report["audit"]["accounts"] == 61
    node = report["node"][0]
    assert node["acked"] > 0 and node["errors"] == {}
    assert report["baseline"]["acked"] > 0 and report["baseline"]["problems"] == []
    assert report["ratio_node_over_baseline"] > 0
    assert report["peak_rss_mb"] > 0
    assert (run_dir / "plot.png").stat().st_size > 1000
    assert "node / baseline" in (run_dir / "summary.md").read_text()
