import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def golden_dir() -> Path:
    env = os.environ.get("KQUANT_GOLDEN")
    return Path(env) if env else ROOT.parent / "shared" / "golden"


@pytest.fixture(scope="session")
def golden_path() -> Path:
    d = golden_dir()
    if not d.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"golden vectors not found at {d}; set KQUANT_GOLDEN")
        pytest.skip(f"golden vectors not found at {d}; set KQUANT_GOLDEN")
    return d
