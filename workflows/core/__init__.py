"""The ground floor: what every other part of saddlescape builds on, importing nothing else of it.

params      Param: a parameter's default, type, range and when it applies; `resolve`
settings    the run settings of a cell (seeds, budget, dtype, ...)
schedules   step-size schedules and Staib et al.'s β₂ rule
rows        the results table's schema: every column of rows.parquet
component   Component: what a problem's or optimizer's name stands for
shapes      a problem's parameter structure: named tensors whose concatenation is x
suggest     did-you-mean hints and counted nouns
survival    censored durations, Kaplan–Meier, and the per-cell summary every stage uses
tuning      a tuned comparison: its tune: block, the coarse-to-fine search and the score of a point
saddles     which problems are the synthetic saddles (Hessian and noise in closed form)
compat      every private use of Ray, Ray Tune and torch, and the environment Ray runs in

problems/, optimizers/ and analysis/ import only this (tests/test_layers.py checks the contract).
"""
