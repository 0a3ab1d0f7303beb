"""A short slice of the load test (tests/reliability/load.py) for CI: zero errors.

wrk comes from Debian (.ci/run installs it); without it the test skips, except in
CI (CI=true), where it fails. The long run is ``make load-test``.
"""

from __future__ import annotations

from tests.conftest import missing_component
from tests.reliability.load import run, wrk_binary


def test_scoring_under_load_while_a_job_trains_fails_no_request(model_file, tmp_path):
    if wrk_binary() is None:
        message = "wrk is not installed (apt-get install wrk; .ci/run does)"
        missing_component(message)
    summary = run(model_file, tmp_path, seconds=3, repeats=2)
    print({k: v for k, v in summary.items() if k != "runs"})
    for name, phase in summary["phases"].items():
        assert phase["errors"] == 0, (name, summary["runs"])
        assert phase["requests"] >= 2, (name, phase)
    assert summary["job_state_during_load"] == "running"
    assert summary["server_errors_logged"] == 0
    assert len(summary["rss_mib"]) == 2 and min(summary["rss_mib"]) > 0
