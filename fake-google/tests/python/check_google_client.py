#!/usr/bin/env python3
"""Checks fake-google against client libraries nobody here wrote: Google's google-auth
(service-account credentials with a subject) and google-api-python-client built from the
discovery documents, changed only in their base URL and the key's token_uri.

    pip install google-auth google-api-python-client
    cargo build -p fake-google
    python3 fake-google/tests/python/check_google_client.py     # from the project's root

Not part of CI (it needs PyPI packages); run it by hand after changing the fake. Exit 0 when
every step holds."""
import datetime as dt, http.server as hs, json, os, socket, subprocess, sys, threading, time, urllib.request

from google.oauth2 import service_account
from googleapiclient.discovery import build_from_document
from googleapiclient.errors import HttpError

ROOT = os.getcwd()
HERE = os.path.dirname(os.path.abspath(__file__))
DISCOVERY = os.path.join(HERE, "..", "..", "discovery")
failed = 0


def step(name, ok, seen=""):
    global failed
    print(("ok   " if ok else "FAIL ") + name + ("" if ok else f"  (seen: {seen})"), flush=True)
    failed += 0 if ok else 1


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def control(base, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        text = r.read().decode()
        return json.loads(text) if text else None


def main():
    binary = next((p for p in (os.path.join(ROOT, "target", d, "fake-google") for d in ("release", "debug")) if os.path.exists(p)), None)
    if not binary:
        sys.exit("build fake-google first: cargo build -p fake-google")
    port = free_port(); base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([binary, "--listen", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close(); break
            except OSError:
                time.sleep(0.1)
        control(base, "POST", "/_fake/domains", {"domain": "acme.test", "users": ["alice@acme.test"], "time_zone": "Europe/Stockholm"})
        key = control(base, "POST", "/_fake/service-accounts", {"domain": "acme.test"})
        scopes = ["https://www.googleapis.com/auth/calendar", "https://www.googleapis.com/auth/contacts.readonly",
                  "https://www.googleapis.com/auth/directory.readonly"]
        control(base, "PUT", f"/_fake/delegation/{key['client_id']}", {"scopes": scopes})
        control(base, "POST", "/_fake/directory/acme.test/people",
                {"names": [{"givenName": "Växel"}], "phoneNumbers": [{"value": "08-123 456 78", "type": "work"}]})
        control(base, "POST", "/_fake/contacts/alice@acme.test",
                {"names": [{"givenName": "Kund", "familyName": "Ab"}], "phoneNumbers": [{"value": "+1 (650) 253-0000", "type": "mobile"}]})

        creds = service_account.Credentials.from_service_account_info(key, scopes=scopes, subject="alice@acme.test")
        from google.auth.transport.requests import Request
        creds.refresh(Request())
        step("google-auth mints a token as alice (JWT bearer, DWD subject)", bool(creds.token) and creds.expiry is not None, creds.token)

        cal = build_from_document(open(os.path.join(DISCOVERY, "calendar.v3.json")).read(), credentials=creds,
                                  client_options={"api_endpoint": f"{base}/calendar/v3/"})
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        ev = cal.events().insert(calendarId="primary", body={
            "summary": "Lunch", "start": {"dateTime": (now + dt.timedelta(hours=1)).isoformat()},
            "end": {"dateTime": (now + dt.timedelta(hours=2)).isoformat()}}).execute()
        step("events.insert", ev.get("id") and ev.get("status") == "confirmed", ev)
        series = cal.events().insert(calendarId="primary", body={
            "summary": "Stand-up", "recurrence": ["RRULE:FREQ=DAILY;COUNT=5"],
            "start": {"dateTime": "2026-12-01T09:00:00", "timeZone": "Europe/Stockholm"},
            "end": {"dateTime": "2026-12-01T09:15:00", "timeZone": "Europe/Stockholm"}}).execute()
        step("events.insert of a recurring series", series.get("recurrence") == ["RRULE:FREQ=DAILY;COUNT=5"], series)

        items, page, sync = [], None, None
        while True:
            resp = cal.events().list(calendarId="primary", maxResults=1, pageToken=page).execute()
            items += resp.get("items", [])
            page = resp.get("nextPageToken")
            if not page:
                sync = resp.get("nextSyncToken"); break
        step("events.list pages to a sync token", len(items) == 2 and sync, (len(items), sync))

        patched = cal.events().patch(calendarId="primary", eventId=ev["id"], body={"summary": "Lunch with a customer"}).execute()
        step("events.patch", patched.get("summary") == "Lunch with a customer", patched)
        inst = cal.events().instances(calendarId="primary", eventId=series["id"]).execute()["items"]
        step("events.instances", len(inst) == 5 and inst[1]["id"] == series["id"] + "_20261202T080000Z", [i["id"] for i in inst])
        cal.events().delete(calendarId="primary", eventId=inst[1]["id"]).execute()
        delta = cal.events().list(calendarId="primary", syncToken=sync).execute()
        got = {i["id"]: i.get("status") for i in delta.get("items", [])}
        step("incremental list has the patch and the cancelled instance",
             got.get(ev["id"]) == "confirmed" and got.get(inst[1]["id"]) == "cancelled" and delta.get("nextSyncToken"), delta)
        try:
            cal.events().list(calendarId="primary", syncToken=sync, timeMin=now.isoformat()).execute()
            step("syncToken + timeMin is refused", False, "accepted")
        except HttpError as e:
            step("syncToken + timeMin is refused", e.resp.status == 400, e)
        control(base, "POST", "/_fake/sync-tokens/invalidate", {"user": "alice@acme.test"})
        try:
            cal.events().list(calendarId="primary", syncToken=delta["nextSyncToken"]).execute()
            step("an invalidated token gets 410", False, "accepted")
        except HttpError as e:
            step("an invalidated token gets 410", e.resp.status == 410 and "fullSyncRequired" in e.content.decode(), e.content)

        got = []
        class Rx(hs.BaseHTTPRequestHandler):
            def do_POST(self):
                got.append({k.lower(): v for k, v in self.headers.items()}); self.send_response(200); self.end_headers()
            def log_message(self, *a): pass
        rp = free_port(); srv = hs.ThreadingHTTPServer(("127.0.0.1", rp), Rx)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        ch = cal.events().watch(calendarId="primary", body={"id": "c0ffee00-0000-4000-8000-000000000001", "type": "web_hook",
                                                             "address": f"http://127.0.0.1:{rp}/hook", "token": "t=1"}).execute()
        step("events.watch", ch.get("resourceId") and isinstance(ch.get("expiration"), str), ch)
        cal.events().patch(calendarId="primary", eventId=ev["id"], body={"location": "Café"}).execute()
        for _ in range(50):
            if len(got) >= 2: break
            time.sleep(0.1)
        states = [h.get("x-goog-resource-state") for h in got]
        step("sync then exists notifications arrive", states[:2] == ["sync", "exists"], got)
        cal.channels().stop(body={"id": ch["id"], "resourceId": ch["resourceId"]}).execute()
        step("channels.stop", True)

        people = build_from_document(open(os.path.join(DISCOVERY, "people.v1.json")).read(), credentials=creds,
                                     client_options={"api_endpoint": f"{base}/"})
        conns = people.people().connections().list(resourceName="people/me", personFields="names,phoneNumbers",
                                                   requestSyncToken=True).execute()
        phones = [p["phoneNumbers"][0].get("canonicalForm") for p in conns.get("connections", [])]
        step("people.connections.list", phones == ["+16502530000"] and conns.get("nextSyncToken"), conns)
        d = people.people().listDirectoryPeople(readMask="names,emailAddresses,phoneNumbers",
                                                sources=["DIRECTORY_SOURCE_TYPE_DOMAIN_PROFILE", "DIRECTORY_SOURCE_TYPE_DOMAIN_CONTACT"],
                                                requestSyncToken=True).execute()
        names = sorted(p["names"][0]["displayName"] for p in d.get("people", []))
        step("people.listDirectoryPeople", names == ["Alice", "Växel"] and d.get("nextSyncToken"), d)
        again = people.people().listDirectoryPeople(readMask="names,emailAddresses,phoneNumbers",
                                                    sources=["DIRECTORY_SOURCE_TYPE_DOMAIN_PROFILE", "DIRECTORY_SOURCE_TYPE_DOMAIN_CONTACT"],
                                                    requestSyncToken=True, syncToken=d["nextSyncToken"]).execute()
        step("listDirectoryPeople incremental with nothing changed", "people" not in again and again.get("nextSyncToken"), again)
    finally:
        proc.kill()
    print(f"{failed} failed" if failed else "all steps ok")


if __name__ == "__main__":
    main()
    sys.exit(1 if failed else 0)
