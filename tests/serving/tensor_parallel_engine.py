"""One engine with ``tensor_parallel_size=2`` on the CPU, in its own process
(a process serves one caps file): runs the plans given as JSON on the
command line and prints one ``RESULT`` line (JSON) with each request's
prompt ids, new ids and readings, and what each rank reports of its caps.
Run by test_vllm_tensor_parallel.py."""

from __future__ import annotations

import json
import os
import sys


def main() -> None:
    spec = json.loads(sys.argv[1])
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    # one OpenMP thread group per rank; vLLM's automatic binding asks for a
    # NUMA node per rank, which a 2-core machine does not have
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "0|1")
    from vllm import SamplingParams

    from axis_steer.serving import capped_llm, readings, request_options

    from serving_fixtures import ENGINE_KW  # this folder is the script's, so on sys.path

    llm = capped_llm(spec["model"], spec["caps"], **ENGINE_KW, tensor_parallel_size=2, distributed_executor_backend="mp")
    params = [SamplingParams(max_tokens=spec["max_tokens"], temperature=0.0, ignore_eos=True,
                             extra_args=request_options(cap, readings=True)) for _, cap in spec["plans"]]
    outs = llm.chat([messages for messages, _ in spec["plans"]], params, use_tqdm=False)
    result = {
        "prompts": [list(o.prompt_token_ids) for o in outs],
        "tokens": [list(o.outputs[0].token_ids) for o in outs],
        "readings": readings(llm, outs),
        "info": llm.collective_rpc("axis_steer_rpc", args=("info",)),
    }
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
