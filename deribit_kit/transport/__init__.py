"""The kit's I/O: the client's WebSocket (:mod:`.ws`) and HTTP (:mod:`.http`) transports and their
credit pacing (:mod:`.pacing`), the loopback HTTP+WebSocket server (:mod:`.server`) and the
Deribit-compatible endpoint on it (:mod:`.endpoint`) that the embedded exchange and the broker's
port share, and the Kafka plumbing (:mod:`.kafka`).
"""
