"""Build hook for the optional C speedups; all metadata is in pyproject.toml.

``deribit_kit.live._speedups`` (the tick ladder's hot loop) is ``optional``: without a C compiler the
install goes on and ``deribit_kit.live.ladder`` runs the same loop in Python.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("deribit_kit.live._speedups", ["deribit_kit/live/_speedups.c"], optional=True)])
