"""A community's config: its members, secret, clock, limits, floors and references, loaded from TOML."""
