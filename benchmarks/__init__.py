"""The vidaccel benchmark harness: ``python -m benchmarks {models,loaders,train,stream,compare}``."""
