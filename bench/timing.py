"""Timers, interleaved rounds, medians, and what else runs on the machine.

Every contender of one row (ours, the memory floor, torch) runs in the same
rounds, in an order that rotates each round (ABC, BCA, CAB, ...), so that
frequency changes or a noisy neighbour hit all of them alike.  The number
of rounds fills the row's time budget, within reps = (min, max).
"""
import os
import statistics
import time


def cpu_timer(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def cuda_timer(cupy):
    """CUDA events around the call on the null stream, where CuPy and torch both enqueue."""
    start, end = cupy.cuda.Event(), cupy.cuda.Event()

    def timer(fn):
        start.record()
        fn()
        end.record()
        end.synchronize()
        return cupy.cuda.get_elapsed_time(start, end) * 1e-3
    return timer


def interleaved(fns, timer=cpu_timer, budget_s=0.5, reps=(5, 100), warmup=2, gap_s=0.0):
    """Samples (seconds) of each callable in `fns` (name -> fn), after `warmup` calls each.

    gap_s > 0 sleeps before each timed call, so that the idle threads of
    another OpenMP runtime stop spinning on our cores; an untimed call then
    wakes the contender's own threads.
    """
    names = list(fns)
    est = {n: min(timer(fns[n]) for _ in range(max(1, warmup))) for n in names}
    round_s = sum((gap_s + 2 * e) if gap_s else e for e in est.values())
    n_rounds = int(max(reps[0], min(reps[1], budget_s / round_s if round_s > 0 else reps[1])))
    samples = {n: [] for n in names}
    for r in range(n_rounds):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            if gap_s:
                time.sleep(gap_s)
                fns[n]()
            samples[n].append(timer(fns[n]))
    return samples


def median(samples):
    return statistics.median(samples) if samples else float("nan")


def summary(samples):
    """What the JSON keeps of one contender's samples."""
    s = sorted(samples)
    q = lambda f: s[min(len(s) - 1, int(f * (len(s) - 1) + 0.5))]  # noqa: E731
    return {"median_s": median(s), "min_s": s[0], "q1_s": q(0.25), "q3_s": q(0.75),
            "reps": len(s)}


def openmp_runtimes():
    """Files of the OpenMP runtimes loaded in this process (Linux; [] elsewhere).

    Two of them (say libgomp for us and a bundled one for torch) each keep
    idle threads spinning after a parallel region, on the same cores.
    """
    names = ("libgomp", "libiomp", "libomp")
    try:
        with open("/proc/self/maps") as f:
            paths = {ln.split()[-1] for ln in f if any(n in ln for n in names)}
    except OSError:
        return []
    return sorted(p for p in paths if os.path.basename(p).startswith(names))


def _others_cpu_seconds():
    """CPU seconds used by other processes since boot (Linux; None elsewhere)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:8]]
    except (OSError, ValueError):
        return None
    t = os.times()  # user nice system irq softirq, minus our own
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / os.sysconf("SC_CLK_TCK") - t.user - t.system


class OthersLoad:
    """How many cores other processes kept busy between start and `cores()`.

    A busy neighbour is the main source of noise on a small machine: an
    OpenMP barrier waits for whichever thread the scheduler put aside.  The
    counters tick every 10 ms, so spans much shorter than a second are rough.
    """

    def __init__(self):
        self._t0, self._c0 = time.perf_counter(), _others_cpu_seconds()

    def cores(self):
        wall, c1 = time.perf_counter() - self._t0, _others_cpu_seconds()
        return None if self._c0 is None or c1 is None or wall <= 0 else max(0.0, c1 - self._c0) / wall
