"""Gzip-compressed inputs: a trace or a run log named `*.gz` (`trace.csv.gz`, `bench.json.gz`) is read as what it
decompresses to, named without the `.gz` (so its format is detected as the plain file's would be); so is a file whose
content is gzip under a plain name (a run folder's `requests.jsonl` compressed in place: no trace or log starts with
gzip's magic bytes). Gzip of a tar archive, or of gzip again, is refused: neither is a trace.

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


GZIP_MAGIC = b"\x1f\x8b"


def is_gzip_name(path: Path) -> bool:
    return path.suffix.lower() == ".gz"


def plain_name(path: Path) -> Path:
    """The name the content goes by: `trace.csv.gz` -> `trace.csv` (its format is detected from that)."""
    return path.with_suffix("") if is_gzip_name(path) and path.stem else path


def _starts_gzip(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(2) == GZIP_MAGIC
    except OSError:  # (unreadable: the reader that opens it says so)
        return False


def is_gzip(path: Path) -> bool:
    """A regular file named `*.gz`, or one whose content is gzip whatever its name."""
    return path.is_file() and (is_gzip_name(path) or _starts_gzip(path))


@contextlib.contextmanager
def decompressed(path: Path, *, limit: int = MAX_DECOMPRESSED_BYTES) -> Iterator[Path]:
    """`path` itself, or for a `*.gz` file a temporary plain copy of its content (see the module docstring)."""
    if not is_gzip(path):
        yield path
        return
    inner = plain_name(path).name
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
                if total == len(chunk):
                    _check_content(path, chunk)
                try:
                    dst.write(chunk)
                except OSError as err:
                    raise FleetsimError(f"{path}: cannot decompress it into a temporary folder ({err})") from None
        try:
            yield plain
        except FleetsimError as err:
            raise FleetsimError(str(err).replace(str(plain), str(path))) from None


def _check_content(path: Path, head: bytes) -> None:
    """The decompressed content's first chunk: gzip again, or a tar archive, is no trace or log (read on, either is
    refused as "not UTF-8" or as a header of NUL bytes and file modes, which says nothing of the cause)."""
    if head.startswith(GZIP_MAGIC):
        raise FleetsimError(f"{path}: compressed twice (its content is gzip again); decompress it once (gunzip) and give that")
    if head[257:262] == b"ustar":
        member = head[:100].split(b"\0", 1)[0].decode("utf-8", errors="replace")
        raise FleetsimError(
            f"{path}: a compressed tar archive (first member {member!r}), not one file; extract the trace (tar xzf) and give it"
        )
