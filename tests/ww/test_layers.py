"""ww is the torch-only layer: importing it, all of it, loads none of the harness's dependencies."""

from tests.fresh_python import run_fresh

HARNESS_ONLY = ("ray", "open_clip", "torchvision", "pyarrow", "rich")

IMPORT_ALL = """
import json, pkgutil, sys
import ww
for module in pkgutil.walk_packages(ww.__path__, "ww."):
    __import__(module.name)
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in sys.argv[1:])))
"""


def test_importing_every_ww_module_loads_no_harness_dependency():
    # a fresh interpreter: this test process has Ray and the rest loaded by other tests
    assert run_fresh(IMPORT_ALL, *HARNESS_ONLY) == []
