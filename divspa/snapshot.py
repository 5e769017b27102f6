"""One Delta snapshot as a pyarrow dataset: the files its log lists, partition values from paths.

Why not `DeltaTable.to_pyarrow_dataset()`: delta-rs turns each file's log statistics into a
pyarrow guarantee, and a column without min/max in the log (delta-spark writes none for
booleans) gets the guarantee `x >= null and x <= null`, under which pyarrow drops every row of a
filter on that column: `is_val == False` counted 0 of 10 rows of a delta-spark table. Parquet
row-group statistics still prune here; only the log's are not trusted. A second reason: delta-rs
cannot be used after fork() (DataLoader workers), a list of files can.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
from deltalake import DeltaTable

from divspa import storage

# Reader features whose rows a plain Parquet scan would get wrong.
UNSUPPORTED_FEATURES = frozenset({"deletionVectors", "columnMapping"})


@dataclass
class Snapshot:
    """What a reader needs of one table version; picklable (no delta-rs object inside)."""

    uri: str
    version: int
    files: list[str]  # paths inside `filesystem`
    schema: pa.Schema
    partition_columns: list[str]
    filesystem: pafs.FileSystem
    root: str  # the table's path inside `filesystem`

    @classmethod
    def load(cls, table_uri: str, version: int | None = None,
             storage_options: dict[str, str] | None = None) -> Snapshot:
        uri = storage.object_uri(storage.resolve(table_uri))
        if storage_options is None:
            storage_options = storage.settings().delta_options(uri)
        table = DeltaTable(uri, version=version, storage_options=storage_options or None)
        features = set(table.protocol().reader_features or [])
        if features & UNSUPPORTED_FEATURES or table.protocol().min_reader_version > 3:
            raise ValueError(f"{table_uri}: reader features {sorted(features)} are not supported by divspa's "
                             "Arrow reader (its rows would be wrong); read the table with Spark")
        # The same options in the environment's spelling give pyarrow its file system.
        settings = storage.StorageSettings(env_override={**os.environ, **(storage_options or {})})
        filesystem, root = settings.filesystem(uri)
        return cls(uri=uri, version=table.version(), files=sorted(storage.fs_path(f) for f in table.file_uris()),
                   schema=pa.schema(table.schema().to_arrow()),
                   partition_columns=list(table.metadata().partition_columns), filesystem=filesystem, root=root)

    def dataset(self) -> pads.Dataset:
        parts = pads.HivePartitioning(pa.schema([self.schema.field(c) for c in self.partition_columns]))
        return pads.dataset(self.files, schema=self.schema, format="parquet", partitioning=parts,
                            partition_base_dir=self.root, filesystem=self.filesystem)
