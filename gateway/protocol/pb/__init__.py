"""Generated Open Inference Protocol stubs (Triton field set); regenerate with scripts/gen-proto."""
