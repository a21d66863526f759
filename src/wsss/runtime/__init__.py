"""The bottom layer every stage uses: device, seeding, processes, progress, provenance.

Nothing here imports another ``wsss`` package but :mod:`wsss.errors`.
"""

from wsss.runtime.device import resolve_device
from wsss.runtime.distributed import DistInfo, barrier, dist_info, init_distributed
from wsss.runtime.progress import LogLine, progress_bar
from wsss.runtime.provenance import library_versions, write_run_info
from wsss.runtime.seeding import seed_everything

__all__ = [
    "DistInfo",
    "LogLine",
    "barrier",
    "dist_info",
    "init_distributed",
    "library_versions",
    "progress_bar",
    "resolve_device",
    "seed_everything",
    "write_run_info",
]
