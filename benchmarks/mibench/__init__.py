"""The benchmark harness's parts (benchmarks/harness.py is the command).

options   flags, sizes, goals          measure  wall time, CPU time, peak memory
bench     one model through mi-dsl's own Session, plus a bare transformers copy
methods   the ways of doing each item's work (seed, tl, mi, bare)
items     running an item's methods, agreement, ratios; the items of one model
processes items in a fresh process (start, the whole spec)
report    environment, the issue's goals (met or not), the markdown table
"""
