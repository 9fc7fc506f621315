"""Gzip-compressed inputs: a trace or a run log named `*.gz` (`trace.csv.gz`, `bench.json.gz`) is read as what it
decompresses to, named without the `.gz` (so its format is detected as the plain file's would be).

The content is decompressed to a temporary folder, a chunk at a time, and removed when the read is done; a file that
decompresses to more than `MAX_DECOMPRESSED_BYTES` is refused before the rest is written (a gzip bomb), and an error
that names the temporary file names the `.gz` instead."""

from __future__ import annotations

import contextlib
import gzip
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from sim.errors import FleetsimError

MAX_DECOMPRESSED_BYTES = 64 * 2**30  # a hundred million requests as CSV are ~4 GB
_CHUNK = 1 << 22


def is_gzip_name(path: Path) -> bool:
    return path.suffix.lower() == ".gz"


@contextlib.contextmanager
def decompressed(path: Path, *, limit: int = MAX_DECOMPRESSED_BYTES) -> Iterator[Path]:
    """`path` itself, or for a `*.gz` file a temporary plain copy of its content (see the module docstring)."""
    if not is_gzip_name(path) or not path.is_file():
        yield path
        return
    inner = path.name[: -len(path.suffix)] or "input"
    with tempfile.TemporaryDirectory(prefix="fleetsim-gz-") as tmp:
        plain = Path(tmp) / inner
        total = 0
        with gzip.open(path, "rb") as src, plain.open("wb") as dst:
            while True:
                try:
                    chunk = src.read(_CHUNK)
                except (OSError, EOFError, zlib.error) as err:  # (gzip.BadGzipFile is an OSError)
                    raise FleetsimError(f"{path}: not a readable gzip file ({err or type(err).__name__})") from None
                if not chunk:
                    break
                total += len(chunk)
                if total > limit:
                    raise FleetsimError(
                        f"{path}: decompresses to more than {limit / 2**30:g} GiB; decompress it yourself if that is meant"
                    )
                try:
                    dst.write(chunk)
                except OSError as err:
                    raise FleetsimError(f"{path}: cannot decompress it into a temporary folder ({err})") from None
        try:
            yield plain
        except FleetsimError as err:
            raise FleetsimError(str(err).replace(str(plain), str(path))) from None
