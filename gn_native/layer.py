"""GroupNorm layer: parameters, running statistics, train/eval, backward.

A thin shell over the functional API: its rules come from gn_native._validate
and its maths from group_norm_forward / group_norm_backward (the backends).
"""
import numpy as np

from . import _interop
from . import _validate as V
from ._api import array_module, group_norm_backward, group_norm_forward


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


def _np_dtype(dtype):
    """A layer dtype: None (float32), a NumPy one, or a torch one (torch.float16 ...)."""
    if dtype is None:
        return np.float32
    if type(dtype).__module__.startswith("torch"):
        name = str(dtype).rpartition(".")[2]
        if name in V._dtypes.NUMPY:
            return V._dtypes.NUMPY[name]
        if name == "bfloat16":
            raise TypeError('dtype torch.bfloat16 needs ml_dtypes: pip install "gn_native[bf16]"')
    return dtype


class GroupNorm:
    """Group Normalization layer over (N, C, *spatial) inputs (or channels-last).

    Holds the learnable `gamma` and `beta`, optional running statistics, a
    train/eval mode, and the values of the last call that `backward` needs.
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

    Parameters
    ----------
    n_groups : int
        Number of groups G; it must divide `n_channels`.
    n_channels : int
        Number of channels C of the inputs.
    eps : float, default 1e-5
        Added to the variance; must be positive and finite.
    affine : bool, default True
        Learn a scale `gamma` (ones at start) and shift `beta` (zeros at
        start).  When False they are None.
    affine_per : {"channel", "group"}, default "channel"
        One `gamma`/`beta` value per channel (shape (C,), as PyTorch) or
        per group (shape (G,)).
    stats : {"sample", "batch"}, default "sample"
        ``"sample"``: statistics per (sample, group), as torch.
        ``"batch"``: per group, over the whole batch as well.
    track_running_stats : bool, default False
        Keep `running_mean` (zeros at start) and `running_var` (ones at
        start), shape (G,), updated by each training-mode call and used in
        eval mode to normalize every sample.
    momentum : float or None, default 0.1
        In [0, 1]: ``running = (1 - momentum) * running + momentum *
        batch``, the batch variance being unbiased.  None: a cumulative
        average over all the batches seen.
    dtype : data-type, default numpy.float32
        Dtype of the inputs and of `gamma`/`beta`: float16, bfloat16,
        float32 or float64.  Inputs of another dtype are refused.
    device : {"cpu", "gpu"}, default "cpu"
        ``"cpu"`` takes NumPy arrays (and array-likes); ``"gpu"`` holds its
        arrays in CuPy and takes CuPy arrays.
    channel_axis : {1, -1}, default 1
        Axis of the channels in the inputs: 1 for (N, C, *spatial), -1 for
        (N, *spatial, C).
    activation : {None, "silu", "gelu", "gelu_tanh", "relu"}, default None
        Applied after the affine step, fused into the same pass (as
        ``F.silu(F.group_norm(...))``); `backward` differentiates through
        it.  A setting, not state: `state_dict` does not hold it.
    num_groups, num_channels : int, optional
        torch's names for `n_groups` and `n_channels`: code written for
        ``torch.nn.GroupNorm(num_groups=..., num_channels=...)`` runs
        unchanged (`dtype` may then be a torch dtype, `device` None).

    Attributes
    ----------
    gamma, beta : ndarray or None
        The affine parameters (None when ``affine=False``).
    weight, bias : ndarray or None
        `gamma` and `beta` by torch's names (the same arrays).
    dgamma, dbeta : ndarray or None
        Their gradients, set by `backward`.
    dadd : ndarray or None
        After a call with `add`, the gradient of `add`, set by `backward`.
    running_mean, running_var : ndarray or None
        Running statistics, shape (G,), when tracked.
    num_batches_tracked : int
        Training-mode calls counted in the running statistics, when tracked.
    training : bool
        True in training mode (the start), False in eval mode.

    Raises
    ------
    TypeError
        If an argument has the wrong type (a non-integer `n_groups` or
        `n_channels`, a non-number `eps` or `momentum`, a non-str
        `affine_per`, `stats` or `device`, an unsupported `dtype`).
    ValueError
        If an argument has a bad value (`n_groups` not dividing
        `n_channels`, a non-positive count, `eps` not positive and finite,
        `momentum` outside [0, 1], an unknown `affine_per`, `stats`,
        `device`, `channel_axis` or `activation`).

    See Also
    --------
    group_norm : The functional form.

    Examples
    --------
    >>> import numpy as np
    >>> import gn_native as gn
    >>> layer = gn.GroupNorm(2, 4, track_running_stats=True)
    >>> x = np.arange(16, dtype=np.float32).reshape(2, 4, 2)
    >>> y = layer(x)
    >>> y.shape, y.dtype
    ((2, 4, 2), dtype('float32'))
    >>> dx = layer.backward(np.ones_like(y))
    >>> layer.dbeta
    array([4., 4., 4., 4.], dtype=float32)
    >>> layer.running_mean
    array([0.55, 0.95], dtype=float32)
    >>> y_eval = layer.eval()(x)   # normalized with the running statistics
    >>> gn.GroupNorm(3, 4)
    Traceback (most recent call last):
    ...
    ValueError: n_groups=3 must divide n_channels=4
    """

    def __init__(self, n_groups=None, n_channels=None, eps=1e-5, affine=True, *,
                 affine_per="channel", stats="sample", track_running_stats=False, momentum=0.1,
                 dtype=np.float32, device="cpu", channel_axis=1, activation=None,
                 num_groups=None, num_channels=None):
        n_groups, n_channels = V.torch_names(
            ("n_groups", "num_groups", n_groups, num_groups),
            ("n_channels", "num_channels", n_channels, num_channels), required="GroupNorm()")
        cfg = V.check_layer_config(n_groups, n_channels, eps, affine_per, stats, momentum,
                                   _np_dtype(dtype), "cpu" if device is None else device,
                                   channel_axis)
        self.activation = None if activation is None else str(V.check_activation(activation))
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
        self.device = cfg["device"]
        self.xp = xp = array_module(self.device)
        stat_dtype = V.stat_dtype_for(self.dtype)
        plen = c if affine_per == "channel" else g
        self.gamma = xp.ones(plen, self.dtype) if self.affine else None
        self.beta = xp.zeros(plen, self.dtype) if self.affine else None
        self.dgamma = self.dbeta = self.dadd = None
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
        """Set training mode (or eval mode with ``mode=False``).

        In training mode each call normalizes with the statistics of its
        input and updates the running statistics when they are tracked.

        Parameters
        ----------
        mode : bool, default True
            True for training mode, False for eval mode.

        Returns
        -------
        GroupNorm
            The layer itself.

        See Also
        --------
        eval : Same as ``train(False)``.

        Examples
        --------
        >>> import gn_native as gn
        >>> layer = gn.GroupNorm(2, 4)
        >>> layer.train(False).training
        False
        >>> layer.train().training
        True
        """
        self.training = bool(mode)
        return self

    def eval(self):
        """Set eval mode; same as ``train(False)``.

        In eval mode a layer with ``track_running_stats=True`` normalizes
        every sample with `running_mean` and `running_var` and leaves them
        unchanged; without them, eval behaves as training (standard GN).

        Returns
        -------
        GroupNorm
            The layer itself.

        See Also
        --------
        train : Set training or eval mode.

        Examples
        --------
        >>> import gn_native as gn
        >>> gn.GroupNorm(2, 4).eval().training
        False
        """
        return self.train(False)

    # ---- forward / backward ----
    def __call__(self, x=None, add=None, *, input=None):
        """Normalize `x` with the layer's parameters; `forward` is the same.

        Keeps `x` (without copying it) and its statistics for `backward`.
        In training mode with tracked statistics, updates `running_mean`,
        `running_var` and `num_batches_tracked`.

        Parameters
        ----------
        x : array_like
            Input of shape (N, C, *spatial) (channels on `channel_axis`) and
            of the layer's dtype; a CuPy array for a ``"gpu"`` layer.
        input : array_like, optional
            torch's name for `x` (``module(input=x)``); give one of them.
        add : array_like, optional
            Added to `x` first, in the same pass (as `group_norm`'s `add`):
            `x`'s shape, (N, C) or (C,), the layer's dtype.  The layer then
            keeps the sum (a new array) for `backward`, which also sets
            `dadd`.

        Returns
        -------
        ndarray
            Normalized array, `x`'s shape and dtype.

        Raises
        ------
        TypeError
            If `x` is not of the layer's dtype, or of an unsupported type.
        ValueError
            If `x` has fewer than 2 dimensions or not `n_channels` channels
            on `channel_axis`.

        See Also
        --------
        backward : Gradients for this call.
        group_norm : The functional form.

        Examples
        --------
        >>> import numpy as np
        >>> import gn_native as gn
        >>> layer = gn.GroupNorm(2, 4)
        >>> x = np.arange(8, dtype=np.float32).reshape(1, 4, 2)
        >>> layer(x).round(3)
        array([[[-1.342, -0.447],
                [ 0.447,  1.342],
                [-1.342, -0.447],
                [ 0.447,  1.342]]], dtype=float32)
        >>> layer(x.astype(np.float64))
        Traceback (most recent call last):
        ...
        TypeError: x has dtype float64, but the layer's dtype is float32
        """
        if input is not None:
            x, = V.torch_names(("x", "input", x, input))
        fw = _interop.framework(x)      # a torch/JAX array in: the same kind out
        x = V.check_layer_input(x, self.device, self.dtype, self.n_channels, self.channel_axis)
        extra = {}
        if add is not None:      # the sum is what backward differentiates at
            extra = dict(add=add, sum_out=self.xp.empty_like(x))
        use_running = self.track_running_stats and not self.training
        if use_running:
            y, mean, rstd, *s = group_norm_forward(
                x, self.n_groups, self.gamma, self.beta, self.eps, stats="batch",
                channel_axis=self.channel_axis, mean=self.running_mean, var=self.running_var,
                activation=self.activation, **extra)
            self._save(s[0] if s else x, mean, rstd, True, add)
            return y if fw is None else _interop.like(fw, y)
        running = {}
        if self.training and self.track_running_stats:
            # momentum=None: a cumulative average over the batches counted so far
            count = self.num_batches_tracked + 1
            running = dict(running_mean=self.running_mean, running_var=self.running_var,
                           momentum=self.momentum if self.momentum is not None else 1.0 / count)
        y, mean, rstd, *s = group_norm_forward(x, self.n_groups, self.gamma, self.beta, self.eps,
                                               stats=self.stats, channel_axis=self.channel_axis,
                                               activation=self.activation, **running, **extra)
        self._save(s[0] if s else x, mean, rstd, False, add)
        if running and x.size:   # an empty batch updates nothing
            self.num_batches_tracked += 1
        return y if fw is None else _interop.like(fw, y)

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

    def _save(self, x, mean, rstd, frozen, add):
        shape = None if add is None else tuple(np.shape(add))   # checked by the forward call
        self._saved = (x, mean, rstd, frozen, self._fingerprint(x), shape)

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

    def backward(self, dy):
        """Return dL/dx for the last call; set `dgamma` and `dbeta`.

        Uses the `x` and statistics kept by the last call.  After an
        eval-mode call with running statistics, these are constants, so
        ``dx = dy * gamma * rstd``.  After a call with `add`, also sets
        `dadd`, the gradient of `add` in its shape: `dx` itself for an
        `add` of `x`'s shape, else `dx` summed over the axes `add` was
        broadcast along (in float32, float64 for float64).

        Parameters
        ----------
        dy : array_like
            Gradient of the loss with respect to the last output, shaped as
            it.

        Returns
        -------
        ndarray
            Gradient with respect to the last `x`, its shape and dtype.

        Raises
        ------
        RuntimeError
            If the layer has not been called yet, or the `x` of the last
            call was changed in place since (a cheap, sampled check).
        TypeError
            If `dy` has an unsupported type or dtype.
        ValueError
            If `dy` is not shaped as the last `x`.

        See Also
        --------
        group_norm_backward : The functional form.

        Examples
        --------
        >>> import numpy as np
        >>> import gn_native as gn
        >>> layer = gn.GroupNorm(2, 4)
        >>> x = np.arange(8, dtype=np.float32).reshape(1, 4, 2)
        >>> y = layer(x)
        >>> dx = layer.backward(y)   # the gradient of sum(y**2) / 2
        >>> dx.shape
        (1, 4, 2)
        >>> layer.dgamma.round(3)   # sum of y**2 over each channel
        array([2., 2., 2., 2.], dtype=float32)
        """
        if self._saved is None:
            raise RuntimeError("backward() needs a forward call first")
        x, mean, rstd, frozen, fingerprint, add_shape = self._saved
        fw = _interop.framework(dy)     # a torch/JAX dy: dx of its kind (the layer's own
        if fw is not None:              # arrays, gradients included, stay NumPy/CuPy)
            dy = _interop.to_numpy(dy, "dy")
        self._check_unchanged(x, fingerprint)
        gamma = self.gamma if self.affine else None
        beta = self.beta if self.affine and self.activation else None   # z needs beta
        # frozen (eval with running statistics): mean/rstd are constants, per group
        dx, dgamma, dbeta = group_norm_backward(dy, x, mean, rstd, self.n_groups, gamma, beta,
                                                stats="batch" if frozen else self.stats,
                                                channel_axis=self.channel_axis, frozen=frozen,
                                                activation=self.activation)
        if self.affine:
            self.dgamma, self.dbeta = dgamma, dbeta
        self.dadd = None if add_shape is None else self._add_grad(dx, add_shape)
        return dx if fw is None else _interop.like(fw, dx)

    def _add_grad(self, dx, add_shape):
        """The gradient of an add of shape add_shape: dx summed over its broadcast axes."""
        if add_shape == tuple(dx.shape):
            return dx
        ax = self.channel_axis % dx.ndim
        axes = tuple(i for i in range(dx.ndim) if i != ax and (i or len(add_shape) == 1))
        return dx.sum(axis=axes, dtype=V.stat_dtype_for(self.dtype)).astype(self.dtype)

    # ---- state ----
    def state_dict(self):
        """Return the layer's state as a dict of NumPy array copies.

        Holds ``"gamma"`` and ``"beta"`` when affine, and
        ``"running_mean"``, ``"running_var"`` and ``"num_batches_tracked"``
        (a 0-d int64 array) when the running statistics are tracked.  The
        arrays are plain NumPy (also for a GPU layer), so the dict can be
        saved with ``np.savez``.

        Returns
        -------
        dict of str to ndarray
            Copies: changing them does not change the layer.

        See Also
        --------
        load_state_dict : Load such a dict.

        Examples
        --------
        >>> import gn_native as gn
        >>> sd = gn.GroupNorm(2, 4, track_running_stats=True).state_dict()
        >>> sorted(sd)
        ['beta', 'gamma', 'num_batches_tracked', 'running_mean', 'running_var']
        >>> sd["gamma"]
        array([1., 1., 1., 1.], dtype=float32)
        """
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
        """Load a state given by `state_dict` (or ``np.load`` of its ``np.savez``).

        Every entry is checked before any is loaded: a refused state leaves
        the layer unchanged.

        Parameters
        ----------
        state : mapping of str to array_like
            The same keys as this layer's `state_dict`, each value of the
            same shape and a numeric dtype (converted to the layer's); or
            a ``torch.nn.GroupNorm``'s ``state_dict()`` (``"weight"``,
            ``"bias"``: torch tensors, also of a channels-last model).

        Raises
        ------
        TypeError
            If `state` is not a mapping, or a value has a non-numeric dtype.
        ValueError
            If the keys differ from the layer's `state_dict`, or a value
            has another shape.

        See Also
        --------
        state_dict : The state to load.

        Examples
        --------
        >>> import numpy as np
        >>> import gn_native as gn
        >>> a, b = gn.GroupNorm(2, 4), gn.GroupNorm(2, 4)
        >>> a.gamma[:] = 2.0
        >>> b.load_state_dict(a.state_dict())
        >>> b.gamma
        array([2., 2., 2., 2.], dtype=float32)
        >>> b.load_state_dict({"gamma": np.ones(4)})
        Traceback (most recent call last):
        ...
        ValueError: state_dict keys mismatch: ...
        """
        expected = self.state_dict()
        if hasattr(state, "keys") and set(state.keys()) == {"weight", "bias"} and self.affine:
            state = {"gamma": state["weight"], "beta": state["bias"]}   # torch's GroupNorm
        new = V.check_state_dict(state, expected)
        xp = self.xp
        if self.affine:
            self.gamma = xp.asarray(new["gamma"])
            self.beta = xp.asarray(new["beta"])
        if self.track_running_stats:
            self.running_mean = xp.asarray(new["running_mean"])
            self.running_var = xp.asarray(new["running_var"])
            self.num_batches_tracked = int(new["num_batches_tracked"])

    # ---- torch's names and modules ----
    @property
    def weight(self):
        """`gamma`, by torch's name."""
        return self.gamma

    @weight.setter
    def weight(self, value):
        self.gamma = value

    @property
    def bias(self):
        """`beta`, by torch's name."""
        return self.beta

    @bias.setter
    def bias(self, value):
        self.beta = value

    @classmethod
    def from_torch(cls, module, **kwargs):
        """A layer with the configuration and parameters of a ``torch.nn.GroupNorm``.

        Parameters
        ----------
        module : torch.nn.GroupNorm
            The module to copy (on the CPU; its dtype becomes the layer's).
        **kwargs
            Further `GroupNorm` options (``channel_axis=-1`` for
            channels-last inputs, ``activation=``, ``device="gpu"``).

        Returns
        -------
        GroupNorm
            A layer giving the module's numbers.

        Examples
        --------
        >>> import torch
        >>> import gn_native as gn
        >>> m = torch.nn.GroupNorm(2, 4)
        >>> layer = gn.GroupNorm.from_torch(m)
        >>> layer.n_groups, layer.weight.shape, layer.dtype
        (2, (4,), dtype('float32'))
        """
        dtype = module.weight.dtype if module.affine else kwargs.pop("dtype", None)
        layer = cls(module.num_groups, module.num_channels, module.eps, module.affine,
                    dtype=dtype, **kwargs)
        if module.affine:
            layer.load_state_dict(module.state_dict())
        return layer

    def to_torch(self):
        """A ``torch.nn.GroupNorm`` with this layer's configuration and parameters.

        Needs torch only when called.  torch's module has per-channel
        parameters, per-sample statistics, no running statistics and no
        activation: a layer with other settings is refused.

        Returns
        -------
        torch.nn.GroupNorm
            On the CPU, in the layer's dtype.

        Raises
        ------
        ValueError
            If the layer uses a setting torch's module lacks.

        Examples
        --------
        >>> import gn_native as gn
        >>> m = gn.GroupNorm(2, 4).to_torch()
        >>> m
        GroupNorm(2, 4, eps=1e-05, affine=True, ...)
        """
        import torch
        other = [name for name, on in (
            ("affine_per='group'", self.affine and self.affine_per == "group"),
            ("stats='batch'", self.stats == "batch"),
            ("track_running_stats", self.track_running_stats),
            (f"activation={self.activation!r}", self.activation is not None)) if on]
        if other:
            raise ValueError(f"torch.nn.GroupNorm has no {', '.join(other)}")
        m = torch.nn.GroupNorm(self.n_groups, self.n_channels, self.eps, self.affine,
                               dtype=getattr(torch, np.dtype(self.dtype).name))
        if self.affine:
            with torch.no_grad():
                for t, a in ((m.weight, self.gamma), (m.bias, self.beta)):
                    src = _to_numpy(a)
                    if src.dtype.name == "bfloat16":
                        t.copy_(torch.from_numpy(src.view(np.int16)).view(torch.bfloat16))
                    else:
                        t.copy_(torch.from_numpy(src.copy()))
        return m

    def __repr__(self):
        return (f"GroupNorm({self.n_groups}, {self.n_channels}, eps={self.eps}, "
                f"affine={self.affine}, affine_per={self.affine_per!r}, stats={self.stats!r}, "
                f"track_running_stats={self.track_running_stats}, dtype={self.dtype}, "
                f"device={self.device!r}"
                + (f", activation={self.activation!r}" if self.activation else "") + ")")
