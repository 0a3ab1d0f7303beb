"""Dependency audit (``make audit``, run by .ci/run): pip-audit on the project's environment.

Fails on any known vulnerability that is not an exception below (each with its
reason, also in docs/reliability.md). pip-audit asks a vulnerability service (PyPI's
JSON API by default); where that cannot be reached it audits nothing and reports
every package as skipped: this says so plainly, and fails with ``--strict``.

    python -m tests.reliability.audit [--strict]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

PIP_AUDIT = Path(sys.executable).with_name("pip-audit")
EXCEPTIONS: dict[str, str] = {}  # vulnerability id -> why it does not apply (none today)


def audit() -> dict:
    command = [str(PIP_AUDIT), "--format", "json", "--skip-editable", "--progress-spinner", "off"]
    for vulnerability in EXCEPTIONS:
        command += ["--ignore-vuln", vulnerability]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        raise SystemExit(f"pip-audit failed ({done.returncode}):\n{done.stderr[-3000:]}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strict", action="store_true", help="fail if anything went unaudited")
    args = parser.parse_args()
    report = audit()
    packages = report["dependencies"]
    skipped = [p["name"] for p in packages if p.get("skip_reason")]
    found = [(p["name"], p["version"], v["id"]) for p in packages for v in p.get("vulns", [])]
    audited = len(packages) - len(skipped)
    print(f"pip-audit: {audited} of {len(packages)} packages audited, {len(found)} known", end="")
    print(" vulnerabilities")
    for name, version, vulnerability in found:
        print(f"  {name} {version}: {vulnerability}")
    if found:
        raise SystemExit(1)
    if skipped:
        print(f"  not audited (the vulnerability service did not know them): {', '.join(skipped)}")
        if audited == 0:
            print("  nothing was audited: the vulnerability service cannot be reached from here")
        if args.strict:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
