"""Timers, medians and interleaved rounds.

Every contender of one benchmark row (ours, the memory floor, torch) runs in
the same rounds, in an order that rotates each round (ABC, BCA, CAB, ...),
so that frequency changes, a noisy neighbour or the page cache hit all of
them alike.  The number of rounds adapts to the cost of a round: enough to
fill the row's time budget, within [min_reps, max_reps].
"""
import os
import statistics
import time


def cpu_timer(fn):
    """Seconds one call of fn takes on the wall clock."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def cuda_timer(cupy):
    """A timer for GPU work: CUDA events around the call on the null stream.

    CuPy and PyTorch both enqueue on the legacy default stream unless told
    otherwise, so the events bracket either library's kernels.
    """
    start = cupy.cuda.Event()
    end = cupy.cuda.Event()

    def timer(fn):
        start.record()
        fn()
        end.record()
        end.synchronize()
        return cupy.cuda.get_elapsed_time(start, end) * 1e-3

    return timer


def repeats_for(round_s, budget_s, min_reps, max_reps):
    if round_s <= 0:
        return max_reps
    return int(max(min_reps, min(max_reps, budget_s / round_s)))


def interleaved(fns, timer=cpu_timer, budget_s=0.5, min_reps=5, max_reps=100,
                warmup=2, gap_s=0.0):
    """Samples (seconds) of each callable in `fns` (name -> fn), timed in rotating rounds.

    gap_s > 0 sleeps before each timed call, outside the timed region, so
    that the idle threads of another library's OpenMP runtime stop spinning
    on our cores; an untimed call then wakes the contender's own threads, so
    the timed call runs as it would back to back.
    """
    names = list(fns)
    est = {}
    for name in names:
        ts = [timer(fns[name]) for _ in range(max(1, warmup))]
        est[name] = min(ts)
    per_call = (lambda e: gap_s + 2 * e) if gap_s else (lambda e: e)
    reps = repeats_for(sum(per_call(e) for e in est.values()), budget_s, min_reps, max_reps)
    samples = {name: [] for name in names}
    for r in range(reps):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            if gap_s:
                time.sleep(gap_s)
                fns[name]()
            samples[name].append(timer(fns[name]))
    return samples


def median(samples):
    return statistics.median(samples) if samples else float("nan")


def summary(samples):
    """What the JSON keeps of one contender's samples."""
    s = sorted(samples)
    q = lambda f: s[min(len(s) - 1, int(f * (len(s) - 1) + 0.5))]
    return {"median_s": median(s), "min_s": s[0], "q1_s": q(0.25), "q3_s": q(0.75),
            "reps": len(s)}


def _cpu_seconds():
    """(CPU seconds used by every process since boot, CPU seconds used by this one)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:8]]
    t = os.times()
    busy = v[0] + v[1] + v[2] + v[5] + v[6]  # user nice system irq softirq
    return busy / os.sysconf("SC_CLK_TCK"), t.user + t.system


class OthersLoad:
    """How many cores other processes kept busy between start and `cores()` (Linux).

    A busy neighbour is the main source of noise on a small machine: an
    OpenMP barrier waits for whichever thread the scheduler put aside.  The
    counters tick every 10 ms, so spans much shorter than a second are rough.
    """

    def __init__(self):
        try:
            self._t0, self._c0 = time.perf_counter(), _cpu_seconds()
        except (OSError, ValueError, AttributeError):
            self._c0 = None

    def cores(self):
        if self._c0 is None:
            return None
        wall = time.perf_counter() - self._t0
        (all1, ours1), (all0, ours0) = _cpu_seconds(), self._c0
        return max(0.0, (all1 - all0) - (ours1 - ours0)) / wall if wall > 0 else None
