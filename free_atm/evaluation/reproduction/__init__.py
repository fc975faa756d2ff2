"""The Free-ATM paper's tables in miniature (``free-atm reproduce``): the settings, the three
datasets, the plan of runs and its shards, one row of one table, the cache of finished runs, and the
Markdown tables."""

from .cache import RunCache
from .settings import SETTINGS, ReproductionSettings
from .tables import TABLES, format_tables

__all__ = ["SETTINGS", "TABLES", "ReproductionSettings", "RunCache", "format_tables"]
