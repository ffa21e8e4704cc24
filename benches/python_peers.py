#!/usr/bin/env python3
"""Python's peers for `cargo bench --bench peers` (stdlib only).

The workloads of benches/peers.rs that have a Python counterpart, run with
concurrent.futures.ThreadPoolExecutor, concurrent.futures.ProcessPoolExecutor
(the "spawn" start method: the fair match for our re-exec'd workers) and
multiprocessing.Pool (spawn).

Two modes:

* ``--serve`` (what the Rust harness runs): a long-lived child that takes one
  JSON command a line on stdin and answers each with one JSON line on
  stdout, so that the harness can run Python's repetitions interleaved with
  its own, in the same rotation as the Rust peers (a workload's runs then
  share the host's drift, whoever they belong to):

      {"cmd": "setup", "workload": W}  -> {"reply": "setup", "libs": [...], "notes": {lib: note}}
      {"cmd": "run", "workload": W, "lib": L} -> {"reply": "run", "values": [...]}
      {"cmd": "end", "workload": W}    -> {"reply": "end"}
      {"cmd": "quit"}                  -> exits

  ``setup`` builds the workload's pools once and warms them, as the harness
  does with ours; ``run`` is one repetition of one pool, not timed by the
  caller; ``end`` shuts the pools down. A command that raises answers
  ``{"reply": ..., "error": "..."}`` (the traceback goes to stderr) and the
  child carries on with the next command. The first line out is
  ``{"python": version}``.

* standalone (no ``--serve``): runs every workload by itself, interleaving
  its own pools the same way, and prints one JSON line per row with the
  medians, for a look at Python alone:

      python3 benches/python_peers.py [--quick] [--workers 2] [--reps 5] [--only tiny,fib]

``values`` are in the order of that workload's metrics in peers.rs; the fib
workloads give milliseconds (the harness turns them into speedups over the
``sequential`` row, Python's own).
"""

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import statistics
import sys
import time
import traceback


def noop(i):
    return i


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def log(msg):
    print(f"[python_peers] {msg}", file=sys.stderr, flush=True)


def pct(sorted_vals, q):
    return sorted_vals[round((len(sorted_vals) - 1) * q)]


def ms_since(t):
    return (time.perf_counter() - t) * 1e3


class Setup:
    """One workload's pools and runners: ``runners`` is a list of
    (lib, fn -> list of floats), ``notes`` {lib: note}. ``close`` shuts down
    what ``own`` registered, last first."""

    def __init__(self):
        self.runners = []
        self.notes = {}
        self._closers = []

    def own(self, resource, close):
        self._closers.append(lambda: close(resource))
        return resource

    def close(self):
        while self._closers:
            try:
                self._closers.pop()()
            except Exception:
                traceback.print_exc(file=sys.stderr)


def thread_pool(s, w):
    tpe = s.own(cf.ThreadPoolExecutor(max_workers=w), lambda p: p.shutdown(wait=True))
    # Warm up: every worker thread started.
    for f in [tpe.submit(noop, i) for i in range(100)]:
        f.result()
    return tpe


def process_pools(s, w):
    ctx = mp.get_context("spawn")
    ppe = s.own(
        cf.ProcessPoolExecutor(max_workers=w, mp_context=ctx), lambda p: p.shutdown(wait=True)
    )
    pool = s.own(ctx.Pool(w), lambda p: (p.close(), p.join()))
    # Warm up: every worker process started and serving.
    list(ppe.map(noop, range(100)))
    pool.map(noop, range(100))
    return ppe, pool


def latency_of(n, call):
    def run():
        lat = []
        for i in range(n):
            t = time.perf_counter()
            call(i)
            lat.append((time.perf_counter() - t) * 1e6)
        lat.sort()
        return [pct(lat, 0.5), pct(lat, 0.99)]

    return run


def throughput(n, collect):
    def run():
        t = time.perf_counter()
        collect()
        dt = time.perf_counter() - t
        return [n / dt, dt * 1e3]

    return run


def fib_size(args):
    # Pure-Python fib(27) would take minutes: the speedup is what compares.
    return (16, 20) if args.quick else (64, 22)


def sequential_fib(tasks, k):
    def run():
        t = time.perf_counter()
        for _ in range(tasks):
            fib(k)
        return [ms_since(t)]

    return run


# --- thread pool ------------------------------------------------------------


def setup_tiny(s, args):
    tpe = thread_pool(s, args.workers)
    n = 20_000 if args.quick else 200_000

    def collect():
        fs = [tpe.submit(noop, i) for i in range(n)]
        total = 0
        for f in fs:
            total += f.result()
        assert total == n * (n - 1) // 2

    s.runners.append(("ThreadPoolExecutor", throughput(n, collect)))


def setup_latency(s, args):
    tpe = thread_pool(s, args.workers)
    n = 2_000 if args.quick else 20_000
    s.runners.append(("ThreadPoolExecutor", latency_of(n, lambda i: tpe.submit(noop, i).result())))


def setup_lowrate(s, args):
    tpe = thread_pool(s, args.workers)
    ms = 200 if args.quick else 1000

    def run():
        # As the harness does: the previous pool's threads fall asleep first.
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

    s.runners.append(("ThreadPoolExecutor", run))


def setup_fib(s, args):
    tpe = thread_pool(s, args.workers)
    tasks, k = fib_size(args)

    def par():
        t = time.perf_counter()
        for f in [tpe.submit(fib, k) for _ in range(tasks)]:
            f.result()
        return [ms_since(t)]

    s.runners += [("sequential", sequential_fib(tasks, k)), ("ThreadPoolExecutor", par)]
    s.notes["sequential"] = f"{tasks} × fib({k}) in Python: the baseline of the py: rows"
    s.notes["ThreadPoolExecutor"] = (
        f"fib({k}) in Python (fib(27) would take minutes); the GIL serializes it"
    )


# --- process pools ----------------------------------------------------------


def setup_process_tiny(s, args):
    ppe, pool = process_pools(s, args.workers)
    n = 2_000 if args.quick else 20_000
    # PPE is slow per task: fewer tasks, same per-task metric.
    n_ppe = n if args.quick else n // 4

    def ppe_collect():
        for f in [ppe.submit(noop, i) for i in range(n_ppe)]:
            f.result()

    def mp_collect():
        for r in [pool.apply_async(noop, (i,)) for i in range(n)]:
            r.get()

    s.runners += [
        ("ProcessPoolExecutor", throughput(n_ppe, ppe_collect)),
        ("mp.Pool.apply_async", throughput(n, mp_collect)),
    ]
    if n_ppe != n:
        s.notes["ProcessPoolExecutor"] = f"{n_ppe} tasks (tasks/s is the comparable figure)"


def setup_process_map(s, args):
    ppe, pool = process_pools(s, args.workers)
    n = 20_000 if args.quick else 200_000

    def check(total):
        assert total == n * (n - 1) // 2

    s.runners += [
        (
            "ProcessPoolExecutor.map",
            throughput(n, lambda: check(sum(ppe.map(noop, range(n), chunksize=1000)))),
        ),
        ("mp.Pool.map", throughput(n, lambda: check(sum(pool.map(noop, range(n), chunksize=1000))))),
    ]


def setup_process_latency(s, args):
    ppe, pool = process_pools(s, args.workers)
    n = 300 if args.quick else 2_000
    s.runners += [
        ("ProcessPoolExecutor", latency_of(n, lambda i: ppe.submit(noop, i).result())),
        ("mp.Pool.apply_async", latency_of(n, lambda i: pool.apply_async(noop, (i,)).get())),
    ]


def setup_process_fib(s, args):
    ppe, pool = process_pools(s, args.workers)
    tasks, k = fib_size(args)

    def ppe_fib():
        t = time.perf_counter()
        for f in [ppe.submit(fib, k) for _ in range(tasks)]:
            f.result()
        return [ms_since(t)]

    def mp_fib():
        t = time.perf_counter()
        for r in [pool.apply_async(fib, (k,)) for _ in range(tasks)]:
            r.get()
        return [ms_since(t)]

    s.runners += [
        ("sequential", sequential_fib(tasks, k)),
        ("ProcessPoolExecutor", ppe_fib),
        ("mp.Pool.apply_async", mp_fib),
    ]
    s.notes["sequential"] = f"{tasks} × fib({k}) in Python: the baseline of the py: rows"
    s.notes["ProcessPoolExecutor"] = f"fib({k}) in Python"
    s.notes["mp.Pool.apply_async"] = f"fib({k}) in Python"


def setup_process_startup(s, args):
    # No pool to keep: each repetition builds one, as ours does.
    def startup(method, kind):
        def run():
            c = mp.get_context(method)
            t = time.perf_counter()
            if kind == "ppe":
                ex = cf.ProcessPoolExecutor(max_workers=2, mp_context=c)
                ex.submit(noop, 1).result()
                dt = ms_since(t)
                ex.shutdown(wait=True)
            else:
                p = c.Pool(2)
                p.apply_async(noop, (1,)).get()
                dt = ms_since(t)
                p.close()
                p.join()
            return [dt]

        return run

    s.runners += [
        ("ProcessPoolExecutor", startup("spawn", "ppe")),
        ("mp.Pool", startup("spawn", "pool")),
    ]
    s.notes["ProcessPoolExecutor"] = "spawn"
    s.notes["mp.Pool"] = "spawn"
    if "fork" in mp.get_all_start_methods():
        s.runners.append(("ProcessPoolExecutor (fork)", startup("fork", "ppe")))


# In the order the harness runs them.
WORKLOADS = {
    "tiny": setup_tiny,
    "latency": setup_latency,
    "low-rate-cpu": setup_lowrate,
    "fib": setup_fib,
    "process-tiny": setup_process_tiny,
    "process-map": setup_process_map,
    "process-latency": setup_process_latency,
    "process-fib": setup_process_fib,
    "process-startup": setup_process_startup,
}

# Workloads whose short repetitions the harness runs at least 15 times.
AT_LEAST_15 = ("fib", "process-fib")


def setup(key, args):
    s = Setup()
    try:
        WORKLOADS[key](s, args)
    except BaseException:
        s.close()
        raise
    return s


# --- serve mode ---------------------------------------------------------------


def reply(obj):
    print(json.dumps(obj), flush=True)


def serve(args):
    reply({"python": sys.version.split()[0]})
    open_setups = {}
    try:
        while True:
            line = sys.stdin.readline()
            if not line:
                return  # the harness is gone
            line = line.strip()
            if not line:
                continue
            cmd = None
            try:
                msg = json.loads(line)
                cmd = msg["cmd"]
                if cmd == "quit":
                    return
                key = msg["workload"]
                if cmd == "setup":
                    if key in open_setups:
                        open_setups.pop(key).close()
                    s = setup(key, args)
                    open_setups[key] = s
                    reply(
                        {
                            "reply": cmd,
                            "libs": [lib for lib, _ in s.runners],
                            "notes": s.notes,
                        }
                    )
                elif cmd == "run":
                    run = dict(open_setups[key].runners)[msg["lib"]]
                    reply({"reply": cmd, "values": [float(v) for v in run()]})
                elif cmd == "end":
                    s = open_setups.pop(key, None)
                    if s is not None:
                        s.close()
                    reply({"reply": cmd})
                else:
                    raise ValueError(f"unknown command {cmd!r}")
            except Exception as e:
                log(f"command {line} failed:")
                traceback.print_exc(file=sys.stderr)
                reply({"reply": cmd, "error": f"{type(e).__name__}: {e}"})
    finally:
        for s in open_setups.values():
            s.close()


# --- standalone mode ------------------------------------------------------------


def interleave(reps, runners):
    """runners: list of (lib, fn -> list of floats). One warm-up round, then
    `reps` rounds in the harness's order: the "sequential" baseline first,
    then the pools starting from the next one each round, forwards and,
    every other round, backwards. Returns {lib: [median per metric]}."""
    samples = {lib: [] for lib, _ in runners}
    for _, fn in runners:
        fn()
    base = [r for r in runners if r[0] == "sequential"]
    pools = [r for r in runners if r[0] != "sequential"]
    n = len(pools)
    for rep in range(reps):
        order = base + [pools[(rep + (n - j if rep % 2 else j)) % n] for j in range(n)]
        for lib, fn in order:
            samples[lib].append(fn())
    return {lib: [statistics.median(col) for col in zip(*rows)] for lib, rows in samples.items()}


def standalone(args):
    only = set(args.only.split(",")) if args.only else None
    print(json.dumps({"python": sys.version.split()[0]}), flush=True)
    for key in WORKLOADS:
        if only is not None and key not in only:
            continue
        log(key)
        try:
            s = setup(key, args)
            try:
                reps = max(args.reps, 15) if key in AT_LEAST_15 else args.reps
                res = interleave(reps, s.runners)
            finally:
                s.close()
        except Exception:
            log(f"{key} failed; its rows are missing:")
            traceback.print_exc(file=sys.stderr)
            continue
        seq = res.pop("sequential", None)
        for lib, values in res.items():
            if seq is not None:
                values = [seq[0] / values[0], values[0]]
            obj = {"workload": key, "lib": lib, "values": values}
            if s.notes.get(lib):
                obj["note"] = s.notes[lib]
            print(json.dumps(obj), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--serve", action="store_true", help="take commands on stdin (the harness)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5, help="standalone mode only")
    ap.add_argument("--only", default=None, help="standalone mode only")
    args = ap.parse_args()
    if args.serve:
        serve(args)
    else:
        standalone(args)


if __name__ == "__main__":
    main()
