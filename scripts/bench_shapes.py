#!/usr/bin/env python3
"""The peer workloads (W0-W7) at every shape: many or few machines, short or long
series, and rows arriving in time order, machine by machine, or shuffled within minutes.

    python3 scripts/bench_shapes.py gen   --root DIR --shapes 10x1000000,100000x100 \
                                          [--orders time,machine,shuffled] [--text]
    python3 scripts/bench_shapes.py run   --root DIR [--repeats 3] [--workloads W0,...] \
                                          [--engines polars,duckdb,ironlake]
    python3 scripts/bench_shapes.py table --root DIR [--matrix]

`gen` calls ../shared/bench/gen_telemetry.py once per shape (MACHINESxROWS) into
DIR/MACHINESxROWS-time and derives the other arrival orders from it:

* `machine`: a historian export, one machine after another (a stable sort by machine,
  so each machine's rows keep their arrival order, late re-deliveries included);
* `shuffled`: rows shuffled within each minute of arrival (the running maximum of ts,
  which is the arrival clock of a time-ordered file), as many gateways deliver.

states and counts get the same treatment. Every derived set also gets its own
silver.parquet: W1's output (valid rows, first of each (machine, ts)) in the file's
own order, so that W2-W4 see that order too; the time-ordered set keeps
peers_bench.py's silver (sorted by ts, machine). The rows are the same in every
order, so every checksum is the same as the time-ordered set's: `gen` checks it.

`run` runs peers_bench.py (IRONLAKE_BIN must point to a release build) on every set
under DIR and keeps DIR/<set>/results.json; it first measures the machine's memory
bandwidth (`ironlake bench membw`, kept in DIR/membw.json). `table` prints one Markdown
table per set: each workload's best peer, ironlake, ironlake / best, ironlake's rows/s,
and ironlake's memory traffic against that ceiling: the least bytes the workload must
move (its inputs as Arrow holds them, text dictionary-encoded; for the readers, the file
plus the decoded table), divided by its time, over the all-thread read bandwidth.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get("IRONLAKE_SHARED_BENCH", os.path.join(HERE, "..", "..", "shared", "bench"))
ROW_GROUP = 262_144
SIGNALS = ["temperature_c", "vibration_mm_s", "current_a", "power_kw", "spindle_rpm"]
RANGES = {
    "temperature_c": (-40.0, 200.0),
    "vibration_mm_s": (0.0, 100.0),
    "current_a": (0.0, 1000.0),
    "power_kw": (0.0, 1000.0),
    "spindle_rpm": (0.0, 30000.0),
}


def permutation(tbl, order, seed):
    """Row permutation of a table for an arrival order."""
    n = tbl.num_rows
    if order == "machine":
        codes = pc.dictionary_encode(tbl.column("machine_id").combine_chunks()).indices
        return np.argsort(np.asarray(codes), kind="stable")
    if order == "shuffled":
        ts = np.asarray(tbl.column("ts").cast(pa.int64()))
        minute = np.maximum.accumulate(ts) // 60_000
        rnd = np.random.default_rng(seed).random(n)
        return np.lexsort((rnd, minute))
    raise SystemExit(f"unknown order `{order}`")


def silver_in_file_order(tel):
    ok = pl.lit(True)
    for c, (lo, hi) in RANGES.items():
        ok = ok & pl.col(c).is_not_null() & ~pl.col(c).is_nan() & pl.col(c).is_between(lo, hi)
    return pl.from_arrow(tel).filter(ok).unique(["machine_id", "ts"], keep="first", maintain_order=True)


def checksum(df):
    out = {"rows": df.height, "ts_sum": int(df["ts"].dt.epoch("ms").sum())}
    for c in SIGNALS:
        out[c] = round(float(df[c].fill_nan(None).sum()), 3)
    return out


def derive(base, dst, order, text):
    os.makedirs(dst, exist_ok=True)
    for i, name in enumerate(["telemetry", "states", "counts"]):
        tbl = pq.read_table(os.path.join(base, f"{name}.parquet"))
        tbl = tbl.take(pa.array(permutation(tbl, order, 42 + i)))
        pq.write_table(tbl, os.path.join(dst, f"{name}.parquet"), row_group_size=ROW_GROUP)
        if name == "telemetry":
            tel = tbl
    silver = silver_in_file_order(tel)
    silver.write_parquet(os.path.join(dst, "silver.parquet"), row_group_size=ROW_GROUP)
    ref = pl.read_parquet(os.path.join(base, "silver.parquet"))
    a, b = checksum(silver), checksum(ref)
    if a != b:
        raise SystemExit(f"{dst}: silver differs from the time-ordered set's: {a} vs {b}")
    meta = json.load(open(os.path.join(base, "meta.json")))
    meta["arrival_order"] = order
    json.dump(meta, open(os.path.join(dst, "meta.json"), "w"), indent=1)
    if text:
        write_text(tel, dst)


def write_text(tel, dst):
    """telemetry.jsonl and telemetry.csv in the file's row order, as gen_telemetry.py writes them."""
    tpl = pl.from_arrow(tel)
    tpl.select(
        pl.col("machine_id").alias("machine"),
        pl.col("ts").dt.epoch("ms").alias("ts"),
        "plant", "line",
        pl.struct([pl.col(c).fill_nan(None) for c in SIGNALS]).alias("signals"),
    ).write_ndjson(os.path.join(dst, "telemetry.jsonl"))
    tpl.write_csv(os.path.join(dst, "telemetry.csv"))


def make_reference_silver(d):
    # peers_bench.py's own rule for the time-ordered set (W1, sorted by ts, machine).
    path = os.path.join(d, "silver.parquet")
    if not os.path.exists(path):
        s = silver_in_file_order(pq.read_table(os.path.join(d, "telemetry.parquet")))
        s.sort("ts", "machine_id").write_parquet(path, row_group_size=ROW_GROUP)


def gen(a):
    for shape in a.shapes.split(","):
        m, r = shape.split("x")
        base = os.path.join(a.root, f"{m}x{r}-time")
        if not os.path.exists(os.path.join(base, "meta.json")):
            cmd = [sys.executable, os.path.join(SHARED, "gen_telemetry.py"), "--machines", m,
                   "--rows-per-machine", r, "--out", base]
            if a.text:
                cmd += ["--jsonl", "--csv"]
            print(" ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
        make_reference_silver(base)
        if a.text and not os.path.exists(os.path.join(base, "telemetry.jsonl")):
            write_text(pq.read_table(os.path.join(base, "telemetry.parquet")), base)
        for order in a.orders.split(","):
            if order == "time":
                continue
            dst = os.path.join(a.root, f"{m}x{r}-{order}")
            if not os.path.exists(os.path.join(dst, "meta.json")):
                print(f"deriving {dst}", flush=True)
                derive(base, dst, order, a.text)
            elif a.text and not os.path.exists(os.path.join(dst, "telemetry.jsonl")):
                write_text(pq.read_table(os.path.join(dst, "telemetry.parquet")), dst)


def sets(root):
    return sorted(d for d in os.listdir(root) if os.path.exists(os.path.join(root, d, "meta.json")))


def membw(root):
    """The all-thread memory bandwidth measured by `ironlake bench membw` (cached)."""
    path = os.path.join(root, "membw.json")
    if not os.path.exists(path):
        binary = os.environ.get("IRONLAKE_BIN", "ironlake")
        p = subprocess.run([binary, "bench", "membw", "--json"], capture_output=True,
                           text=True, check=True)
        with open(path, "w") as f:
            f.write(p.stdout.strip().splitlines()[-1])
    return json.load(open(path))


TEXT_COLUMNS = {"telemetry": ["plant", "line", "machine_id"],
                "silver": ["plant", "line", "machine_id"],
                "states": ["machine_id", "state", "product_code"], "counts": ["machine_id"]}
WORKLOAD_TABLES = {"W1": ["telemetry"], "W2": ["silver", "states"], "W3": ["silver"],
                   "W4": ["silver"], "W5": ["states", "counts"]}
WORKLOAD_FILES = {"W0": "telemetry.parquet", "W6": "telemetry.jsonl", "W7": "telemetry.csv"}


def traffic(d):
    """Least bytes each workload moves in set `d` (cached in d/bytes.json)."""
    path = os.path.join(d, "bytes.json")
    if os.path.exists(path):
        return json.load(open(path))
    size = {}
    for t, text in TEXT_COLUMNS.items():
        f = os.path.join(d, f"{t}.parquet")
        names = pq.read_schema(f).names
        size[t] = pq.read_table(f, read_dictionary=[c for c in text if c in names]).nbytes
    out = {w: sum(size[t] for t in ts) for w, ts in WORKLOAD_TABLES.items()}
    for w, f in WORKLOAD_FILES.items():
        f = os.path.join(d, f)
        if os.path.exists(f):
            out[w] = os.path.getsize(f) + size["telemetry"]
    with open(path, "w") as fh:
        json.dump(out, fh)
    return out


def run(a):
    membw(a.root)
    for s in sets(a.root):
        if a.only and s not in a.only.split(","):
            continue
        d = os.path.join(a.root, s)
        wl = [w for w in a.workloads.split(",")
              if w not in ("W6",) or os.path.exists(os.path.join(d, "telemetry.jsonl"))]
        wl = [w for w in wl if w != "W7" or os.path.exists(os.path.join(d, "telemetry.csv"))]
        cmd = [sys.executable, os.path.join(SHARED, "peers_bench.py"), "--data", d,
               "--repeats", str(a.repeats), "--engines", a.engines, "--workloads", ",".join(wl),
               "--out", os.path.join(d, "results.json")]
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    table(a)


def table(a):
    for s in sets(a.root):
        path = os.path.join(a.root, s, "results.json")
        if not os.path.exists(path):
            continue
        res = json.load(open(path))
        bw = json.load(open(os.path.join(a.root, "membw.json")))["read_gbs_all"] \
            if os.path.exists(os.path.join(a.root, "membw.json")) else None
        moved = traffic(os.path.join(a.root, s))
        print(f"\n**{s}** ({res['meta_rows']['telemetry']:,} rows, {res['silver_rows']:,} silver)\n")
        print("| W | best peer | peer s | ironlake s | ironlake / best | ironlake rows/s | "
              "ironlake GB/s (of the read ceiling) | checksums |")
        print("|---|---|---:|---:|---:|---:|---:|---|")
        for w, cell in res["cells"].items():
            eng = cell["engines"]
            peers = {e: v for e, v in eng.items() if e != "ironlake"}
            il = eng.get("ironlake")
            if not peers or not il:
                continue
            bp = min(peers, key=lambda e: peers[e]["median_s"])
            agree = all(not v[[k for k in v if k.startswith("diff_vs_")][0]] for v in eng.values())
            gbs = moved.get(w, 0) / il["median_s"] / 1e9
            ceiling = f"{gbs:.1f} ({100 * gbs / bw:.0f}% of {bw:.0f})" if bw else f"{gbs:.1f}"
            print(f"| {w} | {bp} | {peers[bp]['median_s']:.3f} | {il['median_s']:.3f} | "
                  f"{il['median_s'] / peers[bp]['median_s']:.2f} | {il['rows_per_s'] / 1e6:.1f} M | "
                  f"{ceiling} | {'agree' if agree else 'DIFFER'} |")


def matrix(a):
    """One table: a row per workload, a column per set, each cell
    `ironlake s / best peer s = ratio` (the ratio in bold when over 0.5)."""
    cols = []
    for s in sets(a.root):
        path = os.path.join(a.root, s, "results.json")
        if os.path.exists(path):
            cols.append((s, json.load(open(path))))
    ws = sorted({w for _, r in cols for w in r["cells"]})
    print("| W | " + " | ".join(s for s, _ in cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for w in ws:
        cells = []
        for _, r in cols:
            eng = r["cells"].get(w, {}).get("engines", {})
            peers = {e: v["median_s"] for e, v in eng.items() if e != "ironlake"}
            if "ironlake" not in eng or not peers:
                cells.append("")
                continue
            bp = min(peers, key=peers.get)
            ratio = eng["ironlake"]["median_s"] / peers[bp]
            r_s = f"**{ratio:.2f}**" if ratio > 0.5 else f"{ratio:.2f}"
            cells.append(f"{eng['ironlake']['median_s']:.3f} / {peers[bp]:.3f} {bp} = {r_s}")
        print(f"| {w} | " + " | ".join(cells) + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("--root", required=True)
    g.add_argument("--shapes", required=True, help="MACHINESxROWS,... e.g. 10x1000000,100000x100")
    g.add_argument("--orders", default="time", help="time,machine,shuffled")
    g.add_argument("--text", action="store_true", help="also JSON lines and CSV (W6, W7)")
    r = sub.add_parser("run")
    r.add_argument("--root", required=True)
    r.add_argument("--repeats", type=int, default=3)
    r.add_argument("--engines", default="polars,duckdb,ironlake")
    r.add_argument("--workloads", default="W0,W1,W2,W3,W4,W5,W6,W7")
    r.add_argument("--only", default="", help="comma list of sets (directory names)")
    t = sub.add_parser("table")
    t.add_argument("--root", required=True)
    t.add_argument("--matrix", action="store_true", help="one table, a column per set")
    a = ap.parse_args()
    if a.cmd == "table" and a.matrix:
        a.cmd = "matrix"
    {"gen": gen, "run": run, "table": table, "matrix": matrix}[a.cmd](a)


if __name__ == "__main__":
    main()
