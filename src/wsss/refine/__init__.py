"""Refinement of class maps into pseudo masks: dense CRF, affinity labels, random walk.

Modules (imported on use; ``crf``, ``affinity`` and ``pseudo_masks`` stay free of torch so
that their worker processes start fast):

- :mod:`wsss.refine.crf`: dense CRF presets, label/probability unaries, a process pool;
- :mod:`wsss.refine.affinity`: affinity labels (IRN, P-NOC saliency-aware) and their score;
- :mod:`wsss.refine.paths`: IRN's path indices, pair affinities and training targets;
- :mod:`wsss.refine.random_walk`: the random walk as sparse products;
- :mod:`wsss.refine.pseudo_masks`: maps + background → mask;
- :mod:`wsss.refine.folders`: the same over a dataset, from a map folder to a mask folder.
"""
