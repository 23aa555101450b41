"""The committed PersonaLlama weights and its role and evaluation data.

The module imports without torch; :func:`load_persona_model` imports torch and transformers
when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["default_model_path", "eval_data_dir", "load_persona_model", "role_data_dir"]

_DATA = Path(__file__).resolve().parent / "data"


def default_model_path() -> Path:
    """Folder of the committed PersonaLlama weights (Hugging Face format)."""
    return _DATA / "persona-llama"


def role_data_dir() -> Path:
    """Folder of PersonaLlama's role data in the reference layout.

    It holds ``roles/{persona}.json`` (``instruction``: 5 ``{"pos": system prompt}``,
    ``questions``, ``eval_prompt``), ``roles/default.json`` (neutral instructions only; ``""``
    means no system message and ``{model_name}`` is to be replaced by :data:`MODEL_NAME`) and
    ``questions.jsonl`` (``{"question", "id"}`` lines, the extraction questions).
    """
    return _DATA / "roles"


def eval_data_dir() -> Path:
    """Folder of PersonaLlama's evaluation data (held-out questions, drift conversations,
    role prompts, multiple choice; made by ``training/persona_eval_data.py``) and the demo's
    settings (``config.json``)."""
    return _DATA / "eval"


def load_persona_model(device: Any = "cpu", dtype: Optional[torch.dtype] = None) -> tuple[Any, Any]:
    """Load PersonaLlama and its tokenizer from :func:`default_model_path`.

    The weights are stored in float32; ``dtype`` (float32 by default) is what the model is
    cast to. Loading is offline: nothing is downloaded.

    Args:
        device: where to put the model (``"cpu"``, ``"cuda"``, a ``torch.device``).
        dtype: parameter dtype; ``None`` means ``torch.float32``.

    Returns:
        ``(model, tokenizer)``: a ``LlamaForCausalLM`` in eval mode and its tokenizer, whose
        chat template takes system/user/assistant messages and ``add_generation_prompt``.

    Raises:
        FileNotFoundError: the weights folder is missing (rebuild it with
            ``python training/train_persona_model.py --out axis_steer/personas/data/persona-llama``).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = default_model_path()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"PersonaLlama weights not found in {path}; rebuild them with "
            "`python training/train_persona_model.py --out axis_steer/personas/data/persona-llama`"
        )
    if dtype is None:
        dtype = torch.float32
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
    model.to(device)
    model.eval()
    return model, tokenizer
