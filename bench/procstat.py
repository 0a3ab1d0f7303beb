"""Peak memory of the calling process, for benchmarks that run one measurement per process."""

from __future__ import annotations

import resource


def peak_rss_mib() -> float:
    """This process's peak resident set size (VmHWM), MiB.

    ``getrusage``'s ru_maxrss is not used: Linux carries the parent's peak into
    a child across fork and exec, so a small child of a large parent would
    report the parent's size.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB -> MiB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
