"""Directed product graph: degree-adaptive sampling (sampler), the dual-embedding
GNN (blade, torch) and pair scoring from its exported moments (scoring, numpy only).

Submodules are imported where used so that numpy-only callers never load torch.
"""
