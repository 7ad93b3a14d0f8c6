"""GroupNorm layer: parameters, running statistics, train/eval, backward.

A thin shell over the functional API: its rules come from gn_native._validate
and its maths from group_norm_forward / group_norm_backward (the backends).
"""
import numpy as np

from . import _validate as V
from ._api import array_module, forward_with_var, group_norm_backward, group_norm_forward


_SAMPLE = 64   # values of x that backward checks against what forward saw


def _sample_index(xp, shape):
    """Flat and multi-indices of _SAMPLE values spread evenly over an array of
    `shape` (the multi-indices read any strides without a copy)."""
    size = int(np.prod(shape, dtype=np.int64))
    flat = np.unique(np.linspace(0, size - 1, min(size, _SAMPLE)).astype(np.intp))
    return xp.asarray(flat), tuple(xp.asarray(i) for i in np.unravel_index(flat, shape))


def _same_bits(xp, a, b):
    if xp is np:
        return a.tobytes() == b.tobytes()
    u = f"u{a.dtype.itemsize}"
    return bool(xp.array_equal(a.view(u), b.view(u)))


def _to_numpy(a):
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


class GroupNorm:
    """Group Normalization over (N, C, *spatial) inputs (or channels-last).

    Defaults give torch.nn.GroupNorm's numbers.  `stats="batch"` computes the
    statistics over the batch as well (one mean/variance per group);
    `affine_per="group"` learns one gamma/beta per group instead of per
    channel; `track_running_stats=True` keeps running averages that eval mode
    uses to normalize every sample.

    `backward(dy)` uses the `x` of the last call, which the layer keeps
    without copying it.  Changing that array in place between the two
    (`y = layer(x); x += noise; layer.backward(dy)`) is refused with a
    RuntimeError, as torch refuses a tensor modified in place before its
    backward.  The check is cheap, not exhaustive: it compares the array's
    shape and strides and a fixed sample of 64 of its values, so a
    change to only a few values can go unnoticed.  Call the layer on
    `x.copy()` when x is to be changed before backward.
    """

    def __init__(self, n_groups, n_channels, eps=1e-5, affine=True, *, affine_per="channel",
                 stats="sample", track_running_stats=False, momentum=0.1,
                 dtype=np.float32, device="cpu", channel_axis=1):
        cfg = V.check_layer_config(n_groups, n_channels, eps, affine_per, stats, momentum,
                                   dtype, device, channel_axis)
        g, c = cfg["n_groups"], cfg["n_channels"]
        self.n_groups, self.n_channels = g, c
        self.eps = cfg["eps"]
        self.stats = cfg["stats"]
        self.affine = bool(affine)
        self.affine_per = affine_per
        self.track_running_stats = bool(track_running_stats)
        self.momentum = cfg["momentum"]
        self.channel_axis = cfg["channel_axis"]
        self.dtype = cfg["dtype"]
        self.device = device
        self.xp = xp = array_module(device)
        stat_dtype = V.stat_dtype_for(self.dtype)
        plen = c if affine_per == "channel" else g
        self.gamma = xp.ones(plen, self.dtype) if self.affine else None
        self.beta = xp.zeros(plen, self.dtype) if self.affine else None
        self.dgamma = self.dbeta = None
        if self.track_running_stats:
            self.running_mean = xp.zeros(g, stat_dtype)
            self.running_var = xp.ones(g, stat_dtype)
            self.num_batches_tracked = 0
        else:
            self.running_mean = self.running_var = None
        self.training = True
        self._saved = None
        self._sample_at = (None, None)   # (shape, _sample_index(xp, shape)) of the last x

    # ---- modes ----
    def train(self, mode=True):
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    # ---- forward / backward ----
    def __call__(self, x):
        x = V.check_layer_input(x, self.device, self.dtype, self.n_channels, self.channel_axis)
        use_running = self.track_running_stats and not self.training
        if use_running:
            y, mean, rstd = group_norm_forward(
                x, self.n_groups, self.gamma, self.beta, self.eps, stats="batch",
                channel_axis=self.channel_axis, mean=self.running_mean, var=self.running_var)
            self._save(x, mean, rstd, True)
            return y
        update = self.training and self.track_running_stats
        y, mean, rstd, var = forward_with_var(x, self.n_groups, self.gamma, self.beta, self.eps,
                                              stats=self.stats, channel_axis=self.channel_axis,
                                              want_var=update)
        self._save(x, mean, rstd, False)
        if update:
            self._update_running(x, mean, rstd, var)
        return y

    forward = __call__

    def _fingerprint(self, x):
        """x's shape and strides and a fixed sample of its values (x is the array
        the layer keeps, so its memory cannot move; its shape can be set)."""
        shape = tuple(x.shape)
        sample = None
        if x.size:
            if self._sample_at[0] != shape:
                self._sample_at = (shape, _sample_index(self.xp, shape))
            flat, multi = self._sample_at[1]
            sample = x.reshape(-1)[flat] if x.flags.c_contiguous else x[multi]
        return (shape, x.strides), sample

    def _save(self, x, mean, rstd, frozen):
        self._saved = (x, mean, rstd, frozen, self._fingerprint(x))

    def _check_unchanged(self, x, fingerprint):
        where, sample = self._fingerprint(x)
        same = where == fingerprint[0] and (
            sample is None or _same_bits(self.xp, sample, fingerprint[1]))
        if not same:
            raise RuntimeError(
                "one of the variables needed for gradient computation has been modified by an "
                "inplace operation: the x of the last forward call was changed before "
                "backward(); call the layer again on the new values, or give it a copy "
                "(layer(x.copy())) when x is to be changed")

    def _update_running(self, x, mean, rstd, var):
        xp = self.xp
        n, c, spatial = V.split_shape(tuple(x.shape), self.channel_axis % x.ndim)
        k = c // self.n_groups
        count = k * spatial * (n if self.stats == "batch" else 1)
        if count == 0 or n == 0:
            return
        m = mean.astype(np.float64)
        if var is None:   # backend without a variance output: derive it from rstd
            var = xp.maximum(1.0 / (rstd.astype(np.float64) ** 2) - self.eps, 0.0)
        else:
            var = var.astype(np.float64)
        if count > 1:
            var = var * (count / (count - 1))
        if self.stats == "sample":
            m, var = m.mean(axis=0), var.mean(axis=0)
        self.num_batches_tracked += 1
        mom = self.momentum if self.momentum is not None else 1.0 / self.num_batches_tracked
        rm = (1.0 - mom) * self.running_mean.astype(np.float64) + mom * m
        rv = (1.0 - mom) * self.running_var.astype(np.float64) + mom * var
        self.running_mean[...] = rm
        self.running_var[...] = rv

    def backward(self, dy):
        """dL/dx for the last training-mode call; sets self.dgamma and self.dbeta."""
        if self._saved is None:
            raise RuntimeError("backward() needs a forward call first")
        x, mean, rstd, frozen, fingerprint = self._saved
        self._check_unchanged(x, fingerprint)
        gamma = self.gamma if self.affine else None
        # frozen (eval with running statistics): mean/rstd are constants, per group
        dx, dgamma, dbeta = group_norm_backward(dy, x, mean, rstd, self.n_groups, gamma,
                                                stats="batch" if frozen else self.stats,
                                                channel_axis=self.channel_axis, frozen=frozen)
        if self.affine:
            self.dgamma, self.dbeta = dgamma, dbeta
        return dx

    # ---- state ----
    def state_dict(self):
        d = {}
        if self.affine:
            d["gamma"] = _to_numpy(self.gamma).copy()
            d["beta"] = _to_numpy(self.beta).copy()
        if self.track_running_stats:
            d["running_mean"] = _to_numpy(self.running_mean).copy()
            d["running_var"] = _to_numpy(self.running_var).copy()
            d["num_batches_tracked"] = np.array(self.num_batches_tracked, np.int64)
        return d

    def load_state_dict(self, state):
        """Load what state_dict() gave (or np.load of it); all checked before any change."""
        expected = self.state_dict()
        new = V.check_state_dict(state, expected)
        xp = self.xp
        if self.affine:
            self.gamma = xp.asarray(new["gamma"])
            self.beta = xp.asarray(new["beta"])
        if self.track_running_stats:
            self.running_mean = xp.asarray(new["running_mean"])
            self.running_var = xp.asarray(new["running_var"])
            self.num_batches_tracked = int(new["num_batches_tracked"])

    def __repr__(self):
        return (f"GroupNorm({self.n_groups}, {self.n_channels}, eps={self.eps}, "
                f"affine={self.affine}, affine_per={self.affine_per!r}, stats={self.stats!r}, "
                f"track_running_stats={self.track_running_stats}, dtype={self.dtype}, "
                f"device={self.device!r})")
