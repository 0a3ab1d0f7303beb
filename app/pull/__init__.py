"""Pull mode: detectors defined in a YAML file read Prometheus, score each series group
with a named model, and export anomaly scores and expected bands on /metrics
(docs/pull.md)."""
