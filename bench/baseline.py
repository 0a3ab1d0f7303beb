"""Another checkout as the baseline of ``service_bench.py --baseline-tree PATH``.

Its servers run that checkout's own ``.venv/bin/lvad serve``, each on a store
seeded by that checkout's own code through its own Python (a short
subprocess), so the store has whatever layout that code expects: the
single-model SQLite store (``app.store.Store``) before named models, the
registry (``app.registry.registry.Registry``) after. Both serve the model as
``default``, whose route is POST /v1/score with the same body, so the same load
runs against both.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness import clean_env

# Run by the baseline's Python with the checkout as its working directory, so
# `app` and `model` are that checkout's. argv: store root, model file.
SEED_SCRIPT = """
import shutil, sys
from pathlib import Path

root, model = Path(sys.argv[1]), Path(sys.argv[2])
try:
    from app.registry.registry import Registry
except ImportError:  # before named models: one model per store
    from app.store import Store

    store = Store(root)
    copy = root / "incoming.lvad"
    shutil.copy(model, copy)
    store.set_active(store.register_model(copy, source="bench").version)
else:
    store = Registry(root)
    copy = root / "incoming.lvad"
    shutil.copy(model, copy)
    store.set_active("default", store.register_version("default", copy, source="bench").version)
store.close()
"""


@dataclass(frozen=True)
class BaselineTree:
    """A checkout with its own virtual environment (``make setup`` run in it)."""

    root: Path

    @property
    def python(self) -> Path:
        return self.root / ".venv" / "bin" / "python"

    @property
    def lvad(self) -> Path:
        return self.root / ".venv" / "bin" / "lvad"

    def problem(self) -> str | None:
        """Why this tree cannot serve as a baseline, or None."""
        for path in (self.python, self.lvad):
            if not path.exists():
                return f"{path} not found: run `make setup` in {self.root}"
        return None

    def describe(self) -> str:
        """'PATH at COMMIT (subject)' from git, or just PATH outside a repository."""
        done = subprocess.run(
            ["git", "-C", str(self.root), "log", "-1", "--format=%h (%s)"],
            capture_output=True,
            text=True,
        )
        return f"{self.root} at {done.stdout.strip()}" if done.returncode == 0 else str(self.root)

    def seed_store(self, root: Path, model_path: Path) -> Path:
        """A store under ``root`` whose active default model is a copy of ``model_path``."""
        env = clean_env(OMP_NUM_THREADS="1")
        env.pop("PYTHONPATH", None)  # that checkout's code, not what this process imports
        done = subprocess.run(
            [str(self.python), "-c", SEED_SCRIPT, str(root), str(model_path)],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            raise RuntimeError(f"seeding the baseline store failed:\n{done.stderr[-2000:]}")
        return root


def twin_key(key: str) -> str:
    """The key of a phase's twin against the baseline's server."""
    return f"{key} base"
