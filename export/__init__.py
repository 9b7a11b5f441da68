"""absl binary: export_saved_model (run as ``python -m export.export_saved_model``)."""
