"""axis_steer inside vLLM: capping on every forward pass of a served model,
per request, with readings.

* :func:`capped_llm` - the offline ``vllm.LLM`` with a caps file installed;
  :func:`request_options` - a request's ``extra_args``; :func:`readings` -
  what its tokens read at the capped layers.
* The server: ``AXIS_STEER_VLLM_CAPS=caps.safetensors VLLM_PLUGINS=axis_steer
  vllm serve MODEL`` (``python -m axis_steer.serving serve MODEL`` with the
  CPU build of vLLM); requests set ``vllm_xargs`` (see
  :mod:`axis_steer.serving.config`); ``GET /axis_steer/readings?id=...``.

How the hooks get into vLLM's compiled model and read per-request tables:
:mod:`axis_steer.serving.plugin`. This package is used only by vLLM and by
its callers: the rest of axis_steer never imports it.
"""

from axis_steer.serving.config import OPTION_KEYS, RequestOptions, parse_request_options
from axis_steer.serving.offline import capped_llm, readings, request_options

__all__ = ["OPTION_KEYS", "RequestOptions", "capped_llm", "parse_request_options", "readings", "request_options"]
