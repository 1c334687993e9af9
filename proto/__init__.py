"""The wire schemas: protobuf records, the FlatBuffers envelope, the field catalog."""
