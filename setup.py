"""Builds the compiled modules only; all metadata lives in pyproject.toml.

Warnings are on at both stages, so a build that prints none is a clean one:
Cython's own (a variable whose C type was never chosen, one that may be read
before it is set, unused names and results, unreachable code, and with
show_all_warnings its hints, e.g. an exception a noexcept function would swallow)
and the C compiler's over the generated C (-Wall -Wextra, and -Wconversion: a
size or offset changing sign between the .pyx's C types and CPython's).
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

DIRECTIVES = {
    "language_level": "3",
    "autotestdict": False,  # no __test__ dict: the modules have no doctests to collect
    "auto_pickle": False,  # the compiled types hold C pointers: never picklable, no generated __reduce_cython__
}
CYTHON_WARNINGS = {
    "warn.undeclared": True,
    "warn.maybe_uninitialized": True,
    "warn.unused": True,
    "warn.unused_arg": True,
    "warn.unused_result": True,
    "warn.unreachable": True,
    "warn.multiple_declarators": True,
}
C_WARNINGS = ["-Wall", "-Wextra", "-Wconversion"]

setup(
    ext_modules=cythonize(
        [
            Extension(f"mergerfs.{name}", [f"mergerfs/{name}.pyx"], extra_compile_args=C_WARNINGS)
            for name in ("_fastpath", "_nodes", "_kernel")
        ],
        compiler_directives={**DIRECTIVES, **CYTHON_WARNINGS},
        show_all_warnings=True,
    ),
)
