"""Tooling of the tests, the benchmarks and the docs (a throwaway PostgreSQL, the server in a thread,
the playground's screenshot): run from a checkout, never shipped in the wheel, never imported by the
runtime packages."""
