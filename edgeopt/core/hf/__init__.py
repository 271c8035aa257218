"""Hugging Face transformers folders in (``hf:PATH``): read the folder, export it to ONNX.

``folder.read_folder`` checks the folder and reads what sentence-transformers' config says
about pooling (no transformers import); ``export.export_hf`` builds the torch model with
transformers and writes the ONNX graph the graph path quantizes and the artifact ships.
"""

from edgeopt.core.hf.folder import HF_PREFIX, TASKS, HfFolder, is_hf_spec, read_folder

__all__ = ["HF_PREFIX", "TASKS", "HfFolder", "is_hf_spec", "read_folder"]
