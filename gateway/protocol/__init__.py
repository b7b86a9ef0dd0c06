"""Protocol adapters: Open Inference Protocol over gRPC and HTTP, thin converters over the data plane."""
