"""The network (torch): backbones, heads, targets, losses, the FWT fill and the torch decoder."""
