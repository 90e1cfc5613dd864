"""The semantic cache's embedders: the local all-MiniLM-L6-v2 int8 model on onnxruntime (the
``farebox[semantic]`` extra, offline), or an embeddings deployment this gateway serves; run off
the event loop behind a bounded queue (a full queue skips the lookup). Imports providers'
interfaces, config, core and errors; the gateway's cache stage calls into it."""
