"""The local server's front ends: the REST app, the gRPC service and the server process."""
