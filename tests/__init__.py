"""The test suite; a package so that `tests.world` fixture modules import as plugins."""
