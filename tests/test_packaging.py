"""What a wheel ships: every folder of Python modules is a package ``setup.py`` finds."""

from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]


def test_every_module_folder_is_a_package_setup_finds():
    found = set(find_packages(str(ROOT), include=["recbole_delrec", "recbole_delrec.*"]))
    folders = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "recbole_delrec").rglob("*.py")}
    assert folders - found == set()  # a folder without __init__.py is left out of the wheel
