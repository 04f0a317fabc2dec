"""`serving.crm_link`: the answer ids feedback refers to."""

from __future__ import annotations

import re
import threading

from serving import crm_link


def test_request_ids_carry_their_version_and_never_repeat_across_threads() -> None:
    seen: list[list[str]] = [[] for _ in range(4)]

    def take(out: list[str]) -> None:
        out.extend(crm_link.new_request_id(7) for _ in range(3 * crm_link._IDS_PER_READ))

    threads = [threading.Thread(target=take, args=(out,)) for out in seen]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [i for out in seen for i in out]
    assert len(set(ids)) == len(ids) == 12 * crm_link._IDS_PER_READ
    assert all(re.fullmatch(r"v7-[0-9a-f]{32}", i) for i in ids)
    assert {crm_link.minted_version(i) for i in ids} == {7}


def test_only_a_minted_id_is_read_as_a_version() -> None:
    assert crm_link.minted_version("v12-" + "0" * 32) == 12
    for caller_id in ("crm-42", "v12-" + "0" * 31, "v12-" + "0" * 33, "V12-" + "0" * 32, "v-" + "0" * 32, "0" * 32):
        assert crm_link.minted_version(caller_id) is None
