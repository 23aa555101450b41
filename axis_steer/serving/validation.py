"""The check of each request's axis_steer options when vLLM admits it (front
end, before scheduling): a bad or unknown option is an error there - a
``ValueError`` from ``LLM.generate``, an HTTP 400 from the server - never a
request silently served without its cap. It takes the form vLLM offers for
such checks, a logits processor (entry point ``vllm.logits_processors``) that
leaves the logits untouched."""

from __future__ import annotations

import torch
from vllm.v1.sample.logits_processor import LogitsProcessor

from axis_steer.serving.config import parse_request_options


class RequestOptionsCheck(LogitsProcessor):
    """Validates ``extra_args`` (:func:`axis_steer.serving.config.parse_request_options`);
    changes no logits."""

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        parse_request_options(getattr(sampling_params, "extra_args", None))

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool) -> None:
        pass

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def is_argmax_invariant(self) -> bool:
        return True

    def update_state(self, batch_update) -> None:
        return None
