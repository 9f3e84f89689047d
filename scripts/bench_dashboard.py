#!/usr/bin/env python3
"""Dashboard SQL (W8-W10): `ironlake sql` on the Delta tables against DuckDB and polars SQL
on the same Parquet files.

    python3 scripts/bench_dashboard.py gen --out DIR [--machines 1000] [--seconds 20000]
                                           [--layout arrival|asset] [--history-days 365]
                                           [--history-files-per-day 1]
    python3 scripts/bench_dashboard.py run --data DIR [--repeats 5] [--workloads W8,W9,W10]
                                           [--engines ironlake,duckdb,polars] [--out results.json]

`gen` writes a lakehouse in ironlake's layout (Delta tables under DIR/<layer>/<table>,
ironlake's schemas and partitions) with the Python `deltalake` writer:

* `silver.readings`: MACHINES x 5 signals at 1 Hz for SECONDS seconds (1,000 x 5 x 20,000 =
  100M rows, 5.6 hours ending 2024-03-31 02:00 UTC, so they cross a day), appended in
  10-minute commits as a plant's ingest would (one file per plant and day each), rows in
  arrival order (`--layout arrival`: ts, machine, signal) or sorted by machine and signal
  within each commit (`--layout asset`). Before them, one small file per plant and day for
  the HISTORY_DAYS before (one commit): the partitions a year of history leaves for the
  planner to prune. With `--history-files-per-day 144`, 144 files per plant and day instead
  (105,120 files for a year, the log a year of 10-minute files leaves), added to the log by
  hand with the statistics a Delta writer records. A log checkpoint at the end, as ironlake's housekeeping writes.
* `gold.oee_shift`: March 2024, three 8-hour shifts a day, every machine (93,000 rows).
* `silver.asset_events`: March 2024, alarms raised and cleared (~100 a machine a day) and
  state changes.
* `silver.assets`: the asset register (machine, name, plant, area, line, twin type).

`run` times each workload's queries in every engine, interleaved, REPEATS times (run 1
opens the tables cold; the median of the later runs is what a dashboard refresh sees), and
checks that every engine's answer has the same checksum. The same Parquet files are read
by all: ironlake through the Delta log, DuckDB and polars by a glob over the table folder
with hive partitions (`gen` only appends, so the folder holds exactly the table's files).

* W8: the last hour of `silver.readings` (18M of the 100M rows): 1-minute averages per
  machine and signal, and the last value per machine and signal (two queries, one panel).
* W9: OEE by line and shift over March, from `gold.oee_shift`.
* W10: the top 10 alarm reasons of the last week by area, alarms joined with the assets.
"""
import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

SIGNALS = ["temperature_c", "vibration_mm_s", "current_a", "power_kw", "spindle_rpm"]
END = dt.datetime(2024, 3, 31, 2, 0, tzinfo=dt.timezone.utc)
MONTH = (dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc), dt.datetime(2024, 4, 1, tzinfo=dt.timezone.utc))
CHUNK_S = 600
REASONS = [
    "high_vibration", "over_temperature", "overcurrent", "spindle_stall", "coolant_low",
    "door_open", "tool_wear", "air_pressure_low", "lubrication", "emergency_stop",
    "axis_following_error", "power_dip",
]
AREAS = ["machining", "assembly", "paint", "packaging", "stamping"]
TWIN_TYPES = ["cnc_mill", "press", "robot_cell", "conveyor"]
US = 1_000_000


def ts_type():
    return pa.timestamp("us", tz="UTC")


def readings_schema():
    return pa.schema([
        pa.field("ts", ts_type(), False),
        pa.field("plant", pa.string(), False),
        pa.field("line", pa.string(), False),
        pa.field("asset_id", pa.string(), False),
        pa.field("signal", pa.string(), False),
        pa.field("value", pa.float64(), False),
        pa.field("quality", pa.string(), False),
        pa.field("ingest_ts", ts_type(), False),
        pa.field("date", pa.date32(), False),
    ])


def machine_meta(machines):
    ids = [f"mc-{m:04d}" for m in range(machines)]
    plants = ["plant-a" if m < machines // 2 else "plant-b" for m in range(machines)]
    lines = [f"line-{m // 10 + 1:03d}" for m in range(machines)]
    return ids, plants, lines


def take_str(values, idx):
    """A string column of `values[idx]` (built through a dictionary: fast for 3M rows)."""
    d = pa.DictionaryArray.from_arrays(pa.array(idx, pa.int32()), pa.array(values, pa.string()))
    return d.cast(pa.string())


def readings_chunk(t0_s, seconds, machines, rng, base, phase_ms, layout):
    """Rows of `seconds` seconds from t0_s, arrival order: ts, machine, signal."""
    ids, plants, lines = machine_meta(machines)
    k = len(SIGNALS)
    sec = np.repeat(np.arange(t0_s, t0_s + seconds, dtype=np.int64), machines * k)
    m = np.tile(np.repeat(np.arange(machines, dtype=np.int32), k), seconds)
    s = np.tile(np.arange(k, dtype=np.int32), seconds * machines)
    ts = sec * US + phase_ms[m].astype(np.int64) * 1000
    wave = np.sin((sec % 3600) / 3600.0 * 2 * np.pi + m * 0.37)
    value = base[m, s] * (1.0 + 0.05 * wave) + rng.normal(0.0, 0.01, sec.size) * base[m, s]
    value = np.round(value, 3)
    if layout == "asset":
        order = np.lexsort((ts, s, m))
        ts, m, s, value = ts[order], m[order], s[order], value[order]
    plant_code = (m >= machines // 2).astype(np.int32)
    day = (ts // (86_400 * US)).astype(np.int32)
    return pa.table({
        "ts": pa.array(ts, ts_type()),
        "plant": take_str(["plant-a", "plant-b"], plant_code),
        "line": take_str(sorted(set(lines)), m // 10),
        "asset_id": take_str(ids, m),
        "signal": take_str(SIGNALS, s),
        "value": pa.array(value, pa.float64()),
        "quality": take_str(["good"], np.zeros(ts.size, np.int32)),
        "ingest_ts": pa.array(ts + 150_000, ts_type()),
        "date": pa.array(day, pa.date32()),
    }, schema=readings_schema())


def stats_ts(us):
    """A Delta statistics timestamp (ISO 8601, milliseconds, UTC)."""
    t = dt.datetime.fromtimestamp(us // 1000 / 1000, dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{us // 1000 % 1000:03d}Z"


def gen_history_files(path, first_day, days, per_day, machines, rng, base, phase_ms, layout):
    """The file log a year of ingest leaves once compaction has merged it: PER_DAY files per
    plant and day for the DAYS before FIRST_DAY, each holding one second of ten machines
    (the rows are few, the files are what the log and the planner must cope with). The
    table is created by the Python writer with the first file; the others are written with
    pyarrow and added to the log in one commit, with the statistics Delta writers record."""
    from deltalake import write_deltalake
    parts = ["plant", "date"]
    day0 = first_day - days
    write_deltalake(path, readings_chunk(day0 * 86_400, 1, min(machines, 10), rng, base,
                                         phase_ms, layout), partition_by=parts, mode="append")
    adds = []
    t_start = time.time()
    step = 86_400 // per_day
    data_cols = [c for c in readings_schema().names if c not in parts]
    for d in range(day0, first_day):
        for k in range(per_day):
            if d == day0 and k == 0:
                continue
            tbl = readings_chunk(d * 86_400 + k * step, 1, min(machines, 10), rng, base,
                                 phase_ms, layout)
            date = dt.date(1970, 1, 1) + dt.timedelta(days=d)
            for plant in ("plant-a", "plant-b"):
                part = tbl.filter(pc.equal(tbl["plant"], plant)).select(data_cols)
                rel = f"plant={plant}/date={date.isoformat()}/part-hist-{d}-{k:04d}.snappy.parquet"
                full = os.path.join(path, rel)
                os.makedirs(os.path.dirname(full), exist_ok=True)
                pq.write_table(part, full, compression="snappy")
                mins, maxs = {}, {}
                for c in data_cols:
                    lo, hi = pc.min_max(part[c]).values()
                    if c in ("ts", "ingest_ts"):
                        mins[c], maxs[c] = stats_ts(lo.value), stats_ts(hi.value)
                    else:
                        mins[c], maxs[c] = lo.as_py(), hi.as_py()
                stats = {"numRecords": part.num_rows, "minValues": mins, "maxValues": maxs,
                         "nullCount": {c: 0 for c in data_cols}}
                adds.append({"add": {
                    "path": rel, "partitionValues": {"plant": plant, "date": date.isoformat()},
                    "size": os.path.getsize(full), "modificationTime": int(time.time() * 1000),
                    "dataChange": True, "stats": json.dumps(stats)}})
        print(f"\r  silver.readings history: {len(adds):,} files ({time.time() - t_start:.0f} s)",
              end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    log = os.path.join(path, "_delta_log")
    version = max(int(f.split(".")[0]) for f in os.listdir(log) if f.endswith(".json")) + 1
    with open(os.path.join(log, f"{version:020d}.json"), "w") as f:
        f.write(json.dumps({"commitInfo": {"timestamp": int(time.time() * 1000),
                                           "operation": "WRITE",
                                           "operationParameters": {"mode": "Append"}}}) + "\n")
        for a in adds:
            f.write(json.dumps(a) + "\n")


def gen_readings(out, machines, seconds, layout, history_days, seed, files_per_day=1):
    from deltalake import DeltaTable, write_deltalake
    path = os.path.join(out, "silver", "readings")
    rng = np.random.default_rng(seed)
    k = len(SIGNALS)
    scale = np.array([60.0, 2.5, 25.0, 15.0, 9000.0])
    base = scale[None, :] * rng.uniform(0.6, 1.4, (machines, k))
    phase_ms = rng.integers(0, 1000, machines)
    end_s = int(END.timestamp())
    start_s = end_s - seconds
    parts = ["plant", "date"]
    if history_days and files_per_day > 1:
        gen_history_files(path, start_s // 86_400, history_days, files_per_day, machines, rng,
                          base, phase_ms, layout)
    elif history_days:
        first_day = start_s // 86_400
        hist = []
        for d in range(first_day - history_days, first_day):
            hist.append(readings_chunk(d * 86_400 + 43_200, 60, min(machines, 10), rng,
                                       base, phase_ms, layout))
        # Ten machines, five of each plant.
        write_deltalake(path, pa.concat_tables(hist), partition_by=parts, mode="append")
    t = start_s
    n = 0
    t_start = time.time()
    while t < end_s:
        step = min(CHUNK_S, end_s - t)
        tbl = readings_chunk(t, step, machines, rng, base, phase_ms, layout)
        write_deltalake(path, tbl, partition_by=parts, mode="append")
        n += tbl.num_rows
        t += step
        done = (t - start_s) / seconds
        print(f"\r  silver.readings: {n:,} rows ({done:.0%}, {time.time() - t_start:.0f} s)",
              end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    DeltaTable(path).create_checkpoint()
    return n, start_s, end_s


def gen_oee(out, machines, rng):
    from deltalake import write_deltalake
    ids, _, lines = machine_meta(machines)
    starts = []
    day = MONTH[0]
    while day < MONTH[1]:
        for i, name in enumerate(["early", "late", "night"]):
            starts.append((day + dt.timedelta(hours=6 + 8 * i), name))
        day += dt.timedelta(days=1)
    n = len(starts) * machines
    m = np.tile(np.arange(machines), len(starts))
    sidx = np.repeat(np.arange(len(starts)), machines)
    planned = np.full(n, 8 * 3600 * 1000, np.int64)
    running = (planned * rng.uniform(0.55, 0.95, n)).astype(np.int64)
    down = ((planned - running) * rng.uniform(0.0, 0.6, n)).astype(np.int64)
    setup = ((planned - running - down) * rng.uniform(0.0, 0.5, n)).astype(np.int64)
    idle = planned - running - down - setup
    ideal_cycle = np.where(m % 4 == 0, 30.0, 45.0)
    cycle = ideal_cycle * rng.uniform(1.02, 1.3, n)
    parts = (running / 1000.0 / cycle).astype(np.int64)
    reject = (parts * rng.uniform(0.005, 0.05, n)).astype(np.int64)
    good = parts - reject
    ideal_ms = parts * ideal_cycle * 1000.0
    start_us = np.array([int(s.timestamp()) * US for s, _ in starts], np.int64)[sidx]
    availability = running / planned
    performance = ideal_ms / running
    quality = good / np.maximum(parts, 1)
    computed = np.full(n, int(END.timestamp()) * US, np.int64)
    tbl = pa.table({
        "plant": take_str(["plant-a", "plant-b"], (m >= machines // 2).astype(np.int32)),
        "line": take_str(sorted(set(lines)), m // 10),
        "asset_id": take_str(ids, m),
        "shift_start": pa.array(start_us, ts_type()),
        "shift_end": pa.array(start_us + 8 * 3600 * US, ts_type()),
        "shift": take_str(["early", "late", "night"], (sidx % 3).astype(np.int32)),
        "planned_ms": planned, "running_ms": running, "idle_ms": idle, "down_ms": down,
        "setup_ms": setup, "good": good, "reject": reject, "ideal_ms": ideal_ms,
        "speed_loss_ms": running - ideal_ms, "avg_cycle_s": cycle, "ideal_cycle_s": ideal_cycle,
        "availability": availability, "performance": performance, "quality": quality,
        "oee": availability * performance * quality,
        "computed_at": pa.array(computed, ts_type()),
        "unknown_ms": pa.array(np.zeros(n, np.int64)),
    })
    write_deltalake(os.path.join(out, "gold", "oee_shift"), tbl, partition_by=["plant"],
                    mode="append")
    return n


def gen_events(out, machines, rng):
    from deltalake import write_deltalake
    ids, plants, lines = machine_meta(machines)
    t0 = int(MONTH[0].timestamp()) * 1000
    span = int((MONTH[1] - MONTH[0]).total_seconds()) * 1000
    per_machine = rng.poisson(100 * 31, machines)
    m = np.repeat(np.arange(machines), per_machine)
    raised = t0 + rng.integers(0, span - 3_600_000, m.size)
    weights = np.array([0.5 ** (i / 2.0) for i in range(len(REASONS))])
    weights = weights / weights.sum()
    code = rng.choice(len(REASONS), m.size, p=weights).astype(np.int32)
    cleared = raised + rng.integers(5_000, 1_800_000, m.size)
    n_state = machines * 31 * 20
    ms = rng.integers(0, machines, n_state)
    st = t0 + rng.integers(0, span, n_state)
    scode = rng.integers(0, 4, n_state).astype(np.int32)
    mm = np.concatenate([m, m, ms])
    ts = np.concatenate([raised, cleared, st]) * 1000
    kind = np.concatenate([np.zeros(m.size, np.int32), np.ones(m.size, np.int32),
                           np.full(n_state, 2, np.int32)])
    codes = np.concatenate([code, code, scode + len(REASONS)])
    order = np.argsort(ts, kind="stable")
    ts, mm, kind, codes = ts[order], mm[order], kind[order], codes[order]
    tbl = pa.table({
        "ts": pa.array(ts, ts_type()),
        "plant": take_str(["plant-a", "plant-b"], (mm >= machines // 2).astype(np.int32)),
        "line": take_str(sorted(set(lines)), (mm // 10).astype(np.int32)),
        "asset_id": take_str(ids, mm.astype(np.int32)),
        "kind": take_str(["alarm_raised", "alarm_cleared", "state"], kind),
        "code": take_str(REASONS + ["RUNNING", "IDLE", "DOWN", "SETUP"], codes),
        "value": pa.nulls(ts.size, pa.float64()),
        "message": pa.nulls(ts.size, pa.string()),
        "date": pa.array((ts // (86_400 * US)).astype(np.int32), pa.date32()),
    })
    write_deltalake(os.path.join(out, "silver", "asset_events"), tbl,
                    partition_by=["plant", "date"], mode="append")
    return tbl.num_rows


def gen_assets(out, machines):
    from deltalake import write_deltalake
    ids, plants, lines = machine_meta(machines)
    tbl = pa.table({
        "asset_id": ids,
        "name": [f"Machine {m}" for m in range(machines)],
        "plant": plants,
        "area": [AREAS[(m // 10) % len(AREAS)] for m in range(machines)],
        "line": lines,
        "twin_type": [TWIN_TYPES[m % len(TWIN_TYPES)] for m in range(machines)],
    })
    write_deltalake(os.path.join(out, "silver", "assets"), tbl, mode="append")
    return machines


def cmd_gen(a):
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(a.seed + 1)
    t = time.time()
    n, start_s, end_s = gen_readings(a.out, a.machines, a.seconds, a.layout, a.history_days, a.seed,
                                     a.history_files_per_day)
    meta = {
        "machines": a.machines, "seconds": a.seconds, "layout": a.layout,
        "history_days": a.history_days, "history_files_per_day": a.history_files_per_day,
        "readings": n, "start_s": start_s, "end_s": end_s,
        "oee_rows": gen_oee(a.out, a.machines, rng),
        "event_rows": gen_events(a.out, a.machines, rng),
        "assets": gen_assets(a.out, a.machines),
    }
    with open(os.path.join(a.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(json.dumps(meta), f"{time.time() - t:.0f} s", file=sys.stderr)


# ---------------------------------------------------------------- workloads


def iso(s):
    return dt.datetime.fromtimestamp(s, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def workloads(meta):
    """Per workload: a list of (name, {engine: sql}) queries."""
    t1 = meta["end_s"]
    t0 = t1 - 3600
    w0, w1 = int(MONTH[1].timestamp()) - 7 * 86_400, int(MONTH[1].timestamp())

    def ts_between(col, a, b, engine):
        if engine in ("duckdb", "polars"):
            return (f"{col} >= TIMESTAMPTZ '{iso(a)}+00:00' AND "
                    f"{col} < TIMESTAMPTZ '{iso(b)}+00:00'")
        return f"{col} >= TIMESTAMP '{iso(a)}Z' AND {col} < TIMESTAMP '{iso(b)}Z'"

    def t(name, engine):
        return {"ironlake": name, "duckdb": name.replace(".", "_"),
                "polars": name.replace(".", "_")}[engine]

    eng = ["ironlake", "duckdb", "polars"]
    minute = {
        "ironlake": "date_trunc('minute', ts)",
        "duckdb": "date_trunc('minute', ts)",
        "polars": "date_trunc('minute', ts)",
    }
    w8a = {e: (f"SELECT asset_id, signal, {minute[e]} AS minute, avg(value) AS avg_value, "
               f"count(*) AS n FROM {t('silver.readings', e)} WHERE {ts_between('ts', t0, t1, e)} "
               f"GROUP BY asset_id, signal, {minute[e]}") for e in eng}
    last = {
        "ironlake": "max_by(value, ts) AS value",
        "duckdb": "arg_max(value, ts) AS value",
    }
    w8b = {e: (f"SELECT asset_id, signal, {last[e]}, max(ts) AS ts FROM {t('silver.readings', e)} "
               f"WHERE {ts_between('ts', t0, t1, e)} GROUP BY asset_id, signal") for e in last}
    w8b["polars"] = (
        f"SELECT r.asset_id, r.signal, r.value, r.ts FROM silver_readings r JOIN "
        f"(SELECT asset_id, signal, max(ts) AS ts FROM silver_readings WHERE "
        f"{ts_between('ts', t0, t1, 'polars')} GROUP BY asset_id, signal) l "
        f"ON r.asset_id = l.asset_id AND r.signal = l.signal AND r.ts = l.ts "
        f"WHERE {ts_between('r.ts', t0, t1, 'polars')}")
    w9 = {e: (f"SELECT line, shift, count(*) AS machine_shifts, "
              f"CAST(sum(running_ms) AS DOUBLE) / CAST(sum(planned_ms) AS DOUBLE) AS availability, "
              f"sum(ideal_ms) / CAST(sum(running_ms) AS DOUBLE) AS performance, "
              f"CAST(sum(good) AS DOUBLE) / CAST(sum(good) + sum(reject) AS DOUBLE) AS quality "
              f"FROM {t('gold.oee_shift', e)} WHERE "
              f"{ts_between('shift_start', MONTH[0].timestamp(), MONTH[1].timestamp(), e)} "
              f"GROUP BY line, shift ORDER BY line, shift") for e in eng}
    w10 = {e: (f"SELECT e.code AS reason, a.area, count(*) AS alarms, "
               f"count(DISTINCT e.asset_id) AS machines "
               f"FROM {t('silver.asset_events', e)} e JOIN {t('silver.assets', e)} a "
               f"ON a.asset_id = e.asset_id WHERE e.kind = 'alarm_raised' AND "
               f"{ts_between('e.ts', w0, w1, e)} GROUP BY e.code, a.area "
               f"ORDER BY alarms DESC, reason, a.area LIMIT 10") for e in eng}
    return {"W8": [("minute_avg", w8a), ("last_value", w8b)], "W9": [("oee", w9)],
            "W10": [("top_alarms", w10)]}


def checksum(name, tbl):
    """Engine-independent summary of a result table."""
    d = {"rows": tbl.num_rows}

    def s(c):
        return float(pc.sum(tbl.column(c)).as_py() or 0.0)

    if name == "minute_avg":
        d.update(n=int(s("n")), sum_avg=s("avg_value"))
    elif name == "last_value":
        d.update(sum_value=s("value"))
    elif name == "oee":
        d.update(machine_shifts=int(s("machine_shifts")), sum_availability=s("availability"),
                 sum_performance=s("performance"), sum_quality=s("quality"))
    elif name == "top_alarms":
        d.update(alarms=int(s("alarms")), machines=int(s("machines")),
                 first=str(tbl.column("reason")[0].as_py()) if tbl.num_rows else None)
    return d


def same(a, b):
    for k, v in a.items():
        w = b.get(k)
        if isinstance(v, float) or isinstance(w, float):
            if w is None or abs(v - w) > 1e-9 * max(1.0, abs(v)):
                return False
        elif v != w:
            return False
    return True


GLOBS = {
    ("silver", "readings"): "plant=*/date=*/*.parquet",
    ("gold", "oee_shift"): "plant=*/*.parquet",
    ("silver", "asset_events"): "plant=*/date=*/*.parquet",
    ("silver", "assets"): "*.parquet",
}


class Duck:
    def __init__(self, data):
        import duckdb
        self.con = duckdb.connect()
        for (layer, table), glob in GLOBS.items():
            path = os.path.join(data, layer, table, glob)
            opt = ", hive_partitioning = true" if "=" in glob else ""
            self.con.execute(f"CREATE VIEW {layer}_{table} AS SELECT * FROM "
                             f"read_parquet('{path}'{opt})")

    def run(self, sql):
        return self.con.sql(sql).to_arrow_table()


class Polars:
    def __init__(self, data):
        import polars as pl
        self.pl = pl
        self.ctx = pl.SQLContext()
        for (layer, table), glob in GLOBS.items():
            path = os.path.join(data, layer, table, glob)
            lf = pl.scan_parquet(path, hive_partitioning="=" in glob)
            self.ctx.register(f"{layer}_{table}", lf)

    def run(self, sql):
        return self.ctx.execute(sql).collect().to_arrow()


class Ironlake:
    """`ironlake bench sql`: one process, one SQL engine, the query repeated."""

    def __init__(self, data, binary):
        self.data, self.bin = data, binary

    def runs(self, sql, repeats):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "result.parquet")
            p = subprocess.run([self.bin, "bench", "sql", "--lakehouse", self.data, "--query", sql,
                                "--repeats", str(repeats), "--out", out],
                               capture_output=True, text=True)
            if p.returncode != 0:
                raise RuntimeError(p.stderr.strip())
            res = json.loads(p.stdout.strip().splitlines()[-1])
            return res, pq.read_table(out)


def cmd_run(a):
    with open(os.path.join(a.data, "meta.json")) as f:
        meta = json.load(f)
    wl = workloads(meta)
    engines = a.engines.split(",")
    binary = os.environ.get("IRONLAKE_BIN", "target/release/ironlake")
    results = {"meta": meta, "repeats": a.repeats, "runs": {}}
    for w in a.workloads.split(","):
        for qname, per_engine in wl[w]:
            key = f"{w}.{qname}"
            results["runs"][key] = {}
            for e in engines:
                sql = per_engine[e]
                if e == "ironlake":
                    res, tbl = Ironlake(a.data, binary).runs(sql, a.repeats)
                    secs = res["seconds"]
                    extra = {k: v for k, v in res.items() if k != "seconds"}
                else:
                    eng = Duck(a.data) if e == "duckdb" else Polars(a.data)
                    secs = []
                    for _ in range(a.repeats):
                        t = time.perf_counter()
                        tbl = eng.run(sql)
                        secs.append(time.perf_counter() - t)
                    extra = {}
                results["runs"][key][e] = {"seconds": secs, "checksum": checksum(qname, tbl), **extra}
                print(f"{key:22} {e:9} first {secs[0]:7.3f} s  warm median "
                      f"{statistics.median(secs[1:] or secs):7.3f} s  {checksum(qname, tbl)}",
                      file=sys.stderr, flush=True)
            ref = results["runs"][key][engines[0]]["checksum"]
            for e in engines[1:]:
                if not same(ref, results["runs"][key][e]["checksum"]):
                    print(f"  CHECKSUM MISMATCH {key}: {engines[0]} {ref} vs {e} "
                          f"{results['runs'][key][e]['checksum']}", file=sys.stderr)
                    results["runs"][key][e]["mismatch"] = True
    table(results)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1)


def table(results):
    """Markdown: per workload (its queries summed), warm median and first run per engine."""
    engines = None
    rows = {}
    for key, per in results["runs"].items():
        w = key.split(".")[0]
        engines = list(per)
        for e, r in per.items():
            s = r["seconds"]
            warm = statistics.median(s[1:] or s)
            acc = rows.setdefault(w, {}).setdefault(e, [0.0, 0.0, False])
            acc[0] += warm
            acc[1] += s[0]
            acc[2] |= bool(r.get("mismatch"))
    print("| W | " + " | ".join(f"{e} warm (first) s" for e in engines) + " | ironlake / best peer |")
    print("|---|" + "---:|" * (len(engines) + 1))
    for w, per in rows.items():
        cells = [f"{per[e][0]:.3f} ({per[e][1]:.3f}){' MISMATCH' if per[e][2] else ''}"
                 for e in engines]
        peers = [per[e][0] for e in engines if e != "ironlake"]
        ratio = f"{per['ironlake'][0] / min(peers):.2f}" if "ironlake" in per and peers else ""
        print(f"| {w} | " + " | ".join(cells) + f" | {ratio} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("--out", required=True)
    g.add_argument("--machines", type=int, default=1000)
    g.add_argument("--seconds", type=int, default=20_000)
    g.add_argument("--layout", choices=["arrival", "asset"], default="arrival")
    g.add_argument("--history-days", type=int, default=365)
    g.add_argument("--history-files-per-day", type=int, default=1,
                   help="files per plant and day of history (144: the ~105,000-file log of a "
                        "year of 10-minute commits after compaction)")
    g.add_argument("--seed", type=int, default=42)
    r = sub.add_parser("run")
    r.add_argument("--data", required=True)
    r.add_argument("--repeats", type=int, default=5)
    r.add_argument("--workloads", default="W8,W9,W10")
    r.add_argument("--engines", default="ironlake,duckdb,polars")
    r.add_argument("--out")
    a = ap.parse_args()
    {"gen": cmd_gen, "run": cmd_run}[a.cmd](a)


if __name__ == "__main__":
    main()
