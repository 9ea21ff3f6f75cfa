"""The search stage (LINAS): takes a search space, an accuracy validator and a target's latency
(measured or predicted from a profile), and gives validated candidates, their Pareto front
(candidates.jsonl, pareto.json, summary.md) and the pick rule that chooses what to ship.
"""
from hwnas.search.config import SearchConfig
from hwnas.search.loop import run_search
from hwnas.search.objectives import OBJECTIVES, Constraint, constraints_from_options, parse_objectives
from hwnas.search.pareto import HypervolumeReference, pareto_front
from hwnas.search.picking import Pick, pick_fastest_within, pick_from_front, pick_from_search, speed_of
from hwnas.search.result import SearchResult, SearchState
from hwnas.search.store import SearchStore
from hwnas.search.strategies import make_strategy
from hwnas.search.synthetic import SyntheticValidator

__all__ = ['OBJECTIVES', 'Constraint', 'parse_objectives', 'constraints_from_options', 'SearchConfig', 'HypervolumeReference', 'pareto_front', 'Pick', 'pick_fastest_within', 'pick_from_front', 'pick_from_search', 'speed_of', 'make_strategy', 'SearchStore', 'SearchResult', 'SearchState', 'run_search', 'SyntheticValidator']
