"""`serving.crm_link`: the answer ids feedback refers to."""

from __future__ import annotations

import re
import threading

from serving import crm_link


def test_request_ids_are_32_hex_digits_and_never_repeat_across_threads() -> None:
    seen: list[list[str]] = [[] for _ in range(4)]

    def take(out: list[str]) -> None:
        out.extend(crm_link.new_request_id() for _ in range(3 * crm_link._IDS_PER_READ))

    threads = [threading.Thread(target=take, args=(out,)) for out in seen]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [i for out in seen for i in out]
    assert len(set(ids)) == len(ids) == 12 * crm_link._IDS_PER_READ
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
