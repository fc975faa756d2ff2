"""Datasets of images with masks: the schema, writing and loading."""

from .schema import encode_sample, map_image, mask_image, sample_features

__all__ = ["encode_sample", "map_image", "mask_image", "sample_features"]
