"""Power lost at each step of publishing a model; after a restart the registry and the
model files agree (tests/reliability/power_loss.py simulates the loss).

For every crash point the publishing runs in its own process up to that step, what
the disk was not told to keep is undone, and a real ``lvad serve`` starts on what is
left: every version it lists has its file and loads, every file is listed, the
active version is served, and a registration whose commit returned is there.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.app.conftest import seeded_store
from tests.app.live import LiveServer
from tests.reliability.power_loss import lose_power

ROOT = Path(__file__).resolve().parents[2]
STEPS = 9  # create, fsync, rename, fsync dir (the artifact); rename, 2 fsyncs, 2 commits


def publish_crashing(model: Path, stores: list[Path]) -> list[int]:
    """Publish ``model`` into ``stores[i]``, crashing at step i + 1; the exit codes."""
    command = [sys.executable, "-m", "tests.reliability.power_loss", str(model)]
    done = subprocess.run(
        command + [str(s) for s in stores], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])["exit_codes"]


def check_agreement(server: LiveServer, store: Path, committed: int) -> None:
    with server.client() as client:
        models = client.get("/v1/models/default").json()["versions"]
        versions = sorted(m["version"] for m in models)
        files = sorted(p.name for p in (store / "models" / "default").iterdir())
        assert files == [f"v{v:04d}.lvad" for v in versions], (files, versions)
        for version in versions:
            detail = client.get(f"/v1/models/default/versions/{version}")
            assert detail.status_code == 200, detail.text
        active = [m["version"] for m in models if m["active"]]
        assert client.get("/readyz").json()["models"] == {"default": active[0]}
        assert len(active) == 1
        if committed >= 1:  # the registration's commit returned: it survives
            assert 2 in versions, versions
        if committed >= 2:  # and so did the activation
            assert active == [2]
    assert list((store / "tmp").iterdir()) == []


def test_the_registry_and_the_files_agree_after_power_loss_at_any_step(
    tmp_path: Path, model_file: Path
) -> None:
    template = tmp_path / "template"
    seeded_store(template, model_file)
    (template / "lock").unlink()
    stores = [tmp_path / f"crash-{n}" / "store" for n in range(1, STEPS + 2)]
    for store in stores:
        shutil.copytree(template, store)
    os.sync()  # what was there before the publishing is on the disk
    codes = publish_crashing(model_file, stores)
    assert codes == [137] * STEPS + [0]  # the last one completes
    cases = []
    for store in stores:
        journal = store.parent / "journal.jsonl"
        undone = lose_power(journal)
        ops = [json.loads(line) for line in journal.read_text().splitlines()]
        committed = sum(op.get("op") == "commit" for op in ops)
        cases.append((store, committed, undone))

    env = {"LVAD_BOOTSTRAP_DEMO": "false", "LVAD_SCORING_PROCESS": "false"}
    with contextlib.ExitStack() as stack:
        servers = []
        for store, _, _ in cases:  # all at once: each start imports torch
            server = LiveServer.launch(store, store.parent / "server.log", env)
            stack.callback(server.stop, timeout=15)
            servers.append(server)
        for server, (store, committed, undone) in zip(servers, cases, strict=True):
            server.wait_ready()
            try:
                check_agreement(server, store, committed)
            except AssertionError as exc:
                raise AssertionError(f"{store.parent.name}, undone: {undone}: {exc}") from exc
    undone_anything = [undone for *_, undone in cases if undone]
    assert undone_anything, "no crash point lost anything: the simulation did nothing"
