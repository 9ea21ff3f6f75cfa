"""The model stage: takes a model spec (the bundled default, a GGUF file or a local HF folder) and
gives a LoadedModel, its SearchSpace of subnets (SubnetConfig), the elastic Supernet that slices one
set of weights into any subnet, dense extraction of a subnet, and calibration texts.
"""
from hwnas.model.calibration import load_texts
from hwnas.model.loading import LoadedModel, ModelSource, cache_dir, load_model, resolve_model
from hwnas.model.space import SearchSpace, SubnetConfig, parse_subnet_spec
from hwnas.model.supernet import Supernet, load_supernet

__all__ = ['LoadedModel', 'ModelSource', 'load_model', 'resolve_model', 'cache_dir', 'SearchSpace', 'SubnetConfig', 'parse_subnet_spec', 'Supernet', 'load_supernet', 'load_texts']
