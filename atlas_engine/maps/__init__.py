"""Brain maps: region-level results written onto their atlas (NIfTI/NRRD) and drawn.

>>> from atlas_engine.maps import write_maps, plot_map            # doctest: +SKIP
>>> write_maps("regions.csv", "annotation_full.nii.gz", "maps/", ontology=onto)
"""
from __future__ import annotations

from .plot import plot_map, plot_maps
from .write import read_region_table, region_lookup, write_maps

__all__ = ["plot_map", "plot_maps", "read_region_table", "region_lookup", "write_maps"]
