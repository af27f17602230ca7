"""The visitor appointment system: configuration, storage, domain and integrations (no HTTP)."""
