"""`hookbus run`: the job model (pre-hooks, backup, prune, post-hooks, rules),
the runner that plans and executes it, command execution and process trees.
Imports notify, delivery and the layers below them.
"""
