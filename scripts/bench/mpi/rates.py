# mpi4py.futures' side of scripts/bench/mpi.lua, the same measurements as
# rates.lua: `mpiexec -n 3 python3 -m mpi4py.futures rates.py N` (static)
# or `python3 rates.py N` (spawn).
import sys
import time
from mpi4py.futures import MPIPoolExecutor


def ident(x):
    return x


def burn(k):
    x = 0
    for i in range(1, k + 1):
        x += i % 7
    return x


if __name__ == "__main__":  # the workers import this file under another name
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    t0 = time.perf_counter()
    with MPIPoolExecutor(max_workers=2) as pool:
        pool.submit(ident, 1).result()
        print("startup", time.perf_counter() - t0)
        for _ in range(200):
            pool.submit(ident, 1).result()
        t0 = time.perf_counter()
        for i in range(n):
            pool.submit(ident, i).result()
        dt = time.perf_counter() - t0
        print("submit_per_s", n / dt)
        print("round_trip_us", dt / n * 1e6)
        t0 = time.perf_counter()
        list(pool.map(ident, range(n)))
        print("map1_per_s", n / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        list(pool.map(ident, range(20 * n), chunksize=500))
        print("map500_per_s", 20 * n / (time.perf_counter() - t0))
        work = 300000
        t0 = time.perf_counter()
        for _ in range(8):
            burn(work)
        serial = time.perf_counter() - t0
        t0 = time.perf_counter()
        list(pool.map(burn, [work] * 8))
        print("cpu_speedup", serial / (time.perf_counter() - t0))
    sys.stdout.flush()
