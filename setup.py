"""Builds the compiled modules only; all metadata lives in pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [
            Extension("mergerfs._fastpath", ["mergerfs/_fastpath.pyx"]),
            Extension("mergerfs._nodes", ["mergerfs/_nodes.pyx"]),
            Extension("mergerfs._kernel", ["mergerfs/_kernel.pyx"]),
        ],
        compiler_directives={"language_level": "3"},
    ),
)
