"""Training and export (torch, Lightning): datasets and augmentation, configs, the training loop, checkpoints, ONNX export."""
