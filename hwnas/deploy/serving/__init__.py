"""Serving a bundle over HTTP (`hwnas serve`): an OpenAI-compatible API (FastAPI + uvicorn) over an
openvino-genai continuous-batching engine.

engine.py: `Engine` (one worker thread, bounded admission, incremental detokenization, stop strings);
api.py: `create_app` (routes, schemas, errors, auth, body limit); server.py: `prepare` (verify the
bundle first), `build_app`, `run_server` (uvicorn, graceful SIGTERM).
"""
from hwnas.deploy.serving.engine import Engine, EngineBusy, SamplingParams
from hwnas.deploy.serving.server import build_app, prepare, run_server

__all__ = ["Engine", "EngineBusy", "SamplingParams", "build_app", "prepare", "run_server"]
