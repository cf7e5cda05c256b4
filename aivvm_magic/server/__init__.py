"""The reference Aivvm server (placeholder until implemented)."""
