"""Property-based fuzzing of a real ``lvad serve`` from its own OpenAPI schema.

Schemathesis (its CLI, in a subprocess) reads ``/openapi.json`` from the running
server and sends generated requests to every operation, valid and invalid ones,
once with the API key and once without. Every check it has runs, except
``positive_data_acceptance``: a request the schema allows may still be refused
with a 422, because the model's variables and window are not in the schema.

``LVAD_FUZZ_EXAMPLES`` sets the examples per operation and phase, and
``LVAD_FUZZ_MIN_CASES`` the fewest cases a run must generate: the defaults are
CI's bounded slice; ``make fuzz`` runs the long one (at least 1,000 each). Each run writes its
counts to ``var/reliability/fuzz-<mode>.json`` (docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.app.conftest import API_KEY, seeded_store
from tests.app.live import LiveServer

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
EXAMPLES = int(os.environ.get("LVAD_FUZZ_EXAMPLES", "5"))
SEED = int(os.environ.get("LVAD_FUZZ_SEED", "20261128"))
RESULTS = Path("var/reliability")
MIN_CASES = int(os.environ.get("LVAD_FUZZ_MIN_CASES", "300"))  # fewer: operations not reached


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_file):
    root = tmp_path_factory.mktemp("fuzz")
    seeded_store(root / "store", model_file)
    (root / "data").mkdir()  # an empty data directory: `path` jobs reach the file checks
    env = {
        "LVAD_API_KEY": API_KEY,
        "LVAD_BOOTSTRAP_DEMO": "false",
        "LVAD_DATA_DIR": str(root / "data"),
        "LVAD_LOG_LEVEL": "warning",  # errors and tracebacks, not every request
    }
    with LiveServer.serving(root / "store", root / "server.log", env) as live:
        yield live


def run_schemathesis(server: LiveServer, key: str | None, report: Path) -> tuple[int, str]:
    command = [
        str(SCHEMATHESIS), "run", f"{server.base_url}/openapi.json",
        "--checks", "all", "--exclude-checks", "positive_data_acceptance",
        "--max-examples", str(EXAMPLES), "--seed", str(SEED),
        "--workers", "1", "--generation-database", "none", "--no-color",
        "--request-timeout", "60", "--report", "junit", "--report-junit-path", str(report),
    ]  # fmt: skip
    if key is not None:
        command += ["--header", f"Authorization: Bearer {key}"]
    done = subprocess.run(  # in tmp_path: its cache folder stays out of the tree
        command, capture_output=True, text=True, timeout=1800, cwd=report.parent
    )
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("mode", ["with-key", "without-key"])
def test_generated_requests_get_no_server_error_and_match_the_schema(server, mode, tmp_path):
    key = API_KEY if mode == "with-key" else None
    code, output = run_schemathesis(server, key, tmp_path / "junit.xml")
    counts = re.search(r"(\d+) generated, (.*)", output)
    assert counts, output[-3000:]
    cases = int(counts.group(1))
    RESULTS.mkdir(parents=True, exist_ok=True)
    summary = {"mode": mode, "examples": EXAMPLES, "seed": SEED, "cases": cases}
    summary |= {"outcome": counts.group(2).strip(), "exit_code": code}
    (RESULTS / f"fuzz-{mode}.json").write_text(json.dumps(summary, indent=1))
    print(summary)

    assert code == 0, output[-6000:]
    assert cases >= MIN_CASES, output[-3000:]
    assert 'failures="0"' in (tmp_path / "junit.xml").read_text()
    assert server.status_of("/readyz") == 200
    log = server.log_path.read_text()
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]
