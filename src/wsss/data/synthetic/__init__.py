"""The synthetic benchmark: a seeded generator of a VOC-layout dataset with part annotation.

>>> from wsss.data.synthetic import SynthConfig, generate_synthetic
>>> stats = generate_synthetic("data/synth", SynthConfig(seed=0, train=800, val=200))
"""

from wsss.data.synthetic.config import SynthConfig
from wsss.data.synthetic.generate import generate_synthetic, load_synth_meta, part_palette
from wsss.data.synthetic.preview import preview_grid, save_preview
from wsss.data.synthetic.scene import SynthObject, SynthSample, render_sample
from wsss.data.synthetic.stats import SynthStats

__all__ = [
    "SynthConfig",
    "SynthObject",
    "SynthSample",
    "SynthStats",
    "generate_synthetic",
    "load_synth_meta",
    "part_palette",
    "preview_grid",
    "render_sample",
    "save_preview",
]
