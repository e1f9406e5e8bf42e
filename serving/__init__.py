"""resnet-deploy, the serving side: TF Serving configuration, clients and a local server."""
