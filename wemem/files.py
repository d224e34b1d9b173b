"""Every file the tool writes goes through here: its place is checked before any work, and it is written
atomically after the work, so a bad path costs seconds (not a finished run) and a failed write leaves the old
file intact and no temporary file behind. A file the user names may be a link (theirs to choose); a file wemem
names in a folder the user named never follows one (:func:`write_into`). CSV text is made by :func:`csv_text`.

Checks probe by creating a temporary file: we often run as root, where ``os.access`` says yes to read-only
mounts and to /proc alike. Written here rather than taken from a library: ``atomicwrites``, the usual one, has
been archived unmaintained since 2022, and ``os.replace`` of a fsynced temporary is all it would add.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import WememError

if TYPE_CHECKING:
    import pandas as pd

# the bytes, the text (UTF-8), or a function writing the temporary file it is given (for writers that only
# take a path)
Content = bytes | str | Callable[[Path], None]

_FULL = (errno.ENOSPC, errno.EDQUOT)
_REASONS: dict[int | None, str] = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EROFS: "its file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}
_NOT_REGULAR = (
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


def _reason(error: OSError) -> str:
    return _REASONS.get(error.errno, error.strerror or str(error))


def write_error(path: Path, error: OSError) -> WememError:
    """The user's words for a failed write: what happened to which file, and what to do."""
    if error.errno in _FULL:
        return WememError(f"disk full while writing {path}: free space on that device or write elsewhere")
    return WememError(f"cannot write {path}: {_reason(error)}; write elsewhere (another --out or --cache-dir)")


# ------------------------------------------------------------------------------------------------ checks


def _probe(folder: Path, target: Path, what: str) -> None:
    """Create and remove a file in ``folder``: the only test that read-only mounts and /proc fail for root."""
    try:
        handle, name = tempfile.mkstemp(dir=folder, prefix=".wemem-probe-")
    except OSError as error:
        raise WememError(
            f"cannot write {target}: the folder {folder} does not accept new files "
            f"({_reason(error)}); choose another {what}"
        ) from None
    os.close(handle)
    os.unlink(name)


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_folder(folder: Path, subject: Path, what: str) -> None:
    """``folder`` or, when it does not exist yet (it is created later, after the work), its nearest existing
    ancestor must be a folder accepting new files; the message names ``subject``, what would be written."""
    existing = _nearest_existing(folder.resolve())
    if not existing.is_dir():
        where = "it" if existing == subject.resolve() else existing
        raise WememError(f"cannot write {subject}: {where} is a file, not a folder; choose another {what}")
    _probe(existing, subject, what)


def check_writable_folder(path: str | Path, what: str) -> Path:
    """Refuse a folder we could not write in (see :func:`_check_folder`); ``what`` is the option naming it
    (``--out``, ``--cache-dir``), for the fix. Creates nothing."""
    folder = Path(path)
    _check_folder(folder, folder, what)
    return folder


def check_output_folder(path: str | Path, names: Sequence[str] = (), what: str = "--out") -> Path:
    """An output folder (report, apply, run): writable as :func:`check_writable_folder` says, and the ``names``
    it will hold, where the folder exists, must be writable files (not folders, devices or links: see
    :func:`write_into`)."""
    folder = check_writable_folder(path, what)
    if folder.is_dir():
        for name in names:
            _refuse_link(folder / name, what)
            check_output_file(folder / name, what=what)
    return folder


def _refuse_link(path: Path, what: str) -> None:
    """A link where wemem names a file is not the user's word (a received folder may hold one): refused."""
    if path.is_symlink():
        raise WememError(
            f"cannot write {path}: it is a link to {os.readlink(path)}, not a regular file; wemem never "
            f"writes through a link inside an output folder (it could point anywhere): remove the link "
            f"or choose another {what}"
        )


def _kind(mode: int) -> str:
    return next((kind for test, kind in _NOT_REGULAR if test(mode)), "not a regular file")


def check_output_file(
    path: str | Path, suffixes: Sequence[str] | None = None, *, create_parents: bool = False, what: str = "--out"
) -> Path:
    """Refuse an output file that could not be written, before any work: a wrong suffix, a folder, something
    that is not a regular file once links are followed (a link to /dev/full, a FIFO), a missing folder (unless
    ``create_parents``: then its nearest existing ancestor must be writable) or a folder without write access."""
    out = Path(path)
    if suffixes and out.suffix not in suffixes:
        raise WememError(f"output file {out} must end in {' or '.join(suffixes)}; choose another {what}")
    target = out.resolve()
    link = f" (a link to {target})" if target != Path(os.path.abspath(out)) else ""
    if target.is_dir():
        ending = f" ending in {' or '.join(suffixes)}" if suffixes else ""
        raise WememError(f"cannot write {out}{link}: it is a folder; give a file name{ending} as {what}")
    if target.exists() and not stat.S_ISREG(mode := target.stat().st_mode):
        raise WememError(f"cannot write {out}{link}: it is {_kind(mode)}, not a regular file; choose another {what}")
    if not target.parent.exists() and not create_parents:
        raise WememError(
            f"cannot write {out}: the folder {out.parent} does not exist; create it first "
            f"(mkdir -p) or choose another {what}"
        )
    _check_folder(target.parent, out, what)
    return out


# ------------------------------------------------------------------------------------------------ writes


def create_folder(path: str | Path, what: str = "--out") -> Path:
    """Create an output or cache folder (and its parents), once its nearest existing ancestor is checked."""
    folder = check_writable_folder(path, what)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_error(folder, error) from None
    return folder


def _write_bytes(handle: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(handle, view) :]


def _open_temporary(target: Path) -> tuple[int, Path]:
    """A new file beside ``target``, with the mode open() gives (the umask applies; mkstemp's would be 0600)."""
    name = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), name


def write_atomically(path: str | Path, content: Content) -> bool:
    """Write ``content`` to ``path``, a file the user named: a link there is theirs, so its target is written
    (the link stays). Returns whether an existing file was replaced; see :func:`_replace`."""
    return _replace(Path(path).resolve(), content)


def write_into(folder: str | Path, name: str, content: Content) -> bool:
    """Write ``content`` as the file ``name`` (one name, no subfolder) in ``folder``, a folder the user named (a
    link there is theirs and followed). ``name`` is wemem's, so a link found there is nobody's word: it may have
    been planted in a received folder to send the file anywhere. It is replaced by the file itself, its target
    left untouched (``os.replace`` replaces a link, never follows it). Returns whether something was replaced."""
    if name in ("", ".", "..") or os.sep in name:
        raise ValueError(f"write_into takes one file name, not {name!r}")
    return _replace(Path(folder).resolve() / name, content)


def _replace(target: Path, content: Content) -> bool:
    """Write ``content`` to a temporary file beside ``target``, fsync it and move it over ``target`` in one step:
    readers see the old file or the new one, never half of one. Any failure removes the temporary file; OS errors
    become a WememError naming the file and the fix. Returns whether ``target`` existed."""
    try:
        previous = target.lstat() if os.path.lexists(target) else None
        handle, name = _open_temporary(target)
    except OSError as error:
        raise write_error(target, error) from None
    try:
        try:
            if previous is not None and stat.S_ISREG(previous.st_mode):  # a replaced file keeps its permissions
                os.fchmod(handle, stat.S_IMODE(previous.st_mode))
            if callable(content):
                content(name)
            else:
                _write_bytes(handle, content.encode() if isinstance(content, str) else content)
            os.fsync(handle)  # the data is on disk before the name points at it (a crash leaves old or new)
        finally:
            os.close(handle)
        os.replace(name, target)
    except BaseException as error:
        name.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise write_error(target, error) from None
        raise
    return previous is not None


# OWASP's advice against CSV injection: a spreadsheet runs a cell starting with one of these as a formula (a tab
# or carriage return first is stripped, and what follows may be one); a leading single quote keeps it text
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_text(value: Any) -> Any:
    """A text cell a spreadsheet shows as text and never runs; any other value (a number, a missing one) as is."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def csv_text(frame: pd.DataFrame, **options: Any) -> str:
    """``frame.to_csv(**options)`` with every column name and text cell made :func:`spreadsheet_text`: stored
    strings (a defense, an attack, a parameter's name or value) may come from anyone. Numbers stay numbers,
    negative ones included, and numeric columns keep their type. Lines end in CRLF (RFC 4180): the csv module
    quotes a cell holding a character of the line end, and with pandas' default (LF alone) a carriage return in
    a cell would stay bare, where a spreadsheet starts a new row whose first cell could be a formula."""
    safe = frame.rename(columns=spreadsheet_text)  # a copy: the caller's frame is left as it was
    for position, dtype in enumerate(safe.dtypes):
        if dtype.kind in "OU":  # object and string columns: the only ones that can hold text
            safe.isetitem(position, safe.iloc[:, position].map(spreadsheet_text))
    return safe.to_csv(lineterminator="\r\n", **options)


def wrote(*files: tuple[str | Path, bool]) -> str:
    """``wrote A and B; replaced existing C`` for (path, replaced) pairs, as :func:`write_atomically` returns."""
    new = [str(path) for path, replaced in files if not replaced]
    old = [str(path) for path, replaced in files if replaced]
    return "; ".join(
        ([f"wrote {' and '.join(new)}"] if new else []) + ([f"replaced existing {' and '.join(old)}"] if old else [])
    )


__all__ = [
    "Content",
    "FORMULA_STARTS",
    "check_output_file",
    "check_output_folder",
    "check_writable_folder",
    "create_folder",
    "csv_text",
    "spreadsheet_text",
    "write_atomically",
    "write_error",
    "write_into",
    "wrote",
]
