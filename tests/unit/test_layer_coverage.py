"""The kernel-free tier calls every public operation of the filesystem layer and
of the request layer: a new operation without a unit test fails here."""

from __future__ import annotations

import inspect
import os
import re

import pytest

from mergerfs.fs import FileSystem
from mergerfs.requests import Requests

HERE = os.path.dirname(os.path.abspath(__file__))


def _public(cls) -> set[str]:
    return {name for name, _ in inspect.getmembers(cls, inspect.isfunction) if not name.startswith("_")}


def _called(*files: str) -> set[str]:
    names: set[str] = set()
    for f in files:
        with open(os.path.join(HERE, f)) as src:
            names |= set(re.findall(r"\.(\w+)\b", src.read()))  # called, or handed on as p.fs.op
    return names


@pytest.mark.parametrize(
    "cls,files",
    [
        (FileSystem, ("test_fs_layer.py", "test_fs_model.py", "poolkit.py")),
        (Requests, ("test_requests_layer.py",)),
    ],
    ids=["FileSystem", "Requests"],
)
def test_every_public_operation_is_called(cls, files):
    assert sorted(_public(cls) - _called(*files)) == []
