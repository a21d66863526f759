"""Dataset readers, the synthetic benchmark, transforms and mask/label IO."""
