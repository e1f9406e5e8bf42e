"""Files that a deployment reads, written at export time: TF Serving's configs and warmup
records (tfserving.py, warmup.py), and how to serve the OpenVINO IR with OpenVINO Model Server
(ovms.py). The serving side reads them through these same modules."""
