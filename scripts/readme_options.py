"""Regenerate the README's option table from the option descriptors."""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mergerfs.options import markdown_table  # noqa: E402

readme = ROOT / "README.md"
text = readme.read_text()
new = re.sub(
    r"(<!-- options:begin -->\n).*?(<!-- options:end -->)",
    lambda m: m.group(1) + markdown_table() + "\n" + m.group(2),
    text,
    flags=re.S,
)
readme.write_text(new)
