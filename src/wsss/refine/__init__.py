"""Refinement of class maps into pseudo masks: dense CRF, affinity labels, random walk."""
