"""Evaluation of generators on the shapes world (an independent judge of what was drawn, the fidelity
breakdown, mask quality against exact truth) and the paper's tables in miniature (:mod:`.reproduction`)."""
