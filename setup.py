"""Maps the component folders under the `carina` namespace.

platform/, operators/ and workloads/ have no __init__.py at their top on purpose: a
platform/__init__.py at the repository root would shadow the standard library's `platform`
for anything started from the root. Every other setting lives in pyproject.toml.

testcluster/ (`carina.testcluster`, the test control plane) is for development only: a
checkout's install maps it, and the images, which copy only the three component folders,
never see it, so nothing in production can import it.
"""

from pathlib import Path

from setuptools import find_namespace_packages, setup

COMPONENTS = ("platform", "operators", "workloads")
DEVELOPMENT = ("testcluster",)
ROOTS = (*COMPONENTS, *(root for root in DEVELOPMENT if Path(root).is_dir()))

packages = [
    f"carina.{name}"
    for name in find_namespace_packages(
        include=[*ROOTS, *(f"{root}.*" for root in ROOTS)],
        exclude=["*.__pycache__", "*__pycache__*"],
    )
]

setup(packages=packages, package_dir={f"carina.{root}": root for root in ROOTS})
