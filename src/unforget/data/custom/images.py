"""Image helpers of the own-data benchmarks: batched resizing, channel conversion, image-file decoding."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from unforget.data.custom.options import _check_choice
from unforget.errors import DataError

#: File name endings (lower case) read as images by :func:`image_folder_benchmark`.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
#: Ways to bring an image to ``image_size``.
RESIZE_MODES = ("stretch", "center-crop")


def _cover_size(h: int, w: int, th: int, tw: int) -> tuple[int, int]:
    """Size ``(h', w')`` of an ``h x w`` image scaled (aspect kept) to cover ``th x tw``."""
    s = max(th / h, tw / w)
    return max(th, int(round(h * s))), max(tw, int(round(w * s)))


def resize_images(x: torch.Tensor, size: Sequence[int], resize: str = "stretch",
                  chunk_values: int = 1 << 24) -> torch.Tensor:
    """Resize a batch of images to ``size``, batched with :func:`torch.nn.functional.interpolate`.

    Bilinear with antialiasing (as Pillow's bilinear resize, which :func:`image_folder_benchmark`
    uses). ``"stretch"`` maps the whole image onto ``size``; ``"center-crop"`` scales it (aspect
    ratio kept) so that it covers ``size``, then cuts the centre. Images already of ``size`` are
    returned unchanged (bit for bit).

    Args:
        x: images ``(N, C, H, W)``, ``uint8`` (``0..255``) or floating (``[0, 1]``).
        size: ``(height, width)``.
        resize: ``"stretch"`` or ``"center-crop"``.
        chunk_values: at most this many input values are converted to float at once (memory cap).

    Returns:
        ``(N, C, height, width)`` tensor of ``x``'s dtype (``uint8`` results are rounded and clamped).

    Raises:
        DataError: ``resize`` is not one of :data:`RESIZE_MODES`.
        ValueError: ``x`` is not 4-D.
    """
    _check_choice(resize, RESIZE_MODES, "resize")
    if x.dim() != 4:
        raise ValueError(f"resize_images: expected (N, C, H, W), got shape {tuple(x.shape)}")
    th, tw = int(size[0]), int(size[1])
    n, c, h, w = x.shape
    if (h, w) == (th, tw):
        return x
    rh, rw = (th, tw) if resize == "stretch" else _cover_size(h, w, th, tw)
    top, left = (rh - th) // 2, (rw - tw) // 2
    step = max(1, chunk_values // max(1, c * h * w))
    out = torch.empty((n, c, th, tw), dtype=x.dtype)
    for i in range(0, n, step):
        b = x[i:i + step].float()
        if (rh, rw) != (h, w):
            b = F.interpolate(b, size=(rh, rw), mode="bilinear", align_corners=False, antialias=True)
        b = b[:, :, top:top + th, left:left + tw]
        if x.dtype == torch.uint8:
            b = b.round_().clamp_(0, 255)
        else:
            b = b.clamp_(0.0, 1.0)
        out[i:i + step] = b.to(x.dtype)
    return out


def convert_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Convert images ``(N, C, H, W)`` with ``C`` in ``{1, 3, 4}`` to ``channels`` (1 or 3).

    As Pillow's ``convert``: 4 channels (RGBA) drop alpha; RGB to grey is
    ``L = (299 R + 587 G + 114 B) / 1000`` (ITU-R 601-2); grey to RGB repeats the channel.
    ``uint8`` stays ``uint8`` (rounded), floating stays floating.

    Raises:
        ValueError: ``x`` is not 4-D, or ``C`` / ``channels`` is unsupported.
    """
    if x.dim() != 4 or x.shape[1] not in (1, 3, 4) or channels not in (1, 3):
        raise ValueError(f"convert_channels: cannot convert shape {tuple(x.shape)} to {channels} channel(s)")
    if x.shape[1] == 4:
        x = x[:, :3]
    c = x.shape[1]
    if c == channels:
        return x
    if channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous()
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32).reshape(1, 3, 1, 1)
    grey = (x.float() * weights).sum(1, keepdim=True)
    return grey.round_().clamp_(0, 255).to(torch.uint8) if x.dtype == torch.uint8 else grey.to(x.dtype)


def _pil():
    try:
        from PIL import Image, ImageOps
    except ImportError as e:  # pragma: no cover - Pillow is a dependency
        raise DataError("reading image folders needs Pillow: pip install 'pillow>=9'") from e
    return Image, ImageOps


def _to_mode(im, mode: str, Image):
    """``im`` in Pillow mode ``mode`` (``"L"`` or ``"RGB"``): 16-bit and float images are scaled to
    8 bits (instead of clipped), palette images go through RGBA, alpha is dropped."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        hi = float(a.max()) if a.size else 0.0
        if im.mode == "F":  # float: [0, 1] scaled, else taken as 0..255
            scale = 255.0 if hi <= 1.0 else 1.0
        elif im.mode.startswith("I;16"):
            scale = 255.0 / 65535.0
        else:  # 32-bit "I": 16-bit data when above 255
            scale = 255.0 / 65535.0 if hi > 255 else 1.0
        im = Image.fromarray(np.clip(np.rint(a * scale), 0, 255).astype(np.uint8))
    elif im.mode in ("P", "PA"):
        im = im.convert("RGBA")
    return im if im.mode == mode else im.convert(mode)


def _load_image(path: Path, size: tuple[int, int], channels: int, resize: str) -> np.ndarray:
    """Decode ``path`` to ``uint8`` ``(channels, H, W)`` at ``size``; DataError naming the file if unreadable."""
    Image, ImageOps = _pil()
    th, tw = size
    try:
        with Image.open(path) as im:
            w, h = im.size
            if resize == "center-crop":
                need = max(_cover_size(h, w, th, tw))
            else:
                need = max(th, tw)
            if im.format == "JPEG":  # decode big JPEGs at a reduced scale (still >= the size needed)
                im.draft(None, (need, need))
            im = ImageOps.exif_transpose(im)
            im = _to_mode(im, "L" if channels == 1 else "RGB", Image)
            w, h = im.size
            if (h, w) != (th, tw):
                if resize == "stretch":
                    im = im.resize((tw, th), Image.BILINEAR)
                else:
                    rh, rw = _cover_size(h, w, th, tw)
                    top, left = (rh - th) // 2, (rw - tw) // 2
                    im = im.resize((rw, rh), Image.BILINEAR).crop((left, top, left + tw, top + th))
            a = np.asarray(im, dtype=np.uint8)
    except Exception as e:  # Pillow raises OSError, ValueError, SyntaxError, DecompressionBombError, ...
        raise DataError(f"cannot read image {path}: {type(e).__name__}: {e}; delete or replace the file") from e
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
