"""ONNX Runtime backend: QDQ/fp32 ONNX files run by onnxruntime's CPU provider."""

from edgeopt.compile.backends.protocol import FolderBackend

BACKEND = FolderBackend("onnxruntime", "ONNX files (QDQ int8, packed sub-8-bit weights) "
                        "run by ONNX Runtime", packed_lowbit=True)
