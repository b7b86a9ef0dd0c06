"""Dynamic batching: a pure stack/split part (collate) and a bounded async queue per model version."""
