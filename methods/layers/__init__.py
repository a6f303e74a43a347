"""Layers shared by the method plugins (pooling, NetVLAD, whitening, attention, backbones)."""
