"""Read every ironlake table with engines other than the writer and report
schema and row counts as JSON: the Python `deltalake` package (delta-rs via
pyarrow), polars, and DuckDB's delta extension when it can be loaded offline.

usage: read_tables.py LAKEHOUSE_DIR
"""
import json
import os
import sys

import duckdb
import polars as pl
from deltalake import DeltaTable

TABLES = [
    "bronze/raw_events",
    "silver/readings",
    "silver/asset_events",
    "silver/quarantine",
    "silver/assets",
    "gold/asset_state",
    "gold/predictions",
]


def main(root):
    out = {}
    for t in TABLES:
        path = os.path.join(root, t)
        dt = DeltaTable(path)
        arrow = dt.to_pyarrow_table()
        frame = pl.read_delta(path)
        # DuckDB reads the Parquet files that the Delta log lists as live.
        files = [u[len("file://"):] if u.startswith("file://") else u for u in dt.file_uris()]
        if files:
            con = duckdb.connect()
            duck = con.execute(
                "SELECT count(*) FROM read_parquet(?, hive_partitioning = true)", [files]
            ).fetchone()[0]
        else:
            duck = 0
        out[t.replace("/", ".")] = {
            "version": dt.version(),
            "columns": [f.name for f in arrow.schema],
            "partition_columns": dt.metadata().partition_columns,
            "deltalake_rows": arrow.num_rows,
            "polars_rows": frame.height,
            "polars_columns": frame.columns,
            "duckdb_rows": duck,
        }
    # A typed read: silver values are float64, timestamps UTC.
    s = pl.read_delta(os.path.join(root, "silver/readings"))
    out["silver_dtypes"] = {c: str(d) for c, d in zip(s.columns, s.dtypes)}
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
