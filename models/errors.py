"""Errors that models/ raises for settings that cannot work; launch.py prints them as one line."""


class ModelConfigError(ValueError):
  """A model config value that cannot work: names the key (`model.<field>`) and what is allowed."""


class PretrainedError(ValueError):
  """A pretrained checkpoint that cannot be loaded as asked (models/pretrained.py): names the file and the problem."""
