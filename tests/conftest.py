import copy
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
sys.path.insert(0, str(ROOT / "tools"))  # so tests can call the CLIs' main() in-process


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture
def tiny_dict() -> dict:
    """The tiny recipe as a plain dict, to mutate into bad inputs."""
    return copy.deepcopy(yaml.safe_load((RECIPES / "tiny.yaml").read_text()))


@pytest.fixture
def write_recipe(tmp_path):
    def write(data: dict, name: str = "recipe.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write
