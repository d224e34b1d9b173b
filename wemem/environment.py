"""What a run ran with: Python, platform, the versions of the packages that decide its numbers, and the device.

Recorded with a study by each launcher (``search.storage._records.store_environment``) and printed in its report's
reproducibility block. Versions are read from the installed distributions' metadata, so nothing is imported
(``ray`` would take seconds, and ``wemem`` may not import it at all).
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

import torch

# the distributions whose versions can change a study's numbers or its storage, in the order a report lists them
PACKAGES = (
    "wemem-search",
    "torch",
    "torchvision",
    "optuna",
    "ray",
    "opacus",
    "numpy",
    "pandas",
    "scikit-learn",
    "sqlalchemy",
    "pydantic",
)


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def device_description() -> str:
    """The accelerator this process sees (``torch.cuda``), or the CPU with its core count."""
    cores = f"{os.cpu_count()} CPU cores"
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return f"{len(names)} x CUDA ({', '.join(sorted(set(names)))}), {cores}"
    return f"CPU only, {cores} ({platform.machine()})"


def describe() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": device_description(),
        "packages": package_versions(),
    }
