"""Package discovery. The import names differ from the folder names (``kit/`` is ``slimkit``), which
pyproject's ``packages.find`` cannot express, so the subpackages are found here from the tree."""
from setuptools import find_packages, setup

FOLDERS = {"slimkit": "kit", "slimkit.widgets": "widgets", "slimkit.accel": "accel"}
packages = [f"{name}.{sub}" if sub else name for name, folder in FOLDERS.items() for sub in ["", *find_packages(folder)]]
setup(packages=packages, package_dir=FOLDERS)
