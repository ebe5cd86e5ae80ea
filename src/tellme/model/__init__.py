"""The model: configuration, weight packing, and the native forward pass behind `Model`."""
