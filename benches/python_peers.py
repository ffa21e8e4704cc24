#!/usr/bin/env python3
"""Python's peers for `cargo bench --bench peers` (stdlib only).

Runs the workloads of benches/peers.rs that have a Python counterpart with
concurrent.futures.ThreadPoolExecutor, concurrent.futures.ProcessPoolExecutor
(the "spawn" start method: the fair match for our re-exec'd workers) and
multiprocessing.Pool (spawn), and prints one JSON object per line:

    {"workload": "tiny", "lib": "ThreadPoolExecutor", "values": [...], "note": ...}

`values` are medians over the repetitions, in the order of the metrics of
that workload in peers.rs. Run by the Rust harness; also runnable alone:

    python3 benches/python_peers.py [--quick] [--workers 2] [--reps 5] [--only tiny,fib]
"""

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import statistics
import sys
import time


def noop(i):
    return i


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def emit(workload, lib, values, note=None):
    obj = {"workload": workload, "lib": lib, "values": values}
    if note:
        obj["note"] = note
    print(json.dumps(obj), flush=True)


def log(msg):
    print(f"[python_peers] {msg}", file=sys.stderr, flush=True)


def interleave(reps, runners):
    """runners: list of (lib, fn -> list of floats). One warm-up, then reps
    rounds A B C ...; returns {lib: [median per metric]}."""
    samples = {lib: [] for lib, _ in runners}
    for _, fn in runners:
        fn()
    for _ in range(reps):
        for lib, fn in runners:
            samples[lib].append(fn())
    return {
        lib: [statistics.median(col) for col in zip(*rows)] for lib, rows in samples.items()
    }


def pct(sorted_vals, q):
    return sorted_vals[round((len(sorted_vals) - 1) * q)]


# --- thread pool ------------------------------------------------------------


def thread_workloads(args, want):
    w = args.workers
    reps = args.reps
    with cf.ThreadPoolExecutor(max_workers=w) as tpe:
        if want("tiny"):
            n = 20_000 if args.quick else 200_000

            def tiny():
                t = time.perf_counter()
                fs = [tpe.submit(noop, i) for i in range(n)]
                s = 0
                for f in fs:
                    s += f.result()
                dt = time.perf_counter() - t
                assert s == n * (n - 1) // 2
                return [n / dt, dt * 1e3]

            log(f"tiny: {n} tasks")
            for lib, v in interleave(reps, [("ThreadPoolExecutor", tiny)]).items():
                emit("tiny", lib, v)

        if want("latency"):
            n = 2_000 if args.quick else 20_000

            def latency():
                lat = []
                for i in range(n):
                    t = time.perf_counter()
                    tpe.submit(noop, i).result()
                    lat.append((time.perf_counter() - t) * 1e6)
                lat.sort()
                return [pct(lat, 0.5), pct(lat, 0.99)]

            log(f"latency: {n} round trips")
            for lib, v in interleave(reps, [("ThreadPoolExecutor", latency)]).items():
                emit("latency", lib, v)

        if want("low-rate-cpu"):
            ms = 200 if args.quick else 1000

            def lowrate():
                time.sleep(0.1)
                c0 = time.process_time()
                start = time.perf_counter()
                fs = []
                for k in range(ms):
                    due = start + k / 1000.0
                    now = time.perf_counter()
                    if due > now:
                        time.sleep(due - now)
                    fs.append(tpe.submit(noop, k))
                for f in fs:
                    f.result()
                return [(time.process_time() - c0) * 1e3]

            log(f"low-rate-cpu: {ms} ms")
            for lib, v in interleave(reps, [("ThreadPoolExecutor", lowrate)]).items():
                emit("low-rate-cpu", lib, v)

        if want("fib"):
            tasks, k = (16, 20) if args.quick else (64, 22)

            def seq():
                t = time.perf_counter()
                for _ in range(tasks):
                    fib(k)
                return [(time.perf_counter() - t) * 1e3]

            def par():
                t = time.perf_counter()
                for f in [tpe.submit(fib, k) for _ in range(tasks)]:
                    f.result()
                return [(time.perf_counter() - t) * 1e3]

            log(f"fib: {tasks} x fib({k})")
            res = interleave(reps, [("sequential", seq), ("ThreadPoolExecutor", par)])
            s = res["sequential"][0]
            p = res["ThreadPoolExecutor"][0]
            emit(
                "fib",
                "ThreadPoolExecutor",
                [s / p, p],
                f"fib({k}) in Python (fib(27) would take minutes); the GIL serializes it",
            )


# --- process pools ----------------------------------------------------------


def process_workloads(args, want):
    w = args.workers
    reps = args.reps
    ctx = mp.get_context("spawn")
    need = [x for x in ("process-tiny", "process-map", "process-latency", "process-fib") if want(x)]
    if need:
        ppe = cf.ProcessPoolExecutor(max_workers=w, mp_context=ctx)
        pool = ctx.Pool(w)
        # Warm up: all workers started.
        list(ppe.map(noop, range(100)))
        pool.map(noop, range(100))

        if want("process-tiny"):
            n = 2_000 if args.quick else 20_000
            # PPE is slow per task: fewer tasks, same per-task metric.
            n_ppe = n // 4 if not args.quick else n

            def ppe_tiny():
                t = time.perf_counter()
                fs = [ppe.submit(noop, i) for i in range(n_ppe)]
                for f in fs:
                    f.result()
                dt = time.perf_counter() - t
                return [n_ppe / dt, dt * 1e3]

            def mp_tiny():
                t = time.perf_counter()
                rs = [pool.apply_async(noop, (i,)) for i in range(n)]
                for r in rs:
                    r.get()
                dt = time.perf_counter() - t
                return [n / dt, dt * 1e3]

            log(f"process-tiny: {n} tasks (PPE: {n_ppe})")
            res = interleave(
                reps, [("ProcessPoolExecutor", ppe_tiny), ("mp.Pool.apply_async", mp_tiny)]
            )
            emit(
                "process-tiny",
                "ProcessPoolExecutor",
                res["ProcessPoolExecutor"],
                None if n_ppe == n else f"{n_ppe} tasks (tasks/s is the comparable figure)",
            )
            emit("process-tiny", "mp.Pool.apply_async", res["mp.Pool.apply_async"])

        if want("process-map"):
            n = 20_000 if args.quick else 200_000

            def ppe_map():
                t = time.perf_counter()
                s = sum(ppe.map(noop, range(n), chunksize=1000))
                dt = time.perf_counter() - t
                assert s == n * (n - 1) // 2
                return [n / dt, dt * 1e3]

            def mp_map():
                t = time.perf_counter()
                s = sum(pool.map(noop, range(n), chunksize=1000))
                dt = time.perf_counter() - t
                assert s == n * (n - 1) // 2
                return [n / dt, dt * 1e3]

            log(f"process-map: {n} items")
            res = interleave(reps, [("ProcessPoolExecutor.map", ppe_map), ("mp.Pool.map", mp_map)])
            for lib, v in res.items():
                emit("process-map", lib, v)

        if want("process-latency"):
            n = 300 if args.quick else 2_000

            def lat_of(call):
                def run():
                    lat = []
                    for i in range(n):
                        t = time.perf_counter()
                        call(i)
                        lat.append((time.perf_counter() - t) * 1e6)
                    lat.sort()
                    return [pct(lat, 0.5), pct(lat, 0.99)]

                return run

            log(f"process-latency: {n} round trips")
            res = interleave(
                reps,
                [
                    ("ProcessPoolExecutor", lat_of(lambda i: ppe.submit(noop, i).result())),
                    ("mp.Pool.apply_async", lat_of(lambda i: pool.apply_async(noop, (i,)).get())),
                ],
            )
            for lib, v in res.items():
                emit("process-latency", lib, v)

        if want("process-fib"):
            tasks, k = (16, 20) if args.quick else (64, 22)

            def seq():
                t = time.perf_counter()
                for _ in range(tasks):
                    fib(k)
                return [(time.perf_counter() - t) * 1e3]

            def ppe_fib():
                t = time.perf_counter()
                for f in [ppe.submit(fib, k) for _ in range(tasks)]:
                    f.result()
                return [(time.perf_counter() - t) * 1e3]

            def mp_fib():
                t = time.perf_counter()
                for r in [pool.apply_async(fib, (k,)) for _ in range(tasks)]:
                    r.get()
                return [(time.perf_counter() - t) * 1e3]

            log(f"process-fib: {tasks} x fib({k})")
            res = interleave(
                reps,
                [("sequential", seq), ("ProcessPoolExecutor", ppe_fib), ("mp.Pool.apply_async", mp_fib)],
            )
            s = res["sequential"][0]
            for lib in ("ProcessPoolExecutor", "mp.Pool.apply_async"):
                p = res[lib][0]
                emit("process-fib", lib, [s / p, p], f"fib({k}) in Python")

        ppe.shutdown(wait=True)
        pool.close()
        pool.join()

    if want("process-startup"):

        def startup(method, kind):
            def run():
                c = mp.get_context(method)
                t = time.perf_counter()
                if kind == "ppe":
                    ex = cf.ProcessPoolExecutor(max_workers=2, mp_context=c)
                    ex.submit(noop, 1).result()
                    dt = time.perf_counter() - t
                    ex.shutdown(wait=True)
                else:
                    p = c.Pool(2)
                    p.apply_async(noop, (1,)).get()
                    dt = time.perf_counter() - t
                    p.close()
                    p.join()
                return [dt * 1e3]

            return run

        log("process-startup")
        runners = [
            ("ProcessPoolExecutor", startup("spawn", "ppe")),
            ("mp.Pool", startup("spawn", "pool")),
        ]
        if "fork" in mp.get_all_start_methods():
            runners.append(("ProcessPoolExecutor (fork)", startup("fork", "ppe")))
        for lib, v in interleave(reps, runners).items():
            emit("process-startup", lib, v, "spawn" if "fork" not in lib else None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--only", default=None)
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else None

    def want(w):
        return only is None or w in only

    print(json.dumps({"python": sys.version.split()[0]}), flush=True)
    thread_workloads(args, want)
    process_workloads(args, want)


if __name__ == "__main__":
    main()
