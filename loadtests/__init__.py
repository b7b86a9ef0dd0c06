"""Load generator and benchmark scenarios; speaks only the public protocols."""
