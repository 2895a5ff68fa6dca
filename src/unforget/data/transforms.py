"""Batched tensor transforms: augmentation and normalisation of whole mini-batches at once.

Every function works on a batch ``(N, C, H, W)`` with vectorised tensor ops (no Python loop over
samples) and draws its randomness from an optional :class:`torch.Generator`, so that a seeded
generator makes the output deterministic. :class:`ImageTransform` chains them into the callable a
:class:`~unforget.data.task.Task` carries.
"""
from __future__ import annotations

import math
from typing import Optional, Protocol, Sequence, Union

import torch
import torch.nn.functional as F

Stats = Union[float, Sequence[float]]


class Transform(Protocol):
    """What a task's ``transform`` is: ``transform(x, train=False, generator=None) -> float32 tensor``."""

    def __call__(self, x: torch.Tensor, train: bool = False,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor: ...


def _check_images(x: torch.Tensor, fn: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"{fn}: expected a batch of images (N, C, H, W), got shape {tuple(x.shape)}")


def _draw(fn, *args, generator: Optional[torch.Generator], device: torch.device, **kw) -> torch.Tensor:
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return fn(*args, generator=generator, device=gen_device, **kw).to(device)


def random_crop(x: torch.Tensor, padding: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Zero-pad each image by ``padding`` pixels on every side, then crop it back to its size at a
    random offset drawn per sample (as ``RandomCrop(size, padding)`` of torchvision, batched).

    Args:
        x: images ``(N, C, H, W)``, any dtype (``uint8`` is cheapest).
        padding: pixels of zero padding per side, ``>= 0``; ``0`` returns ``x`` unchanged.
        generator: source of the offsets (``torch.Generator`` on CPU, or ``None`` for the global RNG).

    Returns:
        tensor of the same shape, dtype and device as ``x``.

    Raises:
        ValueError: ``x`` is not 4-D or ``padding < 0``.
    """
    _check_images(x, "random_crop")
    if padding < 0:
        raise ValueError(f"random_crop: padding must be >= 0, got {padding}")
    if padding == 0 or x.shape[0] == 0:
        return x
    n, c, h, w = x.shape
    p = int(padding)
    wp = w + 2 * p
    padded = F.pad(x, (p, p, p, p)).reshape(n, c, (h + 2 * p) * wp)
    dy = _draw(torch.randint, 0, 2 * p + 1, (n,), generator=generator, device=x.device)
    dx = _draw(torch.randint, 0, 2 * p + 1, (n,), generator=generator, device=x.device)
    rows = dy[:, None, None] + torch.arange(h, device=x.device)[None, :, None]  # (N, H, 1)
    cols = dx[:, None, None] + torch.arange(w, device=x.device)[None, None, :]  # (N, 1, W)
    index = (rows * wp + cols).reshape(n, 1, h * w).expand(n, c, h * w)  # flat index into padded
    return padded.gather(2, index).reshape(n, c, h, w)


def random_hflip(x: torch.Tensor, generator: Optional[torch.Generator] = None, p: float = 0.5) -> torch.Tensor:
    """Mirror each image left-right with probability ``p`` (drawn per sample).

    Args:
        x: images ``(N, C, H, W)``, any dtype.
        generator: source of the coin flips (CPU ``torch.Generator`` or ``None``).
        p: flip probability in ``[0, 1]``.

    Returns:
        tensor of the same shape, dtype and device as ``x``.

    Raises:
        ValueError: ``x`` is not 4-D or ``p`` is outside ``[0, 1]``.
    """
    _check_images(x, "random_hflip")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"random_hflip: p must be in [0, 1], got {p}")
    flip = _draw(torch.rand, (x.shape[0],), generator=generator, device=x.device) < p
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def random_resized_crop(x: torch.Tensor, size: int, generator: Optional[torch.Generator] = None,
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """Cut a random box from each image and resize it to ``size x size`` (bilinear), as
    torchvision's ``RandomResizedCrop(size)`` (Szegedy et al. 2015, the "Inception" crop), batched.

    Per sample: an area share ``s ~ U(scale)`` of the image and an aspect ratio ``r`` log-uniform
    in ``ratio`` give a box of ``sqrt(s A r) x sqrt(s A / r)`` pixels (width x height), clipped to
    the image (torchvision retries 10 times before falling back to a centre crop; clipping is the
    batched stand-in), placed uniformly at random.

    Args:
        x: floating images ``(N, C, H, W)``.
        size: output side in pixels.
        generator: source of the boxes (CPU ``torch.Generator`` or ``None``).

    Returns:
        ``(N, C, size, size)`` tensor of ``x``'s dtype.

    Raises:
        ValueError: ``x`` is not 4-D floating point or ``size < 1``.
    """
    _check_images(x, "random_resized_crop")
    if not x.is_floating_point() or size < 1:
        raise ValueError(f"random_resized_crop: needs floating images and size >= 1, got {x.dtype}, {size}")
    n, _, h, w = x.shape
    if n == 0:
        return x.new_zeros((0, x.shape[1], size, size))
    u = _draw(torch.rand, (n, 4), generator=generator, device=x.device)
    area = (scale[0] + (scale[1] - scale[0]) * u[:, 0]) * (h * w)
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1]
    bw = torch.sqrt(area * torch.exp(log_r)).clamp(1.0, float(w))
    bh = torch.sqrt(area / torch.exp(log_r)).clamp(1.0, float(h))
    x0 = (w - bw) * u[:, 2]
    y0 = (h - bh) * u[:, 3]
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = bw / w
    theta[:, 0, 2] = (2 * x0 + bw) / w - 1
    theta[:, 1, 1] = bh / h
    theta[:, 1, 2] = (2 * y0 + bh) / h - 1
    grid = F.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size x size`` pixels of each image ``(N, C, H, W)`` (as torchvision's
    ``CenterCrop``: the top-left corner at ``round((H - size) / 2)``, ``round((W - size) / 2)``).

    Raises:
        ValueError: ``x`` is not 4-D or smaller than ``size``.
    """
    _check_images(x, "center_crop")
    h, w = x.shape[-2:]
    if size > h or size > w:
        raise ValueError(f"center_crop: images of {h}x{w} are smaller than the crop {size}")
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return x[..., top:top + size, left:left + size]


def cutout(x: torch.Tensor, length: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Zero a ``length x length`` square (clipped at the border) at a uniformly random centre of
    each image (DeVries & Taylor 2017; the CPG reference's fine-grained training uses length 16,
    applied after normalisation).

    Args:
        x: images ``(N, C, H, W)``, any dtype.
        length: side of the square in pixels; ``0`` returns ``x``.

    Returns:
        tensor of ``x``'s shape, dtype and device.
    """
    _check_images(x, "cutout")
    if length <= 0 or x.shape[0] == 0:
        return x
    n, _, h, w = x.shape
    cy = _draw(torch.randint, 0, h, (n,), generator=generator, device=x.device)
    cx = _draw(torch.randint, 0, w, (n,), generator=generator, device=x.device)
    rows = torch.arange(h, device=x.device)[None, :]
    cols = torch.arange(w, device=x.device)[None, :]
    in_y = (rows >= (cy - length // 2)[:, None]) & (rows < (cy + length // 2)[:, None])  # (N, H)
    in_x = (cols >= (cx - length // 2)[:, None]) & (cols < (cx + length // 2)[:, None])  # (N, W)
    hole = in_y[:, None, :, None] & in_x[:, None, None, :]
    return x.masked_fill(hole, 0)


def _stats(v: Stats, c: int, like: torch.Tensor, name: str) -> torch.Tensor:
    t = torch.as_tensor(v, dtype=like.dtype, device=like.device).reshape(-1)
    if t.numel() not in (1, c):
        raise ValueError(f"normalize: {name} has {t.numel()} values for {c} channels")
    return t.reshape(1, -1, *([1] * (like.dim() - 2)))


def normalize(x: torch.Tensor, mean: Stats, std: Stats) -> torch.Tensor:
    """Per-channel standardisation ``(x - mean[c]) / std[c]``.

    Args:
        x: floating tensor ``(N, C, ...)``.
        mean, std: one value per channel (or a single value for all channels); ``std > 0``.

    Returns:
        a new tensor of ``x``'s shape and dtype.

    Raises:
        ValueError: ``x`` is not floating point, has fewer than 2 dimensions, ``mean`` / ``std``
            lengths do not match ``C``, or some ``std <= 0``.
    """
    if not x.is_floating_point():
        raise ValueError(f"normalize: expected a floating tensor, got {x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"normalize: expected (N, C, ...), got shape {tuple(x.shape)}")
    m = _stats(mean, x.shape[1], x, "mean")
    s = _stats(std, x.shape[1], x, "std")
    if bool((s <= 0).any()):
        raise ValueError("normalize: every std must be > 0")
    return (x - m) / s


class ImageTransform:
    """The transform of a task: ``uint8`` images to normalised ``float32`` model inputs.

    Called as ``transform(x, train=False, generator=None)`` on a batch ``x`` of shape
    ``(N, C, H, W)`` (``uint8`` in ``0..255``, or floating in ``[0, 1]``). Steps, in order:

    1. training only: :func:`random_crop` with ``crop_padding`` (if ``> 0``), then
       :func:`random_hflip` (if ``hflip``), both drawing from ``generator``;
    2. to ``float32`` in ``[0, 1]`` (``uint8`` is divided by 255);
    3. with ``crop_size``: :func:`random_resized_crop` to ``crop_size`` while training,
       :func:`center_crop` otherwise (ImageNet-style preprocessing);
    4. :func:`normalize` with ``mean`` / ``std`` (skipped when ``mean`` is ``None``), then, while
       training, :func:`cutout` of side ``cutout`` (if ``> 0``);
    5. if ``permutation`` is given, the flattened pixels are reordered, ``out[:, i] = in[:, perm[i]]``
       (permuted MNIST, Golkar et al. 2019, Sec. 3.1; Goodfellow et al. 2013);
    6. output shape ``(N, C*H*W)`` when ``flatten`` else ``(N, C, H, W)``.

    The object is a plain, picklable class; given the same generator state it is deterministic.

    Args:
        mean, std: per-channel statistics (on the ``[0, 1]`` scale), or ``None`` for no normalisation.
        crop_padding: zero padding of the random crop (``0`` = no crop).
        hflip: random horizontal flips while training.
        permutation: ``int64`` tensor holding a permutation of ``0..C*H*W-1``, or ``None``.
        flatten: return ``(N, C*H*W)`` instead of ``(N, C, H, W)``.
        crop_size: side of the random-resized (training) / centre (evaluation) crop, or ``None``.
        cutout: side of the training cutout square (``0``: none).

    Raises:
        ValueError: ``crop_padding < 0``, ``crop_size < 1``, ``cutout < 0``, ``permutation`` is not a 1-D permutation, or ``mean`` and
            ``std`` are not both given or both ``None``.
    """

    def __init__(self, mean: Optional[Stats] = None, std: Optional[Stats] = None, crop_padding: int = 0,
                 hflip: bool = False, permutation: Optional[torch.Tensor] = None, flatten: bool = False,
                 crop_size: Optional[int] = None, cutout: int = 0) -> None:
        if (mean is None) != (std is None):
            raise ValueError("ImageTransform: give both mean and std, or neither")
        if crop_padding < 0:
            raise ValueError(f"ImageTransform: crop_padding must be >= 0, got {crop_padding}")
        if crop_size is not None and crop_size < 1 or cutout < 0:
            raise ValueError(f"ImageTransform: crop_size must be >= 1 and cutout >= 0, got {crop_size}, {cutout}")
        if permutation is not None:
            permutation = torch.as_tensor(permutation, dtype=torch.int64).detach().cpu().clone()
            if permutation.dim() != 1 or not torch.equal(torch.sort(permutation).values,
                                                         torch.arange(permutation.numel())):
                raise ValueError("ImageTransform: permutation must be a 1-D permutation of 0..D-1")
        self.mean = None if mean is None else tuple(float(v) for v in torch.as_tensor(mean).reshape(-1))
        self.std = None if std is None else tuple(float(v) for v in torch.as_tensor(std).reshape(-1))
        self.crop_padding = int(crop_padding)
        self.hflip = bool(hflip)
        self.permutation = permutation
        self.flatten = bool(flatten)
        self.crop_size = None if crop_size is None else int(crop_size)
        self.cutout = int(cutout)
        self._stats_on: dict = {}
        """Per device, made once: ``{(device, dtype): (mean, std)}`` shaped ``(1, C, 1, 1)`` and
        ``{("permutation", device): permutation}``, so a batch made on a GPU copies nothing to
        it and reads nothing back."""

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_stats_on"] = {}  # device tensors are not part of the transform's definition
        return state

    def __setstate__(self, state: dict) -> None:
        state.setdefault("_stats_on", {})
        self.__dict__.update(state)

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.device, x.dtype)
        if key not in self._stats_on:
            self._stats_on[key] = (_stats(self.mean, x.shape[1], x, "mean"), _stats(self.std, x.shape[1], x, "std"))
        m, s = self._stats_on[key]
        if m.shape[1] not in (1, x.shape[1]):  # cached for another channel count
            return normalize(x, self.mean, self.std)
        return (x - m) / s

    def __call__(self, x: torch.Tensor, train: bool = False,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        _check_images(x, "ImageTransform")
        if train:
            if self.crop_padding:
                x = random_crop(x, self.crop_padding, generator)
            if self.hflip:
                x = random_hflip(x, generator)
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        if self.crop_size is not None:
            x = random_resized_crop(x, self.crop_size, generator) if train else center_crop(x, self.crop_size)
        if self.mean is not None:
            if min(self.std) <= 0:
                raise ValueError("normalize: every std must be > 0")
            x = self._normalize(x)
        if train and self.cutout:
            x = cutout(x, self.cutout, generator)
        n = x.shape[0]
        if self.permutation is not None:
            d = x[0].numel() if n else self.permutation.numel()
            if d != self.permutation.numel():
                raise ValueError(f"ImageTransform: permutation has {self.permutation.numel()} entries "
                                 f"but an input has {d} values")
            shape = x.shape
            key = ("permutation", x.device)
            if key not in self._stats_on:
                self._stats_on[key] = self.permutation.to(x.device)
            x = x.reshape(n, -1)[:, self._stats_on[key]]
            if not self.flatten:
                x = x.reshape(shape)
        elif self.flatten:
            x = x.reshape(n, -1)
        return x.contiguous()

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Shape of one output for one input of shape ``input_shape`` ``(C, H, W)``."""
        shape = tuple(int(s) for s in input_shape)
        if self.crop_size is not None:
            shape = (shape[0], self.crop_size, self.crop_size)
        if self.flatten:
            d = 1
            for s in shape:
                d *= s
            return (d,)
        return shape

    def __repr__(self) -> str:
        perm = None if self.permutation is None else f"<{self.permutation.numel()}>"
        return (f"ImageTransform(mean={self.mean}, std={self.std}, crop_padding={self.crop_padding}, "
                f"hflip={self.hflip}, permutation={perm}, flatten={self.flatten}, crop_size={self.crop_size}, "
                f"cutout={self.cutout})")
