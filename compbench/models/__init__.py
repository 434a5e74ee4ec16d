"""Models: the artifact interface, references to base models, on-disk formats, ONNX export, module surgery."""
