"""``Editor``: the programmatic API. Encode, Identify, Manipulate in three calls, or one (:meth:`Editor.edit`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from eimsdk.errors import BackendNotFoundError, InputError
from eimsdk.images import check_prompts, to_pil
from eimsdk.interfaces import Encoder
from eimsdk.memory import guard
from eimsdk.plugins import PluginManager, get_plugin_manager
from eimsdk.cost import Cost, CostMeter
from eimsdk.records import Direction, EditResult, JointLatent
from eimsdk.settings import check_device, check_strength, make_component

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float64": torch.float64}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[dtype]
    except KeyError:
        raise InputError(f"dtype={dtype!r} is not one of {sorted(DTYPES)}") from None


def read_pipeline_class(path: str) -> str:
    """The ``_class_name`` in a diffusers folder's (or cached hub repo's) ``model_index.json``."""
    local = Path(path)
    if local.exists():
        index = local / "model_index.json"
        if not index.is_file():
            raise BackendNotFoundError(f"{str(local)!r} has no model_index.json, so it is not a diffusers pipeline "
                                       "folder; pass backend=... explicitly or point at the pipeline's root folder")
    else:
        try:
            from huggingface_hub import hf_hub_download

            index = Path(hf_hub_download(path, "model_index.json"))
        except Exception as exc:  # noqa: BLE001 - offline, missing repo, gated model ...
            raise BackendNotFoundError(
                f"could not read model_index.json for {path!r} ({type(exc).__name__}: {exc}). Pass a local folder, "
                "download the model first (`huggingface-cli download ...`), or name the backend with backend=..."
            ) from exc
    try:
        return json.loads(index.read_text())["_class_name"]
    except (ValueError, KeyError) as exc:
        raise BackendNotFoundError(f"{str(index)!r} is not a valid model_index.json (no _class_name)") from exc


def resolve_model(path: str, pm: PluginManager) -> str:
    """A plugin-registered model name (``eimsdk plugins`` lists them) -> its folder; anything else unchanged."""
    if not Path(path).exists() and path in pm.components["model"]:
        return str(pm.load("model", path)())
    if not Path(path).exists() and "/" not in path:
        installed = ", ".join(pm.names("model")) or "none"
        raise BackendNotFoundError(f"model {path!r} is not a folder, a hub id (owner/name) or an installed model "
                                   f"name (installed: {installed}). {pm.blocked_hint()}".strip())
    return path


class Editor:
    """Edit images with a diffusion transformer through its joint latent space.

    >>> editor = Editor.from_pretrained("PixArt-alpha/PixArt-XL-2-512x512", device="cuda", dtype="float16")
    >>> result = editor.edit("cat.png", "a photo of a cat", "a photo of a smiling cat", strength=1.0)
    >>> result.image.save("smiling.png")
    """

    def __init__(self, encoder: Encoder, *, plugin_manager: PluginManager | None = None,
                 manipulator: str = "linear", manipulator_config: dict[str, Any] | None = None) -> None:
        if not isinstance(encoder, Encoder):
            raise InputError(f"encoder must be an eimsdk.interfaces.Encoder, got {type(encoder).__name__}")
        self.encoder = encoder
        self.plugins = plugin_manager or get_plugin_manager()
        self.manipulator_name = manipulator
        self.manipulator_config = dict(manipulator_config or {})

    # ----------------------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | os.PathLike, backend: str | None = None, *,
                        device: str | torch.device = "cpu", dtype: str | torch.dtype = torch.float32,
                        plugin_manager: PluginManager | None = None, **kwargs: Any) -> "Editor":
        """Load a model; the backend is picked from ``model_index.json`` (``_class_name``) unless named."""
        pm = plugin_manager or get_plugin_manager()
        check_device(device)
        path = resolve_model(str(path_or_hub_id), pm)
        if backend is None:
            class_name = read_pipeline_class(path)
            matches = pm.backend_for_pipeline_class(class_name)
            if not matches:
                installed = "; ".join(f"{c.name} ({', '.join(c.extra.get('pipeline_classes', ())) or '-'})"
                                      for c in pm.list("backend")) or "none"
                blocked = pm.blocked_hint()
                raise BackendNotFoundError(
                    f"no installed backend loads {class_name!r} (from {path!r}). Installed backends: {installed}. "
                    + (blocked or "Install the family's extra, e.g. `pip install \"eimsdk[pixart]\"`, or a plugin "
                       "that provides it."))
            if len(matches) > 1:
                raise BackendNotFoundError(f"several backends load {class_name!r}: {[c.name for c in matches]}; "
                                           "choose one with backend=...")
            component = matches[0]
        else:
            component = pm.get("backend", backend)
        encoder_cls = component.load()
        encoder = encoder_cls.from_pretrained(path, device=device, dtype=resolve_dtype(dtype), **kwargs)
        return cls(encoder, plugin_manager=pm)

    # ----------------------------------------------------------------------------------------------- generate
    def generate(self, prompt: str | Sequence[str], *, num_inference_steps: int = 20, guidance_scale: float = 4.5,
                 height: int | None = None, width: int | None = None, seed: int | None = None,
                 latents: torch.Tensor | None = None, negative_prompt: str | Sequence[str] | None = None,
                 output_type: str = "pil", progress: bool = False) -> Any:
        """Text-to-image, equal to the family's diffusers pipeline for the same seed or ``latents``."""
        prompts = check_prompts(prompt, None, self.encoder, name="prompt")
        if output_type not in ("pil", "np", "pt"):
            raise InputError(f"output_type={output_type!r} is not one of 'pil', 'np', 'pt'")
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise InputError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}")
        dh, dw = self.encoder.default_image_size
        height, width = height or dh, width or dw
        m = self.encoder.image_multiple
        if height % m or width % m or height <= 0 or width <= 0:
            raise InputError(f"height={height}, width={width}: both must be positive multiples of {m} for this model")
        guard(self.encoder, (height, width), len(prompts) * (1 if guidance_scale == 1.0 else 2), "generate")
        generator = torch.Generator("cpu").manual_seed(seed) if seed is not None else None
        negative = check_prompts(negative_prompt, len(prompts), None, name="negative_prompt") if negative_prompt else None
        pixels = self.encoder.generate(prompts, num_inference_steps=num_inference_steps,
                                       guidance_scale=guidance_scale, height=height, width=width,
                                       generator=generator, latents=latents, negative_prompts=negative,
                                       progress=progress)
        if output_type == "pt":
            return pixels
        if output_type == "np":
            return ((pixels.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
        return to_pil(pixels)

    # ----------------------------------------------------------------------------------------------- E, I, M
    def encode(self, image: Any, prompt: str | Sequence[str], *, size: tuple[int, int] | None = None) -> JointLatent:
        """Encode: images and the prompts that describe them -> joint latent ``J = (z0, c)``."""
        return self.encoder.encode(image, prompt, size=size)

    def source_pixels(self, image: Any, latent: JointLatent) -> torch.Tensor:
        """The source image as the model saw it: (1, 3, H, W) in [-1, 1] at the latent's image size."""
        from eimsdk.images import to_model_tensor

        pixels, _ = to_model_tensor(image, multiple=self.encoder.image_multiple, size=latent.image_size)
        return pixels

    def find_direction(self, image: Any, prompt: str | Sequence[str], target_prompt: str | Sequence[str], *,
                       method: str = "hsds", preserve_prompts: Sequence[str] = (), seed: int = 0,
                       size: tuple[int, int] | None = None, latent: JointLatent | None = None,
                       **config: Any) -> Direction:
        """Identify: a direction that turns ``prompt`` into ``target_prompt`` (several pairs are averaged).

        The global torch seed is set to ``seed`` first, so a direction depends only on its inputs. Its
        ``meta["cost"]`` is what finding it cost (measured here when the finder does not record it).
        """
        sources = check_prompts(prompt, None, self.encoder, name="prompt")
        targets = check_prompts(target_prompt, len(sources), self.encoder, name="target_prompt")
        preserve = check_prompts(preserve_prompts, None, self.encoder, name="preserve_prompts") if preserve_prompts else []
        finder = make_component(self.plugins.load("finder", method), config, f"finder {method!r}")
        _check_not_noop(self.encoder, sources, targets)
        if latent is None:
            latent = self.encode(image, sources[0], size=size)
        torch.manual_seed(seed)
        with CostMeter(self.encoder) as meter, torch.enable_grad():
            direction = finder.find(self.encoder, latent, targets, source_prompts=sources, preserve_prompts=preserve,
                                    seed=seed)
        direction.meta.setdefault("cost", meter.cost.as_dict())
        return direction

    def apply(self, image: Any, prompt: str | Sequence[str], direction: Direction | Sequence[tuple[Direction, float]],
              strength: float = 1.0, *, size: tuple[int, int] | None = None, restore_size: bool = False,
              latent: JointLatent | None = None, **manipulator_config: Any) -> EditResult:
        """Manipulate: move the image's joint latent along ``direction`` by ``strength`` and decode.

        ``direction`` may be a list of ``(direction, strength)`` pairs, which compose by addition.
        """
        edits = ([(direction, check_strength(strength))] if isinstance(direction, Direction)
                 else [(d, check_strength(s, f"direction[{i}] strength")) for i, (d, s) in enumerate(direction)])
        if not edits:
            raise InputError("direction is an empty list; pass a Direction or (Direction, strength) pairs")
        if latent is None:
            latent = self.encode(image, prompt, size=size)
        for d, _ in edits:
            d.check_fits(self.encoder, latent.z0)
        config = {**self.manipulator_config, **manipulator_config}
        manipulator = make_component(self.plugins.load("manipulator", self.manipulator_name), config,
                                     f"manipulator {self.manipulator_name!r}")
        with CostMeter(self.encoder) as meter:
            z_edit = manipulator.apply(self.encoder, latent, [(d.to(self.encoder.device), s) for d, s in edits])
            with torch.no_grad():
                pixels = self.encoder.decode_latents(z_edit).detach().float().cpu()
        images = to_pil(pixels, latent.original_sizes if restore_size else None)
        first = edits[0][0] if len(edits) == 1 else None
        return EditResult(images=images, direction=first, strengths=[s for _, s in edits], cost=meter.cost,
                          latents=z_edit.detach(), pixels=pixels)

    def edit(self, image: Any, prompt: str, target_prompt: str, strength: float = 1.0, *, method: str = "hsds",
             seed: int = 0, preserve_prompts: Sequence[str] = (), size: tuple[int, int] | None = None,
             restore_size: bool = False, finder_config: dict[str, Any] | None = None,
             **manipulator_config: Any) -> EditResult:
        """Encode, Identify, Manipulate: edit ``image`` from ``prompt`` toward ``target_prompt``."""
        strength = check_strength(strength, warn=False)
        make_component(self.plugins.load("manipulator", self.manipulator_name),
                       {**self.manipulator_config, **manipulator_config}, f"manipulator {self.manipulator_name!r}")
        latent = self.encode(image, prompt, size=size)
        guard(self.encoder, latent.image_size, 2 * latent.batch_size, "edit")  # an inversion/sampling step with CFG
        direction = self.find_direction(image, prompt, target_prompt, method=method, preserve_prompts=preserve_prompts,
                                        seed=seed, latent=latent, **(finder_config or {}))
        result = self.apply(image, prompt, direction, strength, latent=latent, restore_size=restore_size,
                            **manipulator_config)
        result.find_cost = Cost.from_dict(direction.meta["cost"])
        return result

    def sweep(self, image: Any, prompt: str, directions: dict[str, Direction] | Direction,
              strengths: Sequence[float] = (-1.0, -0.5, 0.0, 0.5, 1.0), *, size: tuple[int, int] | None = None,
              progress: bool = False, **manipulator_config: Any):
        """Strength sweep: a PNG-ready grid (source, then one column per strength; one row per direction)."""
        from eimsdk.viz import edit_grid

        if isinstance(directions, Direction):
            directions = {directions.meta.get("name", "direction"): directions}
        strengths = [check_strength(s, "strengths[]") for s in strengths]
        latent = self.encode(image, prompt, size=size)
        source = to_pil(self.source_pixels(image, latent))
        rows, results = [], {}
        items = [(n, d, s) for n, d in directions.items() for s in strengths]
        if progress:
            from tqdm.auto import tqdm

            items = tqdm(items, desc="sweep")
        for name, d, s in items:
            res = self.apply(image, prompt, d, s, latent=latent, **manipulator_config)
            results.setdefault(name, []).append(res)
        for name in directions:
            rows.append([source[0]] + [r.image for r in results[name]])
        grid = edit_grid(rows, row_labels=list(directions), col_labels=["source"] + [f"{s:+g}" for s in strengths])
        return grid, results


def _check_not_noop(encoder: Encoder, sources: Sequence[str], targets: Sequence[str]) -> None:
    """Refuse a target the model cannot tell from its prompt (equal after the encoder's normalisation)."""
    with torch.no_grad():
        cond = encoder.encode_prompts(list(sources) + list(targets))
    n = len(sources)
    for i, (source, target) in enumerate(zip(sources, targets)):
        if all(torch.allclose(v[i], v[n + i], rtol=1e-5, atol=1e-6) for v in cond.embeds.values()):
            raise InputError(f"target_prompt {target!r} encodes like prompt {source!r} (the text encoder normalises "
                             "case and spacing), so there is nothing to edit; change the words for the attribute you "
                             "want to move (e.g. 'red' -> 'blue')")
