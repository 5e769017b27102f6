"""Where a warehouse's tables live, in each reader's spelling: the configured path or URI,
Spark's (s3a://), delta-rs's (s3://) and pyarrow's file system path."""

from __future__ import annotations

import posixpath

import pyarrow.fs as pafs

from divspa import storage


class Location:
    def __init__(self, root: str, settings: storage.StorageSettings | None = None) -> None:
        self.root = storage.resolve(root)
        self.settings = settings or storage.settings()
        self.options = self.settings.delta_options(self.root)
        self.fs, self.fs_root = self.settings.filesystem(self.root)

    def path(self, table: str) -> str:
        """The table's location as configured (a path, or a URI such as s3a://...)."""
        return storage.join(self.root, table)

    def rs_uri(self, table: str) -> str:
        return storage.object_uri(self.path(table))

    def spark_uri(self, table: str) -> str:
        return storage.spark_uri(self.path(table))

    def fs_path(self, table: str, *parts: str) -> str:
        return posixpath.join(self.fs_root, table, *parts)

    def delete_dir(self, path: str) -> None:
        if self.fs.get_file_info(path).type == pafs.FileType.Directory:
            self.fs.delete_dir(path)
