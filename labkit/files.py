"""Writing files so that nothing is half-written and secrets are 0600 from the first byte."""
from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: str | os.PathLike, data: bytes | str, mode: int = 0o644) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename.

    The file has ``mode`` from the moment it exists (0600 for secrets), and readers see either
    the old content or the new, never a part.
    """
    path = Path(path)
    if isinstance(data, str):
        data = data.encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # the umask may have removed bits we asked for
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_secret(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write a secret (private key, password map): mode 0600, atomically."""
    return write_atomic(path, data, 0o600)
