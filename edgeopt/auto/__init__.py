"""``compile --precision auto``: build every precision a target supports, measure, keep the best.

Candidates (fp32, int8 from the ``int8`` recipe, w4a8 from ``w4a8`` where the target's
backend builds packed low-bit weights, ``mixed`` on request) are compressed, compiled for
the target, evaluated on the test split and timed at batch 1 and a larger batch. The pick
is the fastest candidate at batch 1 whose top-1 is within ``tolerance`` points of fp32 and
which is no slower than fp32 at any measured batch: a quantized artifact slower than fp32
(a common outcome of int8 on CPUs) is never shipped, and fp32 wins ties.

Where this machine cannot run the target's artifacts (aarch64 boards, GPUs, an x86 ISA
the host lacks) the closest measurement is taken and labelled as such: accuracy of the
aarch64 artifact itself under qemu-user when ``edgeopt.emulate`` can run it
(otherwise of a host build of the same candidate), latency of a host build as a proxy.
fp16 (CUDA targets) is the exception: its accuracy comes from the same fp16 module built
for this CPU, but a CPU's fp16 speed says nothing about a GPU's, so it is not timed and
never picked; it is shipped only when asked for (``--precision fp16``).

An ONNX file on the graph path (``graph.py``) has two candidates, fp32 and int8, built
by ``graph_pipeline.optimize_graph``, and the same never-slower rule.

The pipeline layer (docs/architecture.md): auto compresses (``pipeline``), compiles and
evaluates, so it sits above all three. ``rule.py`` holds the candidates and the pick
rule, ``run.py`` the builds and measurements, ``report.py`` the report.
"""

from edgeopt.auto.graph import GraphAutoResult, auto_compile_graph
from edgeopt.auto.rule import AutoOptions, Candidate, choose
from edgeopt.auto.run import AutoResult, auto_compile

__all__ = ["AutoOptions", "AutoResult", "Candidate", "GraphAutoResult", "auto_compile",
           "auto_compile_graph", "choose"]
