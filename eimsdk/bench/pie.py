"""PIE-Bench (Ju et al., 2023) loader: its ``mapping_file.json`` -> benchmark manifest items.

``mapping_file.json`` maps an id to ``image_path`` (under ``annotation_images/``), ``original_prompt`` and
``editing_prompt`` (edited words in [brackets], removed here), ``editing_instruction``, ``editing_type_id``
("0".."9") and ``mask``: the edited region, run-length coded over the 512 x 512 image. As in PIE-Bench's own
evaluation, the one-pixel image border counts as edited (it guards against annotation errors at the edges).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Sequence

from eimsdk.bench.manifest import ManifestItem, Region, parse_items, rle_decode
from eimsdk.errors import InputError

EDITING_TYPES = {
    "0": "random", "1": "change_object", "2": "add_object", "3": "delete_object",
    "4": "change_attribute_content", "5": "change_attribute_pose", "6": "change_attribute_color",
    "7": "change_attribute_material", "8": "change_background", "9": "change_style",
}
MASK_SHAPE = (512, 512)
REQUIRED = ("image_path", "original_prompt", "editing_prompt", "editing_type_id")


def clean_prompt(prompt: str) -> str:
    """Drop PIE-Bench's [bracket] marks of edited words and collapse spaces."""
    return re.sub(r"\s+", " ", prompt.replace("[", "").replace("]", "")).strip()


def pie_region(rle: list[int], shape: tuple[int, int] = MASK_SHAPE) -> Region:
    mask = rle_decode(rle, shape)
    mask[0, :] = mask[-1, :] = True
    mask[:, 0] = mask[:, -1] = True
    return Region.from_mask(mask)


def load_pie_bench(mapping_file: str | os.PathLike, *, images_root: str | os.PathLike | None = None,
                   editing_types: Sequence[str] | None = None, limit: int | None = None) -> list[ManifestItem]:
    """Manifest items for every entry of ``mapping_file`` (optionally only some editing types, the first ``limit``).

    Images are looked up under ``images_root`` (default: ``annotation_images`` beside the mapping file).
    """
    path = Path(mapping_file)
    if not path.is_file():
        raise InputError(f"mapping_file={str(path)!r} does not exist; pass PIE-Bench's mapping_file.json (the "
                         "dataset is not downloaded by eimsdk)")
    root = Path(images_root) if images_root is not None else path.parent / "annotation_images"
    if not root.is_dir():
        raise InputError(f"images_root={str(root)!r} is not a folder; PIE-Bench keeps its images in "
                         "annotation_images/ beside mapping_file.json, or pass images_root")
    try:
        mapping = json.loads(path.read_text())
    except ValueError as exc:
        raise InputError(f"mapping_file={str(path)!r} is not valid JSON ({exc})") from None
    if not isinstance(mapping, dict):
        raise InputError(f"mapping_file={str(path)!r} must be a JSON object of id -> entry")
    wanted = {str(t) for t in editing_types} if editing_types is not None else None
    rows = []
    for key, entry in mapping.items():
        missing = [f for f in REQUIRED if f not in entry]
        if missing:
            raise InputError(f"mapping_file entry {key!r} lacks {missing}; is this PIE-Bench's mapping_file.json?")
        type_id = str(entry["editing_type_id"])
        if wanted is not None and type_id not in wanted:
            continue
        image = root / entry["image_path"]
        if not image.is_file():
            raise InputError(f"mapping_file entry {key!r}: image {str(image)!r} does not exist")
        rows.append({
            "id": f"pie-{key}", "image": str(image), "source_prompt": clean_prompt(entry["original_prompt"]),
            "target_prompts": [clean_prompt(entry["editing_prompt"])],
            "attribute": EDITING_TYPES.get(type_id, f"type_{type_id}"),
            "region": pie_region(entry["mask"]).model_dump() if entry.get("mask") else None,
            "group": f"pie-{key}",
            "meta": {"editing_type_id": type_id, "editing_instruction": entry.get("editing_instruction", ""),
                     "blended_word": entry.get("blended_word", "")},
        })
        if limit is not None and len(rows) >= limit:
            break
    return parse_items(rows, where=f"mapping_file {str(path)!r}")
