"""The torch-free core every stage shares: the plan (plan.py), step parameters (params.py, typed.py),
the analysis registry (registry.py), the result envelope (result.py) and the run log (log.py).

Nothing here imports torch, transformers or plotly, and nothing here imports a stage above it:
the spec, dataset, compile, runtime, analyses and report stages all look down at these.
"""
