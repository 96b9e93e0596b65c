"""Provider adapters behind one contract (`adapters.base`), and the registry of models."""
