"""How metering's script calls reach Redis: batched per loop turn and pipelined on connections of
our own (one server), one batcher per master (a cluster), replicas asked to confirm settlements."""
