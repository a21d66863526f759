"""Class-map inference (CAM, LPCAM, saliency) and map files."""
