"""Folders to pass as `custom_pipeline=`; installed as `free_atm.custom_pipelines`."""
