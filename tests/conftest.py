"""Test setup: use the offline dataset folder beside the checkout when there is one."""

import os
from pathlib import Path

_SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
if "LTJAX_MANUAL_DIR" not in os.environ and _SHARED.is_dir():
    os.environ["LTJAX_MANUAL_DIR"] = str(_SHARED)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
