"""Put this folder first on PYTHONPATH and torch and torchvision cannot be imported, as where they are not installed.

A finder that refuses them, rather than ``sys.modules["torch"] = None``: libraries that look for torch
in ``sys.modules`` (scipy's array API checks) then see it absent, as they would in a lean install.
"""

import sys
from importlib.abc import MetaPathFinder

BLOCKED = ("torch", "torchvision")


class RefuseTorch(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (made unimportable for this test)", name=name)
        return None


sys.meta_path.insert(0, RefuseTorch())
