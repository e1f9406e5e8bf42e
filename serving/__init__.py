"""resnet-deploy, the serving side: runs what export/ wrote: clients for the TF Serving API, a local
TF Serving-compatible server, batch scoring. Imports export/ (records, bundle, deploy files), never the reverse."""
