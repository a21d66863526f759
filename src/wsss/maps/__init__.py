"""Maps of images: CAM and LPCAM class maps (saliency next), and the runner that writes them.

- :mod:`~wsss.maps.tta`: multi-scale + flip test-time augmentation, shared by every method;
- :mod:`~wsss.maps.methods`: the map-method registry (``MAP_METHODS``) and its base class;
- :mod:`~wsss.maps.cam`, :mod:`~wsss.maps.lpcam`: the built-in methods ``cam``, ``lpcam``
  (``lpcam`` and ``lpcam_f`` from one pass) and ``lpcam_f``;
- :mod:`~wsss.maps.runner`: :func:`~wsss.maps.runner.run_maps`, the maps of a dataset split
  (workers, batching, rank sharding, resume, settings records);
- :mod:`~wsss.maps.kmeans`: cosine k-means for LPCAM.
"""
