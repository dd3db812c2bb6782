"""Real external components (Alertmanager, Prometheus, moto S3, exporters) for tests."""
