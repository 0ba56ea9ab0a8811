"""Task packages: each `train/tasks/<name>/` registers its Task with train.registry when imported.

A task imports the core (train.loop, train.sweep, ...); the core imports a task only by the name in
`config.task`. See docs/sweeps.md for what a task implements.
"""
