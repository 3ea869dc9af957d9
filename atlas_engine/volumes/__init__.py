"""Reference atlas volumes: NRRD (CCFv3), MetaImage (old P56 annotation zip) and NIfTI
(human reference atlas, donor MRI), read in slabs or as lazy Dask arrays; voxel counts per
structure; structure masks."""
