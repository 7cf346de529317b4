"""Drives the Google Calendar sandbox with Google's official Python libraries
(google-api-python-client built from the vendor's discovery document, google-auth credentials).

Usage: python google_client.py SANDBOX_URL DISCOVERY_JSON

SANDBOX_URL is the sandbox server's base (e.g. http://127.0.0.1:4010): the calendar API is served
under SANDBOX_URL/google/calendar/v3/ and the token endpoint at SANDBOX_URL/google/oauth2/token.
DISCOVERY_JSON is the Calendar v3 discovery document (from ../shared/api-specs/, or the copy the client library carries).
Every check raises on failure; the script exits 0 only when all pass. Run by
tests/it/official_clients.rs.
"""

import json
import sys
import uuid

import google_auth_httplib2
import httplib2
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build_from_document
from googleapiclient.errors import HttpError
from sandbox import check, faults, state

CLIENT_ID = "sandbox-client.apps.googleusercontent.com"
CLIENT_SECRET = "sandbox-google-client-secret"
REFRESH_TOKEN = "sandbox-google-refresh-token"
SCOPE = "https://www.googleapis.com/auth/calendar.events"


def step(name):
    print(f"google: {name}", flush=True)


def http_error(fn, status, reason):
    """Calls fn, which must raise an HttpError with `status` and first error `reason`."""
    try:
        got = fn()
    except HttpError as e:
        details = e.error_details if isinstance(e.error_details, list) else []
        reasons = [d.get("reason") for d in details if isinstance(d, dict)]
        check(e.status_code == status and reason in reasons,
              f"expected HttpError {status} {reason}", e.status_code, reasons, e.content)
        return e
    raise AssertionError(f"expected HttpError {status} {reason}, the call returned {got!r}")


def tokens_issued(base):
    return state(base)["google"]["tokens_issued"]


def event_id():
    # base32hex characters (a-v, 0-9), as the API requires of client ids: a UUID's hex is a subset
    return "fs" + uuid.uuid4().hex


def main(base, discovery_path):
    with open(discovery_path, encoding="utf-8") as f:
        document = json.load(f)
    credentials = Credentials(
        token=None,
        refresh_token=REFRESH_TOKEN,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        token_uri=base + "/google/oauth2/token",
        scopes=[SCOPE],
    )
    service = build_from_document(
        document,
        credentials=credentials,
        client_options={"api_endpoint": base + "/google/calendar/v3/"},
    )
    events = service.events()
    calendar = "primary"
    before = tokens_issued(base)

    step("insert with a client id (the library refreshes the token first)")
    eid = event_id()
    body = {
        "id": eid,
        "summary": "Amara & Tom: ceremony",
        "location": "Kew Gardens, Richmond",
        "start": {"dateTime": "2027-06-19T14:00:00+01:00", "timeZone": "Europe/London"},
        "end": {"dateTime": "2027-06-19T15:00:00+01:00", "timeZone": "Europe/London"},
        "extendedProperties": {"private": {"fieldsyncId": eid, "wedding": "w1"}},
    }
    created = events.insert(calendarId=calendar, body=body).execute()
    check(created["id"] == eid and created["kind"] == "calendar#event", "insert", created)
    check(created.get("etag"), "an event carries an etag", created)
    check(credentials.valid and credentials.token.startswith("ya29."),
          "the library refreshed its access token", credentials.token)
    check(tokens_issued(base) == before + 1, "one token refresh", tokens_issued(base), before)

    step("calendars.get, the usual access check")
    cal = service.calendars().get(calendarId="primary").execute()
    check(cal["kind"] == "calendar#calendar" and cal.get("timeZone"), "calendars.get", cal)

    raw_http = google_auth_httplib2.AuthorizedHttp(credentials, http=httplib2.Http())
    resp, _ = raw_http.request(base + "/google/calendar/v3/calendars/primary?alt=json")
    check(resp.status == 200 and resp["content-type"] == "application/json; charset=UTF-8",
          "JSON answers name their charset, as Google's do", dict(resp))

    step("insert again: 409 duplicate")
    http_error(lambda: events.insert(calendarId=calendar, body=body).execute(), 409, "duplicate")

    step("invalid id: 400")
    http_error(lambda: events.insert(calendarId=calendar, body={**body, "id": "BAD!"}).execute(),
               400, "invalid")

    step("get")
    got = events.get(calendarId=calendar, eventId=eid).execute()
    check(got == created, "get returns what insert answered", got, created)

    step("patch: merge; null deletes an extended property")
    patched = events.patch(calendarId=calendar, eventId=eid, body={
        "summary": "Amara & Tom: ceremony (moved)",
        "extendedProperties": {"private": {"wedding": None, "venue": "kew"}},
    }).execute()
    check(patched["summary"].endswith("(moved)"), "patch sets the summary", patched)
    check(patched["extendedProperties"]["private"] == {"fieldsyncId": eid, "venue": "kew"},
          "patch merges extended properties", patched["extendedProperties"])
    check(patched["etag"] != created["etag"], "a write changes the etag")
    check(patched["location"] == created["location"], "patch keeps fields not sent")

    step("update with If-Match (the request object's headers)")
    full = {k: v for k, v in patched.items() if k not in ("location",)}
    full["summary"] = "Amara & Tom: ceremony (final)"
    request = events.update(calendarId=calendar, eventId=eid, body=full)
    request.headers["If-Match"] = patched["etag"]
    updated = request.execute()
    check(updated["summary"].endswith("(final)"), "update with the right etag", updated)
    check("location" not in updated, "update replaces: fields not sent are cleared", updated)
    stale = events.update(calendarId=calendar, eventId=eid, body=full)
    stale.headers["If-Match"] = patched["etag"]
    http_error(stale.execute, 412, "conditionNotMet")

    step("list with privateExtendedProperty")
    other = event_id()
    events.insert(calendarId=calendar, body={**body, "id": other, "extendedProperties": {
        "private": {"fieldsyncId": other}}}).execute()
    listed = events.list(calendarId=calendar,
                         privateExtendedProperty=[f"fieldsyncId={eid}"]).execute()
    check([e["id"] for e in listed["items"]] == [eid], "the property filter finds one event",
          listed)
    check("nextSyncToken" in listed, "the last page carries nextSyncToken", listed)
    everything = events.list(calendarId=calendar, maxResults=1).execute()
    check(len(everything["items"]) == 1 and "nextPageToken" in everything, "paging", everything)
    second = events.list(calendarId=calendar, maxResults=1,
                         pageToken=everything["nextPageToken"]).execute()
    check(len(second["items"]) == 1 and "nextSyncToken" in second, "the next page", second)

    step("incremental sync with the sync token")
    events.patch(calendarId=calendar, eventId=other, body={"summary": "changed"}).execute()
    changed = events.list(calendarId=calendar, syncToken=second["nextSyncToken"]).execute()
    check([e["id"] for e in changed["items"]] == [other], "sync shows the change", changed)

    step("list filters on a group calendar: timeMin/timeMax, orderBy, q, iCalUID, updatedMin")
    team = "weddings-team@group.calendar.google.com"
    day = lambda h: {"dateTime": f"2027-06-19T{h:02d}:00:00Z"}  # noqa: E731
    plan = {"ceremony": (14, 15), "dinner": (18, 20), "prep": (9, 11), "dance": (21, 23)}
    ids = {}
    for name, (a, b) in plan.items():
        made = events.insert(calendarId=team, body={
            "summary": f"Amara & Tom {name}", "description": "at Kew" if name == "dinner" else "",
            "start": day(a), "end": day(b)}).execute()
        ids[name] = made["id"]
    window = events.list(calendarId=team, timeMin="2027-06-19T10:30:00Z",
                         timeMax="2027-06-19T19:00:00Z", singleEvents=True,
                         orderBy="startTime").execute()
    check([e["id"] for e in window["items"]] == [ids["prep"], ids["ceremony"], ids["dinner"]],
          "the window holds the events overlapping it, by start time",
          [e["summary"] for e in window["items"]])
    http_error(lambda: events.list(calendarId=team, orderBy="startTime").execute(),
               400, "badRequest")
    http_error(lambda: events.list(calendarId=team, timeMin="2027-06-20T00:00:00Z",
                                   timeMax="2027-06-19T00:00:00Z").execute(),
               400, "timeRangeEmpty")
    found = events.list(calendarId=team, q="KEW amara").execute()
    check([e["id"] for e in found["items"]] == [ids["dinner"]], "q matches every term", found)
    by_uid = events.list(calendarId=team, iCalUID=f"{ids['dance']}@google.com").execute()
    check([e["id"] for e in by_uid["items"]] == [ids["dance"]], "iCalUID finds one", by_uid)
    mark = events.get(calendarId=team, eventId=ids["prep"]).execute()["updated"]
    events.delete(calendarId=team, eventId=ids["prep"]).execute()
    recent = events.list(calendarId=team, updatedMin=mark, orderBy="updated").execute()
    check(ids["prep"] in [e["id"] for e in recent["items"]]
          and all(e["updated"] >= mark for e in recent["items"]),
          "updatedMin lists changes since, deletions included", recent)

    step("partial responses with fields")
    slim = events.get(calendarId=team, eventId=ids["dance"], fields="id,start/dateTime").execute()
    check(slim == {"id": ids["dance"], "start": {"dateTime": day(21)["dateTime"]}},
          "fields keeps the selected members", slim)
    page = events.list(calendarId=team, fields="items(id,summary),nextSyncToken").execute()
    check(set(page) == {"items", "nextSyncToken"} and all(set(e) == {"id", "summary"}
                                                          for e in page["items"]),
          "fields selects inside list items", page)
    http_error(lambda: events.get(calendarId=team, eventId=ids["dance"], fields="id(").execute(),
               400, "invalidParameter")

    step("batch: a multipart request of several calls, each answered on its own")
    pointed = dict(document, rootUrl=base + "/google/")  # the batch URL derives from rootUrl
    batched = build_from_document(pointed, credentials=credentials)
    results = {}
    batch = batched.new_batch_http_request(
        callback=lambda rid, response, exc: results.__setitem__(rid, (response, exc)))
    fresh = event_id()
    batch.add(batched.events().insert(calendarId=team, body={
        "id": fresh, "summary": "Batched", "start": day(10), "end": day(11)}), request_id="new")
    batch.add(batched.events().insert(calendarId=team, body={
        "id": fresh, "summary": "Batched twice", "start": day(10), "end": day(11)}),
        request_id="dup")
    batch.add(batched.events().get(calendarId=team, eventId=ids["dance"], fields="id,summary"),
              request_id="get")
    batch.add(batched.events().delete(calendarId=team, eventId="nosuchevent1"), request_id="gone")
    batch.execute()
    check(results["new"][1] is None and results["new"][0]["id"] == fresh, "batched insert",
          results["new"])
    dup = results["dup"][1]
    check(isinstance(dup, HttpError) and dup.status_code == 409
          and dup.error_details[0]["reason"] == "duplicate", "batched duplicate is 409", dup)
    check(results["get"][0] == {"id": ids["dance"], "summary": "Amara & Tom dance"},
          "batched get with fields", results["get"])
    gone = results["gone"][1]
    check(isinstance(gone, HttpError) and gone.status_code == 404, "batched 404", gone)
    check(events.get(calendarId=team, eventId=fresh).execute()["summary"] == "Batched",
          "the batched insert is stored")

    step("delete twice: 204 then 410 deleted")
    check(events.delete(calendarId=calendar, eventId=eid).execute() == "", "delete answers empty")
    http_error(lambda: events.delete(calendarId=calendar, eventId=eid).execute(), 410, "deleted")
    tomb = events.get(calendarId=calendar, eventId=eid).execute()
    check(tomb["status"] == "cancelled", "a deleted event stays as a cancelled tombstone", tomb)
    http_error(lambda: events.get(calendarId=calendar, eventId="nosuchevent1").execute(),
               404, "notFound")

    step("expired tokens: the library refreshes and retries")
    refreshed_before = tokens_issued(base)
    faults(base, {"api": "google", "expire_tokens": True})
    again = events.get(calendarId=calendar, eventId=other).execute()
    check(again["id"] == other, "the call succeeds after a refresh", again)
    check(tokens_issued(base) == refreshed_before + 1, "exactly one refresh",
          tokens_issued(base), refreshed_before)

    step("403 rateLimitExceeded surfaces as HttpError with the reason")
    faults(base, {"api": "google", "fail_next": 1, "status": 403})
    e = http_error(lambda: events.get(calendarId=calendar, eventId=other).execute(),
                   403, "rateLimitExceeded")
    check(e.reason == "Rate Limit Exceeded", "the message is the reason", e.reason)

    step("execute(num_retries=...) retries rateLimitExceeded 403s and 429s")
    faults(base, {"api": "google", "fail_next": 1, "status": 403})
    check(events.get(calendarId=calendar, eventId=other).execute(num_retries=2)["id"] == other,
          "a retried 403 rateLimitExceeded is served")
    faults(base, {"api": "google", "fail_next": 1, "status": 429})
    check(events.get(calendarId=calendar, eventId=other).execute(num_retries=2)["id"] == other,
          "a retried 429 is served")
    faults(base, {"api": "google", "fail_next": 0})

    step("revoked refresh token: RefreshError")
    from google.auth.exceptions import RefreshError

    faults(base, {"api": "google", "expire_tokens": True, "revoke_refresh_tokens": True})
    try:
        events.get(calendarId=calendar, eventId=other).execute()
        raise AssertionError("a revoked refresh token must fail the call")
    except RefreshError as err:
        check("invalid_grant" in str(err), "the token endpoint answers invalid_grant", str(err))
    faults(base, {"api": "google"})

    step("an explicit AuthorizedHttp over plain httplib2 works too")
    authed = google_auth_httplib2.AuthorizedHttp(credentials, http=httplib2.Http())
    plain = build_from_document(document, http=authed,
                                client_options={"api_endpoint": base + "/google/calendar/v3/"})
    check(plain.events().get(calendarId=calendar, eventId=other).execute()["id"] == other,
          "get through AuthorizedHttp")

    print("google: all checks passed", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: google_client.py SANDBOX_URL DISCOVERY_JSON")
    try:
        main(sys.argv[1].rstrip("/"), sys.argv[2])
    except Exception as e:  # noqa: BLE001 - report any failure as one clear line and exit 1
        import traceback

        traceback.print_exc()
        sys.exit(f"google: FAILED: {type(e).__name__}: {e}")
