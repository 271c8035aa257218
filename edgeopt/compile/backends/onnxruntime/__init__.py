"""ONNX Runtime backend: QDQ/fp32 ONNX files run by onnxruntime's CPU provider."""
