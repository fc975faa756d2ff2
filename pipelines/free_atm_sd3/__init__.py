"""Shim folder for `custom_pipeline=`; see pipeline.py."""
