"""The training stage: takes a supernet and training text, and gives a supernet fine-tuned once
with sampled subnets (InstaTune, sandwich rule, in-place distillation), saved with its search space.
"""
from hwnas.train.data import load_training_data, read_examples
from hwnas.train.instatune import TrainConfig, TrainResult, register_strategy, train

__all__ = ['TrainConfig', 'TrainResult', 'train', 'register_strategy', 'load_training_data', 'read_examples']
