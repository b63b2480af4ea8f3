"""Shared fixtures for the napari widget tests (owned by the widget, see DEVELOPERS.md).

napari and npe2 read and write settings under the user's config and cache directories;
point them at a temporary directory before napari is imported so tests never touch (or
depend on) a developer's own settings.
"""

import os
import tempfile

_SANDBOX = tempfile.mkdtemp(prefix="napari-dip-tests-")
os.environ.setdefault("XDG_CONFIG_HOME", os.path.join(_SANDBOX, "config"))
os.environ.setdefault("XDG_CACHE_HOME", os.path.join(_SANDBOX, "cache"))


def pytest_unconfigure(config):
    # The sandbox holds napari's and npe2's settings of this run only.
    import shutil

    shutil.rmtree(_SANDBOX, ignore_errors=True)
