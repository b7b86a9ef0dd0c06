"""ONNX Runtime sessions and execution-provider choice."""
