"""The one way an output file (figure, page, JSON, CSV) is created: whole or not at all, never through a link, never
over a study file.

The bytes go to a temporary file in the output's own folder, made with an exclusive, unpredictable name (mkstemp:
O_EXCL, so a link planted there in advance is never followed), and are renamed over the final name only when they
are complete: a kill or a full disk leaves the earlier version of the output, or nothing. The final name is refused
when it is a symbolic link (a rename would replace the link, not the file the user meant), not a regular file, one
of the inputs the command reads (`protect`), or an HDF5 file (a study, which an output must never replace).
"""
import contextlib
import os
import tempfile

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"  # the superblock's first bytes, at offset 0 in every file h5py writes


class OutputError(ValueError):
    """An output cannot be written where asked; one line naming the file and what to do."""


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _is_hdf5(path):
    try:
        with open(path, "rb") as f:
            return f.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE
    except OSError:
        return False


def check_target(path, protect=()):
    """Refuse a final name an output must not replace (module docstring); returns it as str."""
    path = os.fspath(path)
    if os.path.islink(path):
        raise OutputError(f"{path} is a symbolic link; an output is never written through a link: remove it or "
                          "choose another name")
    if not os.path.lexists(path):
        return path
    if not os.path.isfile(path):
        raise OutputError(f"{path} exists and is not a regular file; remove it or choose another name")
    for kept in protect:
        try:
            same = os.path.samefile(path, kept)
        except OSError:
            same = False
        if same:
            raise OutputError(f"{path} is the input file {kept} itself: an output never replaces it; rename the "
                              "input or choose another output name")
    if _is_hdf5(path):
        raise OutputError(f"{path} is an HDF5 file (a study?): an output never replaces it; move it or choose "
                          "another output name")
    return path


@contextlib.contextmanager
def output_file(path, mode="w", protect=(), **open_args):
    """`with output_file(path) as f: f.write(...)`: the file appears at `path` whole when the block ends, or not at
    all if it raises. mode "w" (text; open_args such as newline, encoding) or "wb"."""
    if mode not in ("w", "wb"):
        raise ValueError(f"output_file writes new files: mode 'w' or 'wb', not {mode!r}")
    path = check_target(path, protect)
    folder, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{name[:80]}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" and "encoding" not in open_args else {}),
                       **open_args) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide the output from the group
        check_target(path, protect)  # again just before the rename: a link planted meanwhile is refused too
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def write_text(path, text, protect=()):
    with output_file(path, "w", protect) as f:
        f.write(text)
    return path
