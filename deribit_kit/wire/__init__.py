"""Deribit's wire protocol, without I/O, shared by the client, the embedded exchange and the broker:
the JSON-RPC envelope (:mod:`.jsonrpc`) and its server half (:mod:`.rpcserver`), authentication
(:mod:`.auth`), channel names (:mod:`.channels`), instrument names (:mod:`.names`), credit-based
rate limits (:mod:`.credits`) and the closed vocabularies and limits (:mod:`.enums`).
"""
