"""What the client scripts share: checks that raise with their details, and the sandbox's own
control endpoints (`/_sandbox/faults`, `/_sandbox/state`)."""

import json
import urllib.request


def check(cond, what, *detail):
    if not cond:
        raise AssertionError(what + "".join(f"\n  {d!r}" for d in detail))


def faults(base, body):
    req = urllib.request.Request(
        base + "/_sandbox/faults",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req) as r:
        check(r.status == 204, "the sandbox took the faults", r.status)


def state(base):
    with urllib.request.urlopen(base + "/_sandbox/state") as r:
        return json.load(r)
