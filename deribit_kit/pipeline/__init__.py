"""The Kafka pipeline's pure parts: the message schema (:mod:`.schema`: topics, keys, the envelope
around Deribit's ``data``), murmur2 partitioning (:mod:`.murmur2`) and the source side's
continuity rules (:mod:`.continuity`). No I/O: the sink (:mod:`deribit_kit.sinks.kafka`) and the
source (:mod:`deribit_kit.upstream.kafka`) do the Kafka part with confluent-kafka.
"""

from .continuity import BookContinuity, PartitionSequence
from .murmur2 import murmur2, partition_for
from .schema import SCHEMA_VERSION, Envelope, SchemaError, decode, envelope, family_topic, marker, topics

__all__ = ["SCHEMA_VERSION", "BookContinuity", "Envelope", "PartitionSequence", "SchemaError", "decode",
           "envelope", "family_topic", "marker", "murmur2", "partition_for", "topics"]
