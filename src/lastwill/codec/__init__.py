"""MQTT 3.1 / 3.1.1 / 5.0 wire format: packet objects, an incremental decoder and an encoder.

- ``codec.packets``: one dataclass per control packet (the interface with the core);
- ``codec.decoder.Decoder``: bytes -> packets, one instance per connection;
- ``codec.encoder.encode(packet, protocol_level)``: packet -> bytes;
- ``codec.properties``: the MQTT 5 property table (Table 2-4);
- ``codec.reason_codes``: ``ReasonCode`` and the 3.1.1 return code mapping;
- ``codec.primitives``: the data representations of section 1.5.
"""
