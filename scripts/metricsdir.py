"""Prepare the folder where a host's processes share their Prometheus metrics.

prometheus_client's multiprocess mode keeps one file per process and metric kind in
PROMETHEUS_MULTIPROC_DIR, and /metrics adds them all up. Files left by a previous run would be
added in too, so whatever starts a host's processes empties the folder first. Stdlib only.
"""

from pathlib import Path


def empty_metrics_dir(path: Path) -> None:
    """Create the folder, or delete the metrics files a previous run left in it.

    Only prometheus_client's own `*.db` files: the folder is configurable, and a mistyped
    path must not cost anyone other files.
    """
    path.mkdir(parents=True, exist_ok=True)
    for leftover in path.glob("*.db"):
        leftover.unlink(missing_ok=True)
