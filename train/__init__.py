"""absl binaries: meta_train, evaluate (run as ``python -m train.NAME``)."""
