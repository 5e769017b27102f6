"""Where divspa's files live: local paths or object-store URIs, one set of credentials for all.

Every location a run touches (warehouse, checkpoints, run logs, report, sources) is a string:
a local path or a URI (`s3a://`, `s3://`, `gs://`, `abfss://`, `hdfs://`, `file://`). Strings,
never `pathlib`: `Path("s3a://b/x")` collapses `//` and turns the bucket into a local folder.

Three engines read and write those locations, and each spells the same store differently:
Spark's Hadoop connectors want `s3a://` and `spark.hadoop.fs.s3a.*`; delta-rs wants `s3://` and
`AWS_*` storage options; pyarrow wants a `FileSystem` object. `StorageSettings` derives the
delta-rs options and the pyarrow file system from the Spark settings (and the standard
environment variables), so the endpoint and the credentials are configured once, in
`spark.conf`, as a Spark user expects.
"""

from __future__ import annotations

import os
import posixpath
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from divspa.errors import StorageError

# Hadoop's S3 connector is s3a; delta-rs and pyarrow know S3 as s3.
_S3_SCHEMES = {"s3", "s3a", "s3n"}
_SECRET = re.compile(r"secret|password|token|credential|access\.key|account\.key|sas|signature", re.I)
REDACTED = "*****"


def is_uri(location: str) -> bool:
    return "://" in location


def scheme(location: str) -> str:
    return urlsplit(location).scheme.lower() if is_uri(location) else "file"


def is_local(location: str) -> bool:
    return scheme(location) == "file"


def resolve(location: str) -> str:
    """Local paths absolute (file:// URIs become plain paths); other URIs unchanged, no trailing '/'."""
    if scheme(location) == "file":
        path = urlsplit(location).path if is_uri(location) else location
        return os.path.abspath(os.path.expanduser(path))
    return location.rstrip("/")


def join(base: str, *parts: str) -> str:
    """`base/part/...` for paths and URIs alike (the `//` after the scheme survives)."""
    if not is_uri(base):
        return os.path.join(base, *parts)
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def parent(location: str) -> str:
    return posixpath.dirname(location.rstrip("/")) if is_uri(location) else os.path.dirname(location)


def basename(location: str) -> str:
    return posixpath.basename(location.rstrip("/"))


def fs_path(location: str) -> str:
    """The location inside its pyarrow file system: bucket/key for object stores, a path locally."""
    if is_local(location):
        return resolve(location)
    parts = urlsplit(location)
    return (parts.netloc + parts.path).rstrip("/")


def spark_uri(location: str) -> str:
    """The location as Spark's Hadoop file systems name it (s3:// -> s3a://)."""
    if scheme(location) in ("s3", "s3n"):
        return "s3a://" + location.split("://", 1)[1]
    return location


def object_uri(location: str) -> str:
    """The location as delta-rs and pyarrow name it (s3a:// -> s3://)."""
    if scheme(location) in ("s3a", "s3n"):
        return "s3://" + location.split("://", 1)[1]
    return location


def redact(conf: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a settings map with secret values replaced (for logs and saved configs)."""
    return {k: (REDACTED if _SECRET.search(str(k)) and v not in (None, "") else v) for k, v in conf.items()}


def _truthy(value: str | None) -> bool | None:
    return None if value is None else str(value).strip().lower() in ("true", "1", "yes")


@dataclass(frozen=True)
class StorageSettings:
    """Object-store settings taken from Spark's configuration and the environment."""

    spark_conf: Mapping[str, str] = field(default_factory=dict)
    extra_options: Mapping[str, str] = field(default_factory=dict)  # passed to delta-rs verbatim
    env_override: Mapping[str, str] | None = None  # None: this process's environment (executors: theirs)

    @property
    def env(self) -> Mapping[str, str]:
        return os.environ if self.env_override is None else self.env_override

    def _s3a(self, key: str) -> str | None:
        value = self.spark_conf.get(f"spark.hadoop.fs.s3a.{key}")
        return value if value not in (None, "") else None

    def s3(self) -> dict[str, str | None]:
        env = self.env
        endpoint = self._s3a("endpoint") or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        ssl = _truthy(self._s3a("connection.ssl.enabled"))
        if endpoint and "://" not in endpoint:
            endpoint = ("http://" if ssl is False else "https://") + endpoint
        return {
            "endpoint": endpoint,
            "access_key": self._s3a("access.key") or env.get("AWS_ACCESS_KEY_ID"),
            "secret_key": self._s3a("secret.key") or env.get("AWS_SECRET_ACCESS_KEY"),
            "session_token": self._s3a("session.token") or env.get("AWS_SESSION_TOKEN"),
            "region": self._s3a("endpoint.region") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
            "path_style": "true" if _truthy(self._s3a("path.style.access")) else None,
        }

    def spark_defaults(self) -> dict[str, str]:
        """s3a settings Spark lacks but the environment gives (Hadoop reads no AWS_ENDPOINT_URL)."""
        endpoint = self.env.get("AWS_ENDPOINT_URL_S3") or self.env.get("AWS_ENDPOINT_URL")
        region = self.env.get("AWS_REGION") or self.env.get("AWS_DEFAULT_REGION")
        out = {}
        if endpoint and not self._s3a("endpoint"):
            out["spark.hadoop.fs.s3a.endpoint"] = endpoint
        if region and not self._s3a("endpoint.region"):
            out["spark.hadoop.fs.s3a.endpoint.region"] = region
        return out

    def delta_options(self, location: str) -> dict[str, str]:
        """delta-rs storage options for `location` (empty for local paths)."""
        opts: dict[str, str] = {}
        if scheme(location) in _S3_SCHEMES:
            s3 = self.s3()
            names = {"endpoint": "AWS_ENDPOINT_URL", "access_key": "AWS_ACCESS_KEY_ID",
                     "secret_key": "AWS_SECRET_ACCESS_KEY", "session_token": "AWS_SESSION_TOKEN",
                     "region": "AWS_REGION"}
            opts = {names[k]: v for k, v in s3.items() if k in names and v}
            if s3["endpoint"] and s3["endpoint"].startswith("http://"):
                opts["AWS_ALLOW_HTTP"] = "true"
            if s3["path_style"]:
                opts["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] = "false"
            opts.setdefault("AWS_REGION", "us-east-1")
        elif scheme(location) in ("abfs", "abfss", "az"):
            account = urlsplit(location).hostname or ""
            key = self.spark_conf.get(f"spark.hadoop.fs.azure.account.key.{account}")
            if key:
                opts["AZURE_STORAGE_ACCOUNT_KEY"] = key
        if not is_local(location):
            opts.update(self.extra_options)
        return opts

    def filesystem(self, location: str) -> tuple[pafs.FileSystem, str]:
        """A pyarrow file system and the path inside it for `location`."""
        if is_local(location):
            return pafs.LocalFileSystem(), resolve(location)
        parts = urlsplit(location)
        if parts.scheme.lower() in _S3_SCHEMES:
            s3 = self.s3()
            endpoint = s3["endpoint"]
            kwargs: dict[str, Any] = {"region": s3["region"] or "us-east-1"}
            if endpoint:
                ep = urlsplit(endpoint)
                kwargs["endpoint_override"] = ep.netloc or ep.path
                kwargs["scheme"] = ep.scheme or "https"
            if s3["access_key"] and s3["secret_key"]:
                kwargs.update(access_key=s3["access_key"], secret_key=s3["secret_key"],
                              session_token=s3["session_token"])
            return pafs.S3FileSystem(**kwargs), fs_path(location)
        try:
            fs, path = pafs.FileSystem.from_uri(location)
        except Exception as exc:  # pyarrow names no scheme it lacks in a stable way
            raise StorageError(f"{location}: no pyarrow file system for scheme {parts.scheme!r}: {exc}") from exc
        return fs, path

    # --- small files (checkpoints, configs, logs, reports) -----------------------------------

    def write_bytes(self, location: str, data: bytes) -> None:
        """Write a whole file so that readers see the old file or the new one, never a part.

        Locally: a temporary name, then rename. Object stores: one PUT, which is atomic.
        """
        if is_local(location):
            path = resolve(location)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
            return
        fs, path = self.filesystem(location)
        try:
            with fs.open_output_stream(path) as out:
                out.write(data)
        except OSError as exc:
            raise StorageError(f"cannot write {location}: {exc}") from exc

    def write_text(self, location: str, text: str) -> None:
        self.write_bytes(location, text.encode("utf-8"))

    def read_bytes(self, location: str) -> bytes:
        fs, path = self.filesystem(location)
        try:
            with fs.open_input_stream(path) as fh:
                return fh.read()
        except FileNotFoundError:
            raise
        except OSError as exc:
            if "not found" in str(exc).lower() or "no such" in str(exc).lower():
                raise FileNotFoundError(f"{location} does not exist") from exc
            raise StorageError(f"cannot read {location}: {exc}") from exc

    def read_text(self, location: str) -> str:
        return self.read_bytes(location).decode("utf-8")

    def is_file(self, location: str) -> bool:
        fs, path = self.filesystem(location)
        try:
            return fs.get_file_info(path).type == pafs.FileType.File
        except OSError as exc:
            raise StorageError(f"cannot reach {location}: {exc}") from exc

    def exists(self, location: str) -> bool:
        fs, path = self.filesystem(location)
        try:
            return fs.get_file_info(path).type != pafs.FileType.NotFound
        except OSError as exc:
            raise StorageError(f"cannot reach {location}: {exc}") from exc

    def delete_dir(self, location: str) -> None:
        fs, path = self.filesystem(location)
        if fs.get_file_info(path).type == pafs.FileType.Directory:
            fs.delete_dir(path)

    def check_writable(self, location: str) -> None:
        """Fail early, with one line naming the location, when it cannot be written."""
        probe = join(location, f"_divspa_probe_{uuid.uuid4().hex[:8]}")
        try:
            self.write_bytes(probe, b"")
            fs, path = self.filesystem(probe)
            fs.delete_file(path)
        except (OSError, StorageError) as exc:
            root = exc.__cause__ if isinstance(exc, StorageError) and exc.__cause__ else exc
            cause = str(root).splitlines()[0] if str(root) else type(root).__name__
            raise StorageError(f"cannot write under {location}: {cause}") from exc


_default = StorageSettings()


def configure(spark_conf: Mapping[str, str], extra_options: Mapping[str, str] | None = None) -> StorageSettings:
    """Set the process's storage settings (from the job's Spark settings); returns them."""
    global _default
    _default = StorageSettings(dict(spark_conf), dict(extra_options or {}))
    return _default


def settings() -> StorageSettings:
    return _default
