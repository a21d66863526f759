"""LPCAM: class activation maps from clustered local prototypes (METHODS.md §5).

- :mod:`~wsss.maps.lpcam.config`: :class:`PrototypeConfig`, the fitting settings;
- :mod:`~wsss.maps.lpcam.fit`: :func:`fit_prototypes` (features split by the CAM, cosine
  k-means, selection by the classifier);
- :mod:`~wsss.maps.lpcam.prototypes`: :class:`Prototypes`, selection and prototype files;
- :mod:`~wsss.maps.lpcam.maps`: LPCAM / LPCAM-F maps and the map methods ``lpcam`` (both
  outputs from one feature pass) and ``lpcam_f``.

What the benchmark measures about prototypes (their part make-up) is in
:mod:`wsss.diagnostics.prototypes`.
"""

from wsss.maps.lpcam.config import PrototypeConfig
from wsss.maps.lpcam.fit import Tagger, fit_prototypes
from wsss.maps.lpcam.maps import (
    LPCAMFMethod,
    LPCAMMethod,
    check_prototypes,
    lpcam_f_maps_batch,
    lpcam_map,
    lpcam_maps,
    lpcam_maps_batch,
)
from wsss.maps.lpcam.prototypes import (
    Prototypes,
    Selection,
    as_prototypes,
    class_scores,
    load_prototypes,
    save_prototypes,
    select_prototypes,
)

__all__ = [
    "LPCAMFMethod",
    "LPCAMMethod",
    "PrototypeConfig",
    "Prototypes",
    "Selection",
    "Tagger",
    "as_prototypes",
    "check_prototypes",
    "class_scores",
    "fit_prototypes",
    "load_prototypes",
    "lpcam_f_maps_batch",
    "lpcam_map",
    "lpcam_maps",
    "lpcam_maps_batch",
    "save_prototypes",
    "select_prototypes",
]
