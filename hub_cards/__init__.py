"""Jinja templates of model and dataset cards; installed as `free_atm.hub_cards`."""
