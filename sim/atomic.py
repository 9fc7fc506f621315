"""Writing a file so that it is never seen half-written: into a temporary file beside it, then renamed.

`check_writable` says before any work whether a file can be written where asked (one line naming the option and
the path); `atomic_file` turns what the file system refuses later (a read-only folder, a full disk) into one line
too, with the temporary file removed and any file already at the path left as it was.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sim.errors import FleetsimError


def check_writable(path: Path, label: str) -> None:
    """A file `label` (an option, or a name for the file) will write at `path`: not a folder, in a folder that exists
    and can be written."""
    folder = path.parent if str(path.parent) else Path(".")
    head = f"{label} {path}" if label else str(path)
    if path.is_dir():
        raise FleetsimError(f"{head}: is a folder; give a file name")
    if folder.exists() and not folder.is_dir():
        raise FleetsimError(f"{head}: {folder} is a file, not a folder")
    if not folder.is_dir():
        raise FleetsimError(f"{head}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise FleetsimError(f"{head}: cannot write in {folder} (no permission)")
    _ordinary_or_absent(path, head)


def _ordinary_or_absent(path: Path, head: str) -> None:
    """A file is written by replacing what is at `path`: a symbolic link, a device or a pipe there would be replaced
    by an ordinary file (its target never written), so they are refused."""
    if path.is_symlink():
        raise FleetsimError(f"{head}: is a symbolic link; give the file it points to, or another name")
    if path.exists() and not path.is_file():
        raise FleetsimError(f"{head}: is not an ordinary file (a device or a pipe); give a file name")


@contextmanager
def atomic_file(path: Path, label: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path` to write; on success it replaces `path` (with an ordinary file's
    permissions: mkstemp makes it private), on failure it is removed. An OSError (creating, writing or renaming)
    becomes a FleetsimError naming `label` and `path`."""
    head = f"{label} {path}" if label else str(path)
    _ordinary_or_absent(path, head)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent if str(path.parent) else ".")
    except OSError as err:
        raise FleetsimError(f"{head}: cannot write there ({err.strerror or err})") from None
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise FleetsimError(f"{head}: cannot write it ({err.strerror or err}); nothing written") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
