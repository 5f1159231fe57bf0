"""Unit files: parsing, normalized serialization and hashing, names, specifiers, and the settings fleetlet acts on."""
