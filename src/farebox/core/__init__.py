"""Pure logic, standard library only: money (integer pico-USD), pricing, usage and token counts,
budgets, periods, plans, routing, anomaly baselines, keys, caps, meters, tools, and the records
the stores and the request path share. No I/O; time and randomness are passed in, so tests
control both. The bottom layer: it imports nothing from the project outside ``core``.
"""
