"""servegate's deployment: the image's health check, Kubernetes manifests, and their static checks."""
