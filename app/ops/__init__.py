"""Operations: Prometheus metrics, the server process, memory settings."""
