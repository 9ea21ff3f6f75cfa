"""The accuracy stage: takes a model or a supernet slice and gives task accuracy (log-likelihood
multiple choice, perplexity) on fixed, split item sets (search / report), with standard errors.
"""
from hwnas.accuracy.evaluate import TaskSuite, evaluate
from hwnas.accuracy.tasks import get_task, local_jsonl_task, parse_tasks, register_task

__all__ = ['parse_tasks', 'get_task', 'register_task', 'local_jsonl_task', 'TaskSuite', 'evaluate']
