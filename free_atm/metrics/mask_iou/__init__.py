"""The ``evaluate`` module is mask_iou.py; this file makes the folder ship as package data."""
