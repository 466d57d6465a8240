"""Reading a radiograph with a trained model: the predictor (ONNX Runtime), evaluation, the bundled model. No torch."""
