"""A gRPC server on HTTP/2 written for the inference hot path (the `native` gRPC engine)."""
