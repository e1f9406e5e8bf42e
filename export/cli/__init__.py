"""The `resnet-deploy` console entry point: the parser and one module per command group.

The only export module that may import serving/."""
