"""Settings that shrink a pipeline run to a few dozen tiny images (the plumbing, not quality)."""

# A benchmark of 64-72 px images, crops that fit them, one epoch of the classifier.
TINY_BENCHMARK = [
    "synth.size_min=64",
    "synth.size_max=72",
    "synth.head_size=[10,20]",  # heads must fit a 64-px image (size_min // 3)
    "data.val_split=null",
    "data.crop_size=64",
    "data.resize_long=[64,72]",
    "train.epochs=1",
    "train.num_workers=0",
]

# The segmentation network of the same size.
TINY_SEGMENTATION = [
    "segmentation.train.epochs=1",
    "segmentation.train.num_workers=0",
    "segmentation.crop_size=64",
    "segmentation.resize_long=[64,72]",
]
