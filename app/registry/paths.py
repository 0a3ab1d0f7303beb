"""Server paths out of messages: the store and data directories shown as relative paths.

Errors from the core name the files they failed on (``/srv/data/store/models/v0002.lvad
is corrupted``); a client sees ``models/v0002.lvad is corrupted`` instead. Both the
configured and the resolved form of each directory are replaced.
"""

from __future__ import annotations

import os
from pathlib import Path


class PathRedactor:
    def __init__(self, *roots: Path | None) -> None:
        prefixes = set()
        for root in roots:
            if root is None:
                continue
            for form in (Path(root), Path(root).absolute(), Path(root).resolve()):
                prefixes.add(str(form).rstrip(os.sep) + os.sep)
        self.prefixes = sorted(prefixes, key=len, reverse=True)  # the longest first

    def __call__(self, text: str) -> str:
        for prefix in self.prefixes:
            text = text.replace(prefix, "")
        return text
