"""Deployment exports of the model: the frame detector as an ONNX graph, its ONNX Runtime
stand-in for inference, and the per-user cache of exports."""
