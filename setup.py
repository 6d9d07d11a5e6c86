"""The optional C part of the package (everything else is in pyproject.toml): radiusd._walk,
the attribute walk of the codec. ``optional=True``: where no C compiler is found, the build
goes on without it and the codec walks in Python (README: Dependencies)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("radiusd._walk", ["radiusd/_walk.c"], optional=True)])
