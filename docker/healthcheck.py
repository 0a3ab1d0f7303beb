"""Container health check: exit 0 when the detector's /readyz answers 200, else 1.

Run by the image's exec-form HEALTHCHECK (slim images have no curl). It asks the
port `lvad serve` listens on (LVAD_PORT) on the loopback interface, which answers
whether the server binds 0.0.0.0 (compose) or 127.0.0.1 (host networking).
"""

import os
import sys
import urllib.error
import urllib.request

port = os.environ.get("LVAD_PORT", "8000")
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=4) as response:
        sys.exit(0 if response.status == 200 else 1)
except (urllib.error.URLError, OSError) as exc:
    print(f"not ready: {exc}", file=sys.stderr)
    sys.exit(1)
