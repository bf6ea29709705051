"""Optional metrics and readers that need pretrained networks (CLIP, DINO, LPIPS), loaded from LOCAL paths only.

eimsdk never downloads weights. Each class takes the folder of a ``save_pretrained`` checkpoint (or, for LPIPS,
relies on the ``lpips`` package and its cached backbone) and fails with :class:`MissingWeightsError`, naming the
path and how to obtain the weights, when they are absent.

- :class:`ClipProbeReader`: zero-shot CLIP attribute reader. For attribute ``a`` with classes ``k`` and prompts
  ``q_ak``: ``P(k | x) = softmax_k(s * cos(E_img(x), E_txt(q_ak)))`` with CLIP's logit scale ``s``; the reading is the
  arg max. Real-image counterpart of the toy world's exact readers.
- :class:`ClipScore`: ``100 * max(cos(E_img(edit), E_txt(target prompt)), 0)`` (torchmetrics' CLIPScore, which
  PIE-Bench reports).
- :class:`DinoSimilarity`: cosine between the DINO [CLS] features of source and edit (content preservation).
- :class:`LpipsDistance`: LPIPS (Zhang et al., 2018) between source and edit, outside an optional region.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from eimsdk.errors import InputError
from eimsdk.interfaces import AttributeReader, EditMetric


class MissingWeightsError(InputError, FileNotFoundError):
    """Pretrained weights a metric needs are not on this machine (eimsdk never downloads them)."""


def local_weights(path: str | Path | None, *, owner: str, hub_example: str) -> Path:
    """Check that ``path`` is a local ``save_pretrained`` folder (has ``config.json``) and return it."""
    how = (f"eimsdk never downloads weights. On a machine with internet run `huggingface-cli download {hub_example} "
           f"--local-dir DIR` (or `from_pretrained('{hub_example}').save_pretrained(DIR)`), copy DIR here and pass "
           "its path")
    if path is None:
        raise MissingWeightsError(f"{owner} needs a local model folder; got none. {how}")
    p = Path(path).expanduser()
    if not p.exists():
        raise MissingWeightsError(f"{owner}={str(p)!r} does not exist. {how}")
    if not (p / "config.json").is_file():
        raise MissingWeightsError(f"{owner}={str(p)!r} has no config.json, so it is not a model folder. {how}")
    return p


def _pil_images(images: Any) -> list:
    from eimsdk.images import load_image, to_pil

    if isinstance(images, torch.Tensor):
        return to_pil(images[None] if images.ndim == 3 else images)
    if isinstance(images, (str, bytes)) or not isinstance(images, Sequence):
        raise InputError(f"images must be a list of images (PIL, paths, arrays) or a (B, 3, H, W) tensor, got "
                         f"{type(images).__name__}; wrap a single image in a list")
    return [load_image(im, f"images[{i}]") for i, im in enumerate(images)]


class _Clip:
    """A local CLIP model and its processor."""

    def __init__(self, model_path: str | Path, owner: str, device: str | torch.device) -> None:
        from transformers import CLIPModel, CLIPProcessor

        folder = local_weights(model_path, owner=owner, hub_example="openai/clip-vit-base-patch32")
        try:
            self.model = CLIPModel.from_pretrained(folder, local_files_only=True).to(device).eval()
            self.processor = CLIPProcessor.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise MissingWeightsError(f"{owner}={str(folder)!r} could not be loaded as a CLIP model with its processor "
                                      f"({type(exc).__name__}: {exc}); the folder needs the model, tokenizer and "
                                      "image-processor files that CLIPModel/CLIPProcessor.save_pretrained write") from exc
        self.device = torch.device(device)

    @torch.no_grad()
    def embed(self, images: list, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Unit image embeddings (B, E), unit text embeddings (P, E) and the logit scale."""
        pixels = self.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
        text = self.processor.tokenizer(list(prompts), padding=True, truncation=True, return_tensors="pt")
        out = self.model(input_ids=text["input_ids"].to(self.device),
                         attention_mask=text["attention_mask"].to(self.device),
                         pixel_values=pixels.to(self.device, self.model.dtype))
        return out.image_embeds.float(), out.text_embeds.float(), float(self.model.logit_scale.exp())


DEFAULT_PROBES: dict[str, list[str]] = {
    "colour": ["red", "green", "blue", "yellow", "white", "black"],
    "expression": ["smiling", "neutral"],
    "age": ["young", "old"],
    "style": ["photo", "painting"],
    "season": ["summer", "winter"],
}


class ClipProbeReader(AttributeReader):
    """Zero-shot CLIP reader of named attributes, from a local CLIP folder.

    ``attributes`` maps attribute -> class names (prompted with ``template``) or -> {class: prompt}; or it is the
    path of a JSON file holding that mapping. Default: :data:`DEFAULT_PROBES`.
    """

    name = "clip-probe"
    attributes = {k: list(v) for k, v in DEFAULT_PROBES.items()}

    def __init__(self, model_path: str | Path | None = None,
                 attributes: Mapping[str, Sequence[str] | Mapping[str, str]] | str | Path | None = None, *,
                 template: str = "a photo of {}", device: str | torch.device = "cpu") -> None:
        if "{}" not in template:
            raise InputError(f"template={template!r} must contain '{{}}' where the class name goes")
        spec = self._attribute_spec(attributes)
        self.prompts: dict[str, dict[str, str]] = {
            a: (dict(c) if isinstance(c, Mapping) else {k: template.format(k) for k in c}) for a, c in spec.items()}
        for a, classes in self.prompts.items():
            if len(classes) < 2:
                raise InputError(f"attributes[{a!r}] has {len(classes)} class(es); a probe needs at least two")
        self.attributes = {a: list(c) for a, c in self.prompts.items()}
        self.clip = _Clip(model_path, "ClipProbeReader model_path", device)

    @staticmethod
    def _attribute_spec(attributes: Any) -> Mapping[str, Any]:
        if attributes is None:
            return DEFAULT_PROBES
        if isinstance(attributes, (str, Path)):
            path = Path(attributes)
            if not path.is_file():
                raise InputError(f"attributes={str(path)!r} is not a file; pass a JSON file mapping attribute -> "
                                 "class names, or the mapping itself")
            attributes = json.loads(path.read_text())
        if not isinstance(attributes, Mapping) or not attributes:
            raise InputError(f"attributes must map attribute -> class names, got {attributes!r}")
        return attributes

    def probabilities(self, images: Any) -> list[dict[str, dict[str, float]]]:
        """One dict per image: attribute -> {class: probability}."""
        pil = _pil_images(images)
        flat = [(a, k, q) for a, classes in self.prompts.items() for k, q in classes.items()]
        img, txt, scale = self.clip.embed(pil, [q for _, _, q in flat])
        logits = scale * img @ txt.T  # (B, P)
        out: list[dict[str, dict[str, float]]] = [{} for _ in pil]
        start = 0
        for a, classes in self.prompts.items():
            p = logits[:, start : start + len(classes)].softmax(dim=1)  # (B, C_a)
            for b in range(len(pil)):
                out[b][a] = {k: float(v) for k, v in zip(classes, p[b])}
            start += len(classes)
        return out

    def read(self, images: Any) -> list[dict[str, Any]]:
        return [{a: max(p, key=p.get) for a, p in item.items()} for item in self.probabilities(images)]


class ClipScore(EditMetric):
    """CLIP score of edited images against their target prompts (100 x clipped cosine), from a local CLIP folder."""

    name = "clip-score"

    def __init__(self, model_path: str | Path | None = None, *, device: str | torch.device = "cpu") -> None:
        self.clip = _Clip(model_path, "ClipScore model_path", device)

    def __call__(self, source: torch.Tensor, edited: torch.Tensor, *, item: Any) -> dict[str, float | None]:
        """``clip_score`` of the edit against the item's first target prompt."""
        return {"clip_score": self.score(edited, [item.target_prompts[0]])[0]}

    def score(self, images: Any, prompts: Sequence[str]) -> list[float]:
        """One score per image, against its prompt."""
        pil = _pil_images(images)
        if len(prompts) != len(pil):
            raise InputError(f"got {len(prompts)} prompts for {len(pil)} images; pass one prompt per image")
        img, txt, _ = self.clip.embed(pil, prompts)
        return [100.0 * max(float(c), 0.0) for c in (img * txt).sum(dim=1)]


class DinoSimilarity(EditMetric):
    """Cosine similarity of DINO [CLS] features of source and edited images, from a local DINO/DINOv2 folder."""

    name = "dino-similarity"

    def __init__(self, model_path: str | Path | None = None, *, device: str | torch.device = "cpu") -> None:
        from transformers import AutoImageProcessor, AutoModel

        folder = local_weights(model_path, owner="DinoSimilarity model_path", hub_example="facebook/dinov2-small")
        try:
            self.model = AutoModel.from_pretrained(folder, local_files_only=True).to(device).eval()
            self.processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise MissingWeightsError(f"DinoSimilarity model_path={str(folder)!r} could not be loaded with its image "
                                      f"processor ({type(exc).__name__}: {exc})") from exc
        self.device = torch.device(device)

    @torch.no_grad()
    def features(self, images: Any) -> torch.Tensor:
        pixels = self.processor(images=_pil_images(images), return_tensors="pt")["pixel_values"]
        hidden = self.model(pixel_values=pixels.to(self.device, self.model.dtype)).last_hidden_state  # (B, T, D)
        return torch.nn.functional.normalize(hidden[:, 0].float(), dim=-1)  # (B, D)

    def __call__(self, source: torch.Tensor, edited: torch.Tensor, *, item: Any) -> dict[str, float | None]:
        """``dino_similarity`` of source and edit."""
        return {"dino_similarity": self.similarity(source, edited)[0]}

    def similarity(self, sources: Any, edited: Any) -> list[float]:
        """One cosine per (source, edited) pair."""
        a, b = self.features(sources), self.features(edited)
        if a.shape != b.shape:
            raise InputError(f"got {a.shape[0]} sources for {b.shape[0]} edited images; pass pairs")
        return [float(c) for c in (a * b).sum(dim=1)]


class LpipsDistance(EditMetric):
    """LPIPS between source and edited images (lower = more alike), outside an optional edited region.

    Needs the ``lpips`` package and its backbone's ImageNet weights in the torch hub cache; nothing is downloaded.
    """

    name = "lpips"

    def __init__(self, net: str = "alex", *, device: str | torch.device = "cpu") -> None:
        if net not in ("alex", "vgg", "squeeze"):
            raise InputError(f"net={net!r} is not one of 'alex', 'vgg', 'squeeze'")
        try:
            import lpips
        except ImportError as exc:
            raise MissingWeightsError("LPIPS needs the `lpips` package, which is not installed: `pip install lpips`, "
                                      "then put its backbone weights in the torch hub cache "
                                      f"({torch.hub.get_dir()}/checkpoints) on a machine with internet") from exc
        try:
            self.model = lpips.LPIPS(net=net, verbose=False).to(device).eval()
        except Exception as exc:  # noqa: BLE001 - torchvision tries to download the backbone and fails offline
            raise MissingWeightsError(f"LPIPS could not load the {net!r} backbone ({type(exc).__name__}: {exc}); copy "
                                      f"its torchvision weights into {torch.hub.get_dir()}/checkpoints") from exc
        self.device = torch.device(device)

    def __call__(self, source: torch.Tensor, edited: torch.Tensor, *, item: Any) -> dict[str, float | None]:
        """``lpips`` of source and edit, and ``lpips_outside`` the item's edited region when it has one."""
        from eimsdk.metrics.pixels import whole_and_outside

        return whole_and_outside(self.distance, self.name, source, edited, item)

    @torch.no_grad()
    def distance(self, source: Any, edited: Any, region: np.ndarray | None = None) -> float:
        """LPIPS of one pair, outside ``region`` when given."""
        from eimsdk.metrics.pixels import _prepare

        a, b, _ = _prepare(source, edited, region)  # (3, H, W) in [0, 1], region zeroed in both
        d = self.model(a[None].float().to(self.device) * 2 - 1, b[None].float().to(self.device) * 2 - 1)
        return float(d.flatten()[0])
