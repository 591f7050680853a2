"""Random parts of request-path ids (metering/ids.py): drawn from a pool of urandom bytes, so a
forked worker must not hand out the bytes its parent hands out next."""

import os

from metering.ids import random_hex
from metering.usage import account_of_generation, new_generation_id


def test_ids_do_not_repeat_and_keep_their_shape() -> None:
    ids = {new_generation_id("acct1") for _ in range(20_000)}  # several refills of the pool
    assert len(ids) == 20_000
    assert all(
        account_of_generation(i) == "acct1" and len(i) == len("gen-acct1-") + 20 for i in ids
    )


def test_a_forked_worker_draws_other_bytes_than_its_parent() -> None:
    random_hex(8)  # the pool is filled before the fork
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave at once
        os.write(write_end, random_hex(8).encode())
        os._exit(0)
    os.close(write_end)
    try:
        child = os.read(read_end, 64).decode()
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    assert len(child) == 16
    assert child != random_hex(8)
