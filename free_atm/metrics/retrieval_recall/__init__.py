"""The ``evaluate`` module is retrieval_recall.py; this file makes the folder ship as package data."""
