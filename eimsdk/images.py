"""Input policy for images and prompts: one documented conversion for every family.

Images: paths, PIL images, numpy arrays (H, W[, C], uint8/uint16/float in [0, 1]) or tensors
(B, 3, H, W in [-1, 1]) are accepted. PIL inputs are EXIF-transposed; RGBA/LA/P-with-transparency are
composited on white; L, P, CMYK, I;16, I and F become RGB (16-bit and float scaled to 8-bit range). The model
size is ``size`` if given, else the image's own size rounded to the nearest multiple of the family's
``image_multiple`` (at least one multiple); the image is resized to it with Lanczos (aspect changes by less
than one multiple). Outputs can be resized back to the original size.

Prompts: must be non-empty strings; prompts longer than the model's token limit are truncated by the
tokenizer, with a warning naming the limit.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from eimsdk.errors import InputError

if TYPE_CHECKING:
    import torch
    from PIL import Image


def load_image(image: Any, name: str = "image") -> "Image.Image":
    """Open/convert one image to an RGB PIL image by the policy above; errors name ``name``."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise InputError(f"{name}={str(path)!r} does not exist or is not a file")
        try:
            with Image.open(path) as im:
                im.load()
                image = im.copy() if im.format != "MPO" else im.convert("RGB")
                image.info.update(im.info)
                exif = im.getexif()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise InputError(f"{name}={str(path)!r} could not be read as an image ({exc}); pass a valid PNG, "
                             "JPEG or WebP file") from exc
        if exif:
            image.getexif().update(exif)
    if isinstance(image, np.ndarray):
        image = _array_to_pil(image, name)
    if not isinstance(image, Image.Image):
        raise InputError(f"{name} must be a path, PIL.Image, numpy array or tensor, got {type(image).__name__}")
    if image.width < 1 or image.height < 1:
        raise InputError(f"{name} is empty ({image.width}x{image.height})")
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not stop the edit
        pass
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba).convert("RGB")
    elif mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        scale = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        if mode == "F" and arr.max() <= 1.0:
            scale = 1.0
        image = Image.fromarray(np.clip(arr / scale * 255.0, 0, 255).round().astype(np.uint8)).convert("RGB")
    elif mode != "RGB":
        image = image.convert("RGB")
    return image


def _array_to_pil(arr: np.ndarray, name: str) -> "Image.Image":
    from PIL import Image

    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise InputError(f"{name} array must be (H, W), (H, W, 1|3|4), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError(f"{name} array contains NaN or Inf values")
    if arr.dtype == np.uint8:
        out = arr
    elif arr.dtype == np.uint16:
        out = (arr.astype(np.float64) / 65535.0 * 255.0).round().astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        if arr.min() < -1e-6 or arr.max() > 1 + 1e-6:
            raise InputError(f"{name} float array must be in [0, 1], got range [{arr.min():.3g}, {arr.max():.3g}]")
        out = (arr * 255.0).round().astype(np.uint8)
    else:
        raise InputError(f"{name} array dtype {arr.dtype} is not supported; use uint8, uint16 or float in [0, 1]")
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    return Image.fromarray(out, "RGBA" if out.shape[-1] == 4 else "RGB")


def model_size(size_hw: tuple[int, int], multiple: int) -> tuple[int, int]:
    """Round (H, W) to the nearest multiple (at least one multiple)."""
    return tuple(max(multiple, int(round(s / multiple)) * multiple) for s in size_hw)  # type: ignore[return-value]


def to_model_tensor(images: Any, *, multiple: int, size: tuple[int, int] | None = None,
                    default_size: tuple[int, int] | None = None, name: str = "image"
                    ) -> tuple["torch.Tensor", list[tuple[int, int]]]:
    """Images -> ((B, 3, H, W) float32 in [-1, 1], original (H, W) of each)."""
    import torch
    from PIL import Image

    if isinstance(images, torch.Tensor):
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[1] != 3:
            raise InputError(f"{name} tensor must be (B, 3, H, W) in [-1, 1], got shape {tuple(images.shape)}")
        if not torch.isfinite(images).all():
            raise InputError(f"{name} tensor contains NaN or Inf values")
        if images.min() < -1.001 or images.max() > 1.001:
            raise InputError(f"{name} tensor values must lie in [-1, 1], got [{images.min():.3g}, {images.max():.3g}]")
        h, w = images.shape[-2:]
        target = size or model_size((h, w), multiple)
        _check_size(target, multiple, name)
        if tuple(target) != (h, w):
            images = torch.nn.functional.interpolate(images.float(), size=tuple(target), mode="bicubic",
                                                     align_corners=False, antialias=True).clamp(-1, 1)
        return images.float(), [(h, w)] * images.shape[0]
    items = list(images) if isinstance(images, (list, tuple)) else [images]
    if not items:
        raise InputError(f"{name} is an empty list; pass at least one image")
    pils = [load_image(im, name if len(items) == 1 else f"{name}[{i}]") for i, im in enumerate(items)]
    original = [(im.height, im.width) for im in pils]
    target = size or model_size(original[0], multiple)
    _check_size(target, multiple, name)
    arrays = []
    for im in pils:
        if (im.height, im.width) != tuple(target):
            im = im.resize((target[1], target[0]), Image.LANCZOS)
        arrays.append(np.asarray(im, dtype=np.float32) / 127.5 - 1.0)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous(), original


def _check_size(size: Sequence[int], multiple: int, name: str) -> None:
    if len(size) != 2 or any(int(s) != s or s <= 0 or s % multiple for s in size):
        raise InputError(f"{name} size {tuple(size)} is invalid: height and width must be positive multiples of "
                         f"{multiple} for this model")


def to_pil(pixels: "torch.Tensor", sizes: list[tuple[int, int]] | None = None) -> list["Image.Image"]:
    """(B, 3, H, W) in [-1, 1] -> PIL images, resized back to ``sizes`` (H, W) when given."""
    from PIL import Image

    arr = ((pixels.detach().float().clamp(-1, 1) + 1) * 127.5).round().to("cpu").permute(0, 2, 3, 1).numpy()
    out = [Image.fromarray(a.astype(np.uint8)) for a in arr]
    if sizes:
        out = [im if (im.height, im.width) == tuple(s) else im.resize((s[1], s[0]), Image.LANCZOS)
               for im, s in zip(out, sizes)]
    return out


def check_prompts(prompts: str | Sequence[str], batch: int | None, encoder: Any = None, *, name: str = "prompt"
                  ) -> list[str]:
    """Validate prompts: strings, non-empty, one per image (a single prompt broadcasts); warn when too long."""
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise InputError(f"{name} is an empty list; pass one prompt per image")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise InputError(f"{name}[{i}] must be a string, got {type(p).__name__}")
        if not p.strip():
            raise InputError(f"{name}[{i}] is empty; describe the image in words (for example 'a photo of a cat')")
    if batch is not None and len(prompts) != batch:
        if len(prompts) == 1:
            prompts = prompts * batch
        else:
            raise InputError(f"got {len(prompts)} {name}s for {batch} images; pass one per image or a single one")
    if encoder is not None and hasattr(encoder, "count_tokens"):
        limit = encoder.max_prompt_tokens
        for i, p in enumerate(prompts):
            n = encoder.count_tokens(p)
            if n > limit:
                warnings.warn(f"{name}[{i}] has {n} tokens, more than this model's limit of {limit}; the text "
                              f"beyond it is ignored. Shorten the prompt to keep every word.", stacklevel=3)
    return prompts
