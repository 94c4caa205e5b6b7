"""IOS images: listing, path resolution confined to the images folder, MD5 cache, upload."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from stat import S_ISREG

from ..errors import Conflict, Forbidden

ELF_MAGIC = b"\x7fELF\x01\x02\x01"


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


class Images:
    """Images live in ``<images_path>/IOS``; a local server may also use absolute paths."""

    def __init__(self, images_dir: Path, *, local: bool) -> None:
        self.dir = images_dir
        self.local = local
        self._md5: dict[tuple[str, int, int], str] = {}
        self._shown: dict[str, str] = {}  # image path -> how the JSON shows it

    def resolve(self, image: str) -> str:
        """Absolute path for a client value, or ``""``; refuses escapes from the folder."""
        if not image:
            return ""
        root = self.dir.resolve()
        if os.path.isabs(image):
            candidate = Path(os.path.normpath(image))
            if not self.local and not _inside(candidate.resolve(), root):
                raise Conflict(
                    f"{image} is not allowed on this remote server. Please use only "
                    f"a filename in {self.dir}."
                )
            return str(candidate)
        candidate = Path(os.path.normpath(root / image))
        if not _inside(candidate, root) or not _inside(candidate.resolve(), root):
            legacy = Path(os.path.normpath(root.parent / image))
            if _inside(legacy.resolve(), root.parent) and legacy.is_file():
                return str(legacy)
            raise Forbidden(f"Image path {image} is outside the images folder {self.dir}")
        if not candidate.exists():
            legacy = Path(os.path.normpath(root.parent / image))
            if _inside(legacy.resolve(), root.parent) and legacy.is_file():
                return str(legacy)
        return str(candidate)

    def relative(self, path: str) -> str:
        """How the JSON shows an image: relative to the images folder when inside it."""
        if not path:
            return ""
        shown = self._shown.get(path)
        if shown is None:  # resolving the folder costs a few syscalls: once per image
            root = self.dir.resolve()
            candidate = Path(path)
            shown = str(candidate.relative_to(root)) if _inside(candidate, root) else path
            self._shown[path] = shown
        return shown

    def md5_cached(self, path: str) -> str | None:
        """The digest if already known for this (path, mtime, size); never reads the file."""
        try:
            stat = os.stat(path)
        except OSError:
            return None
        return self._md5.get((path, stat.st_mtime_ns, stat.st_size))

    async def md5(self, path: str) -> str | None:
        """MD5 of the image (thread; cached by mtime and size), None when unreadable."""
        if not path:
            return None
        cached = self.md5_cached(path)
        return cached if cached is not None else await asyncio.to_thread(self._compute_md5, path)

    def _compute_md5(self, path: str) -> str | None:
        try:
            stat = os.stat(path)
            if not S_ISREG(stat.st_mode):  # a FIFO or device would block the read forever
                return None
            digest = hashlib.md5()
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        except OSError:
            return None
        value = digest.hexdigest()
        self._md5[(path, stat.st_mtime_ns, stat.st_size)] = value
        return value

    @staticmethod
    def check_bootable(path: str) -> None:
        """Refuse (409) a missing, unreadable or non-ELF-32-big-endian image."""
        if not path or not os.path.isfile(path):
            if path and os.path.islink(path):
                raise Conflict(
                    f'IOS image "{path}" linked to "{os.path.realpath(path)}" is not accessible'
                )
            raise Conflict(f'IOS image "{path}" is not accessible')
        try:
            with open(path, "rb") as handle:
                header = handle.read(7)
        except OSError as err:
            raise Conflict(f'Cannot read ELF header for IOS image "{path}": {err}') from None
        if header != ELF_MAGIC:
            raise Conflict(f'"{path}" is not a valid IOS image')

    def list(self) -> list[dict[str, str]]:
        """ELF images directly in the folder, sorted; blocking (call in a thread)."""
        try:
            entries = sorted(os.listdir(self.dir))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as err:
            raise Conflict(f"Can not list {self.dir}: {err}") from None
        images = []
        for entry in entries:
            if entry.startswith(".") or entry.endswith((".md5sum", ".tmp")):
                continue
            path = self.dir / entry
            try:
                if not path.is_file():  # directories, broken links, FIFOs (would block)...
                    continue
                with open(path, "rb") as handle:
                    if handle.read(7) == ELF_MAGIC:
                        images.append({"filename": entry, "path": entry})
            except OSError:
                continue
        return images

    async def upload(self, name: str, chunks: AsyncIterator[bytes]) -> Path:
        """Stream to a temporary file beside the target, fsync, rename, write ``.md5sum``."""
        if not name or "/" in name or "\\" in name or name in (".", "..") or name[0] == ".":
            raise Forbidden(f"Could not write image: {name} is not a plain file name")
        root = self.dir
        await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
        target = root / name
        if not _inside(target.resolve(), root.resolve()):
            raise Forbidden(f"Could not write image: {name}, {target} is forbidden")
        temporary = root / f".{name}.{uuid.uuid4().hex}.tmp"  # one per upload, even concurrent
        digest = hashlib.md5()
        handle = await asyncio.to_thread(open, temporary, "wb")
        try:
            async for chunk in chunks:
                digest.update(chunk)
                await asyncio.to_thread(handle.write, chunk)
            await asyncio.to_thread(handle.flush)
            await asyncio.to_thread(os.fsync, handle.fileno())
            handle.close()
            os.chmod(temporary, 0o700)
            os.replace(temporary, target)
            (root / f"{name}.md5sum").write_text(digest.hexdigest())
        except OSError as err:
            raise Conflict(f"Could not write image: {name} because {err}") from None
        finally:
            handle.close()
            if temporary.exists():
                temporary.unlink()
        return target
