"""Drives the Stripe sandbox with Stripe's official Python library (the `stripe` package).

Usage: python stripe_client.py SANDBOX_URL

SANDBOX_URL is the sandbox server's base (e.g. http://127.0.0.1:4010); the Stripe API is served
under SANDBOX_URL/stripe. Every check raises on failure; the script exits 0 only when all pass.
Run by tests/it/official_clients.rs.
"""

import sys
import time
import uuid

import stripe
from sandbox import check, faults

SECRET_KEY = "sk_test_sandbox"


def step(name):
    print(f"stripe: {name}", flush=True)


def expect(exc_class, fn):
    """Calls fn and returns the exception it raised, which must be an exc_class."""
    try:
        got = fn()
    except exc_class as e:
        return e
    except Exception as e:  # noqa: BLE001 - the wrong class is the failure reported
        raise AssertionError(
            f"expected {exc_class.__name__}, the library raised {type(e).__name__}: {e}"
        ) from e
    raise AssertionError(f"expected {exc_class.__name__}, the call returned {got!r}")


def main(base):
    api_base = base + "/stripe"
    client = stripe.StripeClient(SECRET_KEY, base_addresses={"api": api_base})
    customers = client.v1.customers
    wedding = str(uuid.uuid4())

    step("create with metadata and an idempotency key")
    key = str(uuid.uuid4())
    params = {
        "name": "Amara & Tom",
        "email": "amara@example.com",
        "metadata": {"fieldsync_wedding_id": wedding, "guests_total": "137"},
    }
    created = customers.create(params=params, options={"idempotency_key": key})
    check(isinstance(created, stripe.Customer), "create returns a Customer", type(created))
    check(created.id.startswith("cus_"), "customer ids start with cus_", created.id)
    check(created.metadata["fieldsync_wedding_id"] == wedding, "metadata is stored", created)
    check(created.name == "Amara & Tom", "name is stored", created)
    check(created.livemode is False, "test keys answer livemode=false", created)
    # attributes client code reads on every customer: absent ones raise AttributeError
    check(created.address is None and created.default_source is None
          and created.invoice_settings.default_payment_method is None
          and created.tax_exempt == "none" and created.preferred_locales == [],
          "a customer has Stripe's standard attributes", created)
    response = created.last_response
    check(response.request_id and response.request_id.startswith("req_"),
          "answers carry a Request-Id", dict(response.headers))
    check(response.headers.get("Idempotency-Key") == key,
          "POST answers echo the Idempotency-Key", dict(response.headers))
    check(response.headers.get("Stripe-Version"), "answers carry Stripe-Version",
          dict(response.headers))

    step("replay of the same key returns the same customer")
    replay = customers.create(params=params, options={"idempotency_key": key})
    check(replay.id == created.id, "a replay answers the first result", created.id, replay.id)
    check(replay.last_response.headers.get("Idempotent-Replayed") == "true",
          "a replay says Idempotent-Replayed: true", dict(replay.last_response.headers))

    step("same key, other parameters: IdempotencyError")
    e = expect(stripe.IdempotencyError, lambda: customers.create(
        params={**params, "name": "Someone Else"}, options={"idempotency_key": key}))
    check(e.http_status == 400, "idempotency errors are 400", e.http_status)

    step("retrieve, with expand")
    got = customers.retrieve(created.id)
    check(got.id == created.id and got.metadata == created.metadata, "retrieve", got)
    check(got.last_response.request_id, "GET answers carry a Request-Id",
          dict(got.last_response.headers))
    expanded = customers.retrieve(created.id, params={"expand": ["default_source"]})
    check(expanded.id == created.id, "retrieve takes expand[]", expanded)

    step("update merges metadata; an empty value unsets a key")
    updated = customers.update(created.id, params={
        "metadata": {"guests_total": "", "venue": "Kew Gardens"},
        "expand": ["default_source"],
    })
    check(updated.metadata.to_dict() == {"fieldsync_wedding_id": wedding, "venue": "Kew Gardens"},
          "metadata merge and unset", updated.metadata)
    check(updated.name == "Amara & Tom", "fields not sent are kept", updated)

    step("search by metadata")
    query = f"metadata['fieldsync_wedding_id']:'{wedding}'"
    found = customers.search(params={"query": query})
    check([c.id for c in found.data] == [created.id], "search finds the customer", found)
    none = customers.search(params={"query": "metadata['fieldsync_wedding_id']:'nobody'"})
    check(none.data == [], "search finds nothing else", none)
    both = customers.search(params={
        "query": f"email:'amara@example.com' AND metadata['fieldsync_wedding_id']:'{wedding}'"})
    check([c.id for c in both.data] == [created.id], "AND-ed clauses", both)
    either = customers.search(params={"query": f"name~'amara' OR metadata['x']:'{wedding}'"})
    check(created.id in [c.id for c in either.data], "OR-ed clauses, ~ substring", either)
    quoted = customers.create(params={"metadata": {"quote": "O'Neil"}})
    escaped = customers.search(params={"query": "metadata['quote']:'O\\'Neil'"})
    check([c.id for c in escaped.data] == [quoted.id], "\\' escapes a quote", escaped)
    e = expect(stripe.InvalidRequestError, lambda: customers.search(
        params={"query": "email:'a' AND name:'b' OR phone:'c'"}))
    check(e.param == "query", "a malformed query is a 400 naming query", e.param)

    step("list")
    listed = customers.list(params={"limit": 3, "email": "amara@example.com"})
    check(created.id in [c.id for c in listed.data], "list shows the customer", listed)

    step("paging: auto_paging_iter follows has_more / starting_after and next_page")
    batch = str(uuid.uuid4())
    made = [customers.create(params={"email": f"{batch}@example.com", "metadata": {"batch": batch}}).id
            for _ in range(5)]
    page = customers.list(params={"limit": 2, "email": f"{batch}@example.com"})
    check(len(page.data) == 2 and page.has_more, "a first page of 2 with more", page)
    walked = [c.id for c in page.auto_paging_iter()]
    check(walked == made[::-1], "all pages, newest first", walked, made)
    back = customers.list(params={"limit": 2, "ending_before": made[1],
                                  "email": f"{batch}@example.com"})
    check([c.id for c in back.data] == [made[3], made[2]], "ending_before pages back", back)
    hits = customers.search(params={"query": f"metadata['batch']:'{batch}'", "limit": 2})
    check(hits.has_more and hits.next_page, "search pages carry next_page", hits)
    searched = [c.id for c in hits.auto_paging_iter()]
    check(sorted(searched) == sorted(made), "search auto-paging finds all", searched, made)
    e = expect(stripe.InvalidRequestError, lambda: customers.list(params={"starting_after": "cus_nope"}))
    check(e.http_status == 404 and e.param == "starting_after", "an unknown cursor is named",
          e.http_status, e.param)

    step("unset all metadata with metadata=''")
    cleared = customers.update(created.id, params={"metadata": ""})
    check(cleared.metadata.to_dict() == {}, "metadata='' removes every key", cleared.metadata)

    step("wrong key: AuthenticationError")
    wrong = stripe.StripeClient("sk_test_wrong", base_addresses={"api": api_base})
    e = expect(stripe.AuthenticationError, lambda: wrong.v1.customers.retrieve(created.id))
    check(e.http_status == 401, "401", e.http_status)

    step("invalid parameters: InvalidRequestError naming the parameter")
    e = expect(stripe.InvalidRequestError,
               lambda: customers.create(params={"metadata": {"k" * 41: "v"}}))
    check(e.http_status == 400 and e.param and e.param.startswith("metadata"),
          "a too-long metadata key is a 400 naming it", e.http_status, e.param)
    e = expect(stripe.InvalidRequestError,
               lambda: customers.create(params={"nonsense": "x"}))
    check(e.param == "nonsense" and e.code == "parameter_unknown",
          "an unknown parameter is named", e.param, e.code)
    e = expect(stripe.InvalidRequestError, lambda: customers.retrieve("cus_missing"))
    check(e.http_status == 404 and e.code == "resource_missing", "404 resource_missing",
          e.http_status, e.code)
    check(e.request_id, "errors carry a Request-Id", e.headers)

    step("429: RateLimitError")
    faults(base, {"api": "stripe", "fail_next": 1, "status": 429})
    e = expect(stripe.RateLimitError, lambda: customers.retrieve(created.id))
    check(e.http_status == 429 and e.error.code == "rate_limit", "429 rate_limit",
          e.http_status, e.json_body)

    step("429 before the idempotency layer: the same key succeeds afterwards")
    key2 = str(uuid.uuid4())
    faults(base, {"api": "stripe", "fail_next": 1, "status": 429})
    expect(stripe.RateLimitError, lambda: customers.create(
        params={"name": "Rate Limited"}, options={"idempotency_key": key2}))
    later = customers.create(params={"name": "Rate Limited"}, options={"idempotency_key": key2})
    check(later.name == "Rate Limited", "a retried 429 with the same key is served", later)

    step("max_network_retries: 503s are retried with one idempotency key")
    retrying = stripe.StripeClient(SECRET_KEY, base_addresses={"api": api_base},
                                   max_network_retries=2)
    faults(base, {"api": "stripe", "fail_next": 2, "status": 503})
    started = time.monotonic()
    survived = retrying.v1.customers.create(params={"name": "Retried"})
    check(survived.name == "Retried", "the third try is served", survived)
    check(time.monotonic() - started >= 0.5, "the library backed off between tries")
    check(survived.last_response.headers.get("Idempotency-Key"),
          "the library added its own idempotency key for retries",
          dict(survived.last_response.headers))
    faults(base, {"api": "stripe", "fail_next": 3, "status": 503})
    e = expect(stripe.APIError, lambda: retrying.v1.customers.retrieve(created.id))
    check(e.http_status == 503, "retries stop after max_network_retries", e.http_status)
    faults(base, {"api": "stripe", "fail_next": 0})

    step("the module-level configuration (stripe.api_base) works too")
    stripe.api_key = SECRET_KEY
    stripe.api_base = api_base
    legacy = stripe.Customer.create(metadata={"legacy": "yes"}, idempotency_key=str(uuid.uuid4()))
    check(stripe.Customer.retrieve(legacy.id).metadata["legacy"] == "yes", "legacy create/retrieve")
    check(stripe.Customer.delete(legacy.id).deleted is True, "legacy delete")

    step("delete")
    deleted = customers.delete(created.id)
    check(deleted.deleted is True and deleted.id == created.id, "delete answers deleted", deleted)
    e = expect(stripe.InvalidRequestError, lambda: customers.retrieve(created.id))
    check(e.http_status == 404, "a deleted customer is gone", e.http_status)

    print("stripe: all checks passed", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: stripe_client.py SANDBOX_URL")
    try:
        main(sys.argv[1].rstrip("/"))
    except Exception as e:  # noqa: BLE001 - report any failure as one clear line and exit 1
        import traceback

        traceback.print_exc()
        sys.exit(f"stripe: FAILED: {type(e).__name__}: {e}")
