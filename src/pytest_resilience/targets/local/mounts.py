"""The machine's mount table as this process sees it (``/proc/self/mounts``)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["mount_points", "mount_table", "unescape"]


def mount_points() -> list[Path]:
    """Every mount point on this machine (any filesystem), as this process sees them."""
    return [Path(fields[1]) for fields in mount_table() if len(fields) > 1]


def mount_table() -> list[list[str]]:
    try:
        with open("/proc/self/mounts") as mounts:
            return [[unescape(f) for f in line.split()] for line in mounts]
    except OSError:
        return []


def unescape(field_text: str) -> str:
    """/proc mount tables write space, tab, newline and backslash as octal escapes."""
    for code in ("\\040", "\\011", "\\012", "\\134"):
        field_text = field_text.replace(code, chr(int(code[1:], 8)))
    return field_text
