"""Builds the compiled data path only; all metadata lives in pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [Extension("mergerfs._fastpath", ["mergerfs/_fastpath.pyx"])],
        compiler_directives={"language_level": "3"},
    ),
)
