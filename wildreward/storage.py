"""Where outputs live: a local folder, or any URI pyarrow opens (``s3://``, ``gs://``, ``abfs://``, ``hdfs://``).

On a multi-node cluster a local ``output_dir`` is only right when it is a shared mount: Ray Data writes each block
from whichever node ran it. :class:`Location` gives the pipeline one Path-like handle for both, so stage code reads
the same either way. Credentials and endpoints come from the environment (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``,
instance roles...), never from the URI, so a logged URI carries no secret.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pyarrow.fs as pafs

if TYPE_CHECKING:
    import pyarrow as pa


class Location:
    """A file or folder on ``fs`` at ``path``; ``str(location)`` is the URI that Ray Data and users see."""

    def __init__(self, fs: pafs.FileSystem, path: str, scheme: str | None):
        self.fs, self.path, self.scheme = fs, path.rstrip("/") or "/", scheme

    @classmethod
    def parse(cls, target: "str | Path | Location") -> "Location":
        """A local path (made absolute) or a URI with a scheme pyarrow knows."""
        if isinstance(target, Location):
            return target
        text = str(target)
        if "://" not in text or text.startswith("file://"):
            local = Path(text.removeprefix("file://")).expanduser().resolve()
            return cls(pafs.LocalFileSystem(), str(local), None)
        scheme, rest = text.split("://", 1)
        scheme = scheme.lower()
        if "@" in rest.split("/", 1)[0]:  # s3://KEY:SECRET@bucket/...: pyarrow takes it; never echo it
            raise ValueError(f"{scheme}://<credentials>@...: credentials in the URI are not accepted (they would end "
                             "up in logs and saved configs); set them in the environment, e.g. AWS_ACCESS_KEY_ID and "
                             "AWS_SECRET_ACCESS_KEY")
        if "?" in text:
            raise ValueError(f"{text.split('?')[0]}?...: options in the URI are not accepted (they can hold secrets "
                             "that would end up in logs and saved configs); set them in the environment, e.g. "
                             "AWS_ENDPOINT_URL, AWS_DEFAULT_REGION")
        try:
            fs, path = pafs.FileSystem.from_uri(text)
        except (ValueError, OSError) as err:  # pyarrow's ArrowInvalid is a ValueError
            raise ValueError(f"cannot open {text}: {err}") from err
        return cls(fs, path, scheme)

    # -- naming
    @property
    def is_local(self) -> bool:
        return self.scheme is None

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def parent(self) -> "Location":
        return Location(self.fs, posixpath.dirname(self.path), self.scheme)

    def __truediv__(self, name: str) -> "Location":
        return Location(self.fs, posixpath.join(self.path, str(name)), self.scheme)

    def __str__(self) -> str:
        return self.path if self.is_local else f"{self.scheme}://{self.path}"

    def __repr__(self) -> str:
        return f"Location({str(self)!r})"

    def __fspath__(self) -> str:
        # Only a local location is a file system path; passing a remote one to open() must fail loudly.
        if not self.is_local:
            raise TypeError(f"{self} is not on a local disk")
        return self.path

    def local(self) -> Path:
        return Path(self.__fspath__())

    # -- queries
    def _info(self) -> pafs.FileInfo:
        return self.fs.get_file_info(self.path)

    def exists(self) -> bool:
        return self._info().type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self._info().type == pafs.FileType.Directory

    def glob(self, pattern: str) -> list["Location"]:
        """Direct children whose name matches ``pattern`` (``*.parquet``), sorted by name."""
        import fnmatch

        if not self.is_dir():
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        return sorted((Location(self.fs, i.path, self.scheme) for i in infos if fnmatch.fnmatch(i.base_name, pattern)),
                      key=lambda loc: loc.path)

    # -- reading and writing
    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as fh:
            return fh.read()

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> None:
        self.parent.mkdir()
        with self.fs.open_output_stream(self.path) as fh:
            fh.write(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(text.encode(encoding))

    @contextmanager
    def open_write(self) -> Iterator[io.BytesIO]:
        """A buffer written to this location when the block ends (matplotlib's savefig, pyarrow writers)."""
        buf = io.BytesIO()
        yield buf
        self.write_bytes(buf.getvalue())

    def touch(self) -> None:
        self.write_bytes(b"")

    def mkdir(self) -> None:
        """Create the folder and its parents (object stores have no folders: a no-op there)."""
        if self.is_local:
            self.fs.create_dir(self.path, recursive=True)

    def unlink(self) -> None:
        self.fs.delete_file(self.path)

    def rmtree(self) -> None:
        """Delete the folder and everything in it, if it exists."""
        if self.is_dir():
            self.fs.delete_dir(self.path)

    def upload(self, local_dir: Path) -> None:
        """Replace this folder with a copy of the local folder ``local_dir``."""
        self.rmtree()
        self.mkdir()
        pafs.copy_files(str(Path(local_dir).resolve()), self.path, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self.fs)

    @contextmanager
    def local_folder(self) -> Iterator[Path]:
        """A local folder to write this folder's contents into: this folder itself when it is local, else a temporary
        one that is uploaded here when the block ends without error (for writers that need a disk, such as
        ``save_pretrained``)."""
        if self.is_local:
            yield self.local()
            return
        with tempfile.TemporaryDirectory(prefix="wildreward_upload_") as tmp:
            yield Path(tmp)
            self.upload(Path(tmp))

    def copy_to(self, dst: "Location") -> None:
        """Copy this folder's contents into ``dst`` (on the same or another filesystem)."""
        dst.mkdir()
        pafs.copy_files(self.path, dst.path, source_filesystem=self.fs, destination_filesystem=dst.fs)

    def download(self, local_dir: Path) -> Path:
        """Copy this folder into ``local_dir``; returns ``local_dir``."""
        local_dir = Path(local_dir)
        local_dir.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(self.path, str(local_dir.resolve()), source_filesystem=self.fs,
                        destination_filesystem=pafs.LocalFileSystem())
        return local_dir


def read_table(folders: "list[str | Path | Location] | str | Path | Location",
               columns: list[str] | None = None) -> "pa.Table":
    """``columns`` (default: all) of every ``*.parquet`` file directly in ``folders`` (or of the file itself, where
    one names a file) as one table, read on this process (stats, resume ids, small lookups); an empty table of
    string ``columns`` when there are no files."""
    import pyarrow as pa
    import pyarrow.dataset as pads

    files = []
    for folder in (Location.parse(f) for f in (folders if isinstance(folders, list) else [folders])):
        kind = folder._info().type
        files += folder.glob("*.parquet") if kind == pafs.FileType.Directory else \
            [folder] if kind == pafs.FileType.File else []
    if not files:
        return pa.table({c: pa.array([], pa.string()) for c in columns or []})
    return pads.dataset([f.path for f in files], format="parquet", filesystem=files[0].fs).to_table(columns=columns)


def fetch_dir(target: "str | Path | Location", cache_root: Path | None = None) -> Path:
    """A local folder with the content of ``target``: a local path as it is, a URI copied once into
    ``cache_root`` (``$WILDREWARD_CACHE`` or ``~/.cache/wildreward``), keyed by the URI and its files' sizes and
    times, so a changed folder is fetched again. Each node fetches its own copy (Serve replicas, eval actors)."""
    loc = Location.parse(target)
    if loc.is_local:
        return loc.local()
    infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=True, allow_not_found=True))
    if not infos:
        raise FileNotFoundError(f"{loc}: no such folder, or it is empty")
    listing = sorted((i.path, i.size, str(i.mtime)) for i in infos if i.type == pafs.FileType.File)
    key = hashlib.sha256(json.dumps([str(loc), listing]).encode()).hexdigest()[:16]
    root = cache_root or Path(os.environ.get("WILDREWARD_CACHE", Path.home() / ".cache" / "wildreward"))
    dest = root / f"{loc.name}-{key}"
    if not (dest / ".complete").exists():
        partial = dest.with_name(dest.name + f".partial{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        loc.download(partial)
        (partial / ".complete").touch()
        try:
            partial.rename(dest)  # atomic: a reader sees the whole folder or none
        except OSError:  # another process on this node finished first: use its copy, never delete it
            shutil.rmtree(partial, ignore_errors=True)
            if not (dest / ".complete").exists():
                raise
    return dest


def save_png(fig, target: "str | Path | Location", dpi: int) -> None:
    """A matplotlib figure as a PNG file, locally or on an object store."""
    with Location.parse(target).open_write() as fh:
        fig.savefig(fh, dpi=dpi, format="png")
