"""yolojax's cache folder: generated datasets, imported reference weights, compiled programs, tuned convolutions."""
from __future__ import annotations

import os
from pathlib import Path
from typing import MutableMapping


def cache_root(environ: MutableMapping[str, str] = os.environ) -> Path:
    """$YOLOJAX_CACHE, else ~/.cache/yolojax."""
    return Path(environ.get("YOLOJAX_CACHE") or Path.home() / ".cache" / "yolojax")
