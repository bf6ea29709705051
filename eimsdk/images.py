"""Input policy for images and prompts: one documented conversion for every family.

Images: paths, PIL images, numpy arrays (H, W[, C], uint8/uint16/float in [0, 1]) or tensors
(B, 3, H, W in [-1, 1]) are accepted. PIL inputs are EXIF-transposed; RGBA/LA/P-with-transparency are
composited on white; L, P, CMYK, I;16, I and F become RGB (16-bit and float scaled to 8-bit range). Files
that declare more than ``MAX_IMAGE_PIXELS`` pixels (decompression bombs) and animated images (GIF, APNG,
WebP with more than one frame) are refused; a camera's multi-picture JPEG (MPO) uses its primary image.

Size: the model size is ``size`` if given (a larger size than the model's own is allowed; memory grows with
its square). Otherwise it is the model's own size (``default_size``: the transformer's sample size times the
VAE factor, as diffusers does), with the image's aspect ratio kept: the model size has at most the pixel area
of the default size, each side a multiple of the family's ``image_multiple`` (at least one multiple). A
256x256 photo on a 32x32 model is encoded at 32x32; a 4000x3000 one at 28x36 (H, W). The image is resized
with Lanczos; outputs can be resized back to the original size.

Prompts: must be non-empty strings; prompts longer than the model's token limit are truncated by the
tokenizer, with a warning naming the limit.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from eimsdk.errors import InputError

#: Images that declare more pixels than this are refused before decoding (PIL's own warning threshold).
MAX_IMAGE_PIXELS = 89_478_485

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
                _check_declared(im, name, str(path))
                im.load()
                image = im.copy() if im.format != "MPO" else im.convert("RGB")
                image.info.update(im.info)
                exif = im.getexif()
        except Image.DecompressionBombError as exc:
            raise InputError(f"{name}={str(path)!r} declares more than {MAX_IMAGE_PIXELS} pixels ({exc}); "
                             "resize it to a photograph's size first") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
            raise InputError(f"{name}={str(path)!r} could not be read as an image ({exc}); pass a valid PNG, "
                             "JPEG or WebP file") from None
        if exif:
            image.getexif().update(exif)
    if isinstance(image, np.ndarray):
        image = _array_to_pil(image, name)
    if not isinstance(image, Image.Image):
        raise InputError(f"{name} must be a path, PIL.Image, numpy array or tensor, got {type(image).__name__}")
    _check_declared(image, name, "the image")
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
        arr = np.asarray(image, dtype=np.float32)  # float32 holds 16-bit values exactly; half the memory
        scale = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        if mode == "F" and arr.max() <= 1.0:
            scale = 1.0
        image = Image.fromarray(np.clip(arr / scale * 255.0, 0, 255).round().astype(np.uint8)).convert("RGB")
    elif mode != "RGB":
        image = image.convert("RGB")
    return image


def _check_declared(im: "Image.Image", name: str, where: str) -> None:
    """Refuse, before decoding, an image that declares too many pixels or more than one frame."""
    if im.width * im.height > MAX_IMAGE_PIXELS:
        raise InputError(f"{name}={where!r} declares {im.width}x{im.height} pixels, more than {MAX_IMAGE_PIXELS}; "
                         "resize it to a photograph's size first")
    frames = getattr(im, "n_frames", 1)
    if frames > 1 and im.format != "MPO":
        raise InputError(f"{name}={where!r} is an animated {im.format or 'image'} with {frames} frames; eimsdk edits "
                         "one still image: save the frame you want as a PNG first")


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


def fit_area(size_hw: tuple[int, int], default_size: tuple[int, int], multiple: int) -> tuple[int, int]:
    """The model size for an image of (H, W): its aspect ratio, at most ``default_size``'s area, sides multiples."""
    h, w = size_hw
    area = default_size[0] * default_size[1]
    exact_h, exact_w = math.sqrt(area * h / w), math.sqrt(area * w / h)
    out_h, out_w = model_size((exact_h, exact_w), multiple)
    if out_h * out_w > area:  # rounding (or the one-multiple minimum) grew the area: shorten the longer side
        if out_h >= out_w:
            out_h = max(multiple, area // out_w // multiple * multiple)
        else:
            out_w = max(multiple, area // out_h // multiple * multiple)
    return out_h, out_w


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
        target = size or _default_target((h, w), multiple, default_size)
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
    target = size or _default_target(original[0], multiple, default_size)
    _check_size(target, multiple, name)
    arrays = []
    for im in pils:
        if (im.height, im.width) != tuple(target):
            im = im.resize((target[1], target[0]), Image.LANCZOS)
        arrays.append(np.asarray(im, dtype=np.float32) / 127.5 - 1.0)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous(), original


def _default_target(size_hw: tuple[int, int], multiple: int, default_size: tuple[int, int] | None
                    ) -> tuple[int, int]:
    return fit_area(size_hw, default_size, multiple) if default_size else model_size(size_hw, multiple)


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
    if encoder is not None:
        for i, p in enumerate(prompts):
            unknown = unknown_words(encoder, p)
            if unknown:
                warnings.warn(f"{name}[{i}] has words not in this model's vocabulary ({', '.join(map(repr, unknown))}"
                              "); the model reads them as an unknown token, so they do not steer the edit",
                              stacklevel=3)
    return prompts


def unknown_words(encoder: Any, prompt: str) -> list[str]:
    """Words of ``prompt`` that one of the encoder's tokenizers (``tokenizer``, ``tokenizer_2``, ...) maps to its
    unknown token, in either their written or their lower-case form."""
    words = []
    for attr in ("tokenizer", "tokenizer_2", "tokenizer_3"):
        tokenizer = getattr(encoder, attr, None)
        unk = getattr(tokenizer, "unk_token_id", None)
        if tokenizer is None or unk is None:
            continue
        for word in prompt.split():
            if word not in words and all(unk in tokenizer(form, add_special_tokens=False).input_ids
                                         for form in (word, word.lower())):
                words.append(word)
    return words
