"""Why Puzzle-CAM loses body recall on the synthetic benchmark: what the tiles see.

Puzzle-CAM pulls a classifier's full-image maps ``A`` towards ``A_re``, the maps of the image's
four quarters merged back (METHODS.md §2). On the synthetic benchmark a body carries little
evidence of its class (its texture is shared by a pair of classes; only a tint of the class
colour, 4 % on ``hard-bodies`` and 11 % by default, separates them), so a quarter that holds
part of a body but not its head gives the tile network little reason to fire there. This
script measures that on trained classifiers, on the inputs they were trained on (long side
resized to 104 px, the middle of the training range, then padded or centre-cropped to the
96-px training crop):

- ``share``: which fraction of an object's body pixels lie in a quarter without its head;
- the mean of ``ReLU(A)`` and of ``ReLU(A_re)`` of the true class on head, near-body and far-body
  pixels and on the body pixels of headless quarters, each divided by the maximum of that class's
  full-image map (the scale the seed threshold 0.3 is applied on);
- ``tile recall``: the fraction of (quarter, present class) pairs with at least 5 % of the quarter
  covered by that class whose own tile logit is positive, for quarters with and without the head;
- ``|A − A_re|``: the mean gap on body pixels of the true class, the quantity that the
  reconstruction term (weight λ_re → 4) shrinks.

If the vanilla classifier's ``A_re`` is far below ``A`` on headless bodies and the Puzzle-CAM
classifier's ``A`` has come down to meet it, the reconstruction term, not the budget or a bug,
is what removes the body. Usage::

    .venv/bin/python benchmarks/puzzle_tiles.py runs/strategies-synth \\
        --runs cam puzzle --out benchmarks/results/puzzle_tiles.json
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wsss.data.datasets import build_dataset
from wsss.data.parts import BODY_FAR, BODY_NEAR, HEAD
from wsss.data.transforms import normalize, to_tensor
from wsss.io.atomic import atomic_write_json
from wsss.models import load_model
from wsss.train.tasks.cam.functional import merge, tile

CROP, LONG = 96, 104
MIN_TILE_COVER = 0.05


def training_view(image: np.ndarray, mask: np.ndarray, parts: np.ndarray):
    """Resize the long side to ``LONG`` and centre-crop/pad to ``CROP`` (pad: 0 / 255)."""
    h, w = mask.shape
    scale = LONG / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    x = F.interpolate(normalize(to_tensor(image))[None], size, mode="bilinear", antialias=True)
    labels = torch.from_numpy(np.stack([mask, parts])).float()[None]
    labels = F.interpolate(labels, size, mode="nearest")[0].to(torch.uint8)
    out_x = torch.zeros(1, 3, CROP, CROP)
    out_l = torch.full((2, CROP, CROP), 255, dtype=torch.uint8)
    sy, sx = max(0, (size[0] - CROP) // 2), max(0, (size[1] - CROP) // 2)
    dy, dx = max(0, (CROP - size[0]) // 2), max(0, (CROP - size[1]) // 2)
    ch, cw = min(CROP, size[0]), min(CROP, size[1])
    out_x[..., dy : dy + ch, dx : dx + cw] = x[..., sy : sy + ch, sx : sx + cw]
    out_l[:, dy : dy + ch, dx : dx + cw] = labels[:, sy : sy + ch, sx : sx + cw]
    return out_x, out_l[0].numpy(), out_l[1].numpy()


@torch.no_grad()
def diagnose(checkpoint: Path, data_root: Path, split: str, limit: int) -> dict[str, float]:
    """The statistics of the module docstring for one classifier."""
    net, _ = load_model(checkpoint)
    dataset = build_dataset("voc", data_root, split)
    sums: dict[str, list[float]] = {}

    def add(key: str, values: np.ndarray) -> None:
        s = sums.setdefault(key, [0.0, 0.0])
        s[0] += float(values.sum())
        s[1] += values.size

    half = CROP // 2
    quarters = [(0, 0), (0, half), (half, 0), (half, half)]  # tile order: TL, TR, BL, BR
    for index in range(min(limit, len(dataset))):
        sid = dataset.ids[index]
        x, mask, parts = training_view(
            dataset.load_image(sid), dataset.load_mask(sid), dataset.load_parts(sid)
        )
        full = net(x, with_maps=True).maps
        tiles = net(tile(x), with_maps=True)
        up = {
            "A": F.interpolate(full.relu(), (CROP, CROP), mode="bilinear", align_corners=False),
            "A_re": F.interpolate(
                merge(tiles.maps).relu(), (CROP, CROP), mode="bilinear", align_corners=False
            ),
        }
        for c in np.flatnonzero(dataset.load_label(sid)):
            obj = mask == c + 1
            if not obj.any():
                continue
            scale = float(up["A"][0, c].max()) + 1e-5
            maps = {k: (v[0, c] / scale).numpy() for k, v in up.items()}
            body = obj & np.isin(parts, (BODY_NEAR, BODY_FAR))
            headless = np.zeros_like(obj)
            for t, (y0, x0) in enumerate(quarters):
                window = (slice(y0, y0 + half), slice(x0, x0 + half))
                has_head = bool((obj[window] & (parts[window] == HEAD)).any())
                if not has_head:
                    headless[window] = True
                if obj[window].mean() >= MIN_TILE_COVER:
                    hit = float(tiles.logits[t, c] > 0)
                    add(f"tile_recall_{'head' if has_head else 'headless'}", np.array([hit]))
            add("share_headless_body", (headless[body]).astype(np.float64))
            for name, region in (
                ("head", obj & (parts == HEAD)),
                ("body_near", obj & (parts == BODY_NEAR)),
                ("body_far", obj & (parts == BODY_FAR)),
                ("body_headless", body & headless),
                ("body_with_head", body & ~headless),
            ):
                for key, m in maps.items():
                    add(f"{key}_{name}", m[region])
            add("gap_body", np.abs(maps["A"] - maps["A_re"])[body])
    return {k: s / max(n, 1) for k, (s, n) in sums.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="comparison run directory (train/<name>/...)")
    parser.add_argument("--runs", nargs="+", default=["cam", "puzzle"])
    parser.add_argument("--data", type=Path, default=None, help="benchmark [<run>/data]")
    parser.add_argument("--split", default="train")
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = args.data or args.run / "data"
    results = {
        name: diagnose(args.run / "train" / name, data, args.split, args.images)
        for name in args.runs
    }
    rows = [
        ("body pixels in a headless quarter", "share_headless_body", None),
        ("head: A / A_re", "A_head", "A_re_head"),
        ("near body: A / A_re", "A_body_near", "A_re_body_near"),
        ("far body: A / A_re", "A_body_far", "A_re_body_far"),
        ("body, quarter with head: A / A_re", "A_body_with_head", "A_re_body_with_head"),
        ("body, headless quarter: A / A_re", "A_body_headless", "A_re_body_headless"),
        ("mean |A − A_re| on body", "gap_body", None),
        ("tile logit > 0, quarter with head", "tile_recall_head", None),
        ("tile logit > 0, headless quarter", "tile_recall_headless", None),
    ]
    print(f"| statistic | {' | '.join(args.runs)} |\n|---|{'---|' * len(args.runs)}")
    for label, a, b in rows:
        cells = [f"{r[a]:.2f}" + (f" / {r[b]:.2f}" if b else "") for r in results.values()]
        print(f"| {label} | {' | '.join(cells)} |")
    if args.out:
        doc = {
            "images": args.images,
            "split": args.split,
            "cpu_count": os.cpu_count(),
            "results": results,
        }
        atomic_write_json(args.out, doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
