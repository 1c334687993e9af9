"""The mTLS ingest server that vehicles stream to."""
