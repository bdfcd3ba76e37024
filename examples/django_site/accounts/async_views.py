"""The forgot-password flow's JSON as async views, on otpd.aio.AsyncOTPClient.

status_json answers what code_status answers (views.py: only the session that
asked may watch; a recipient with no account gets the simulated progress of
a decoy), and adds long polling: with ?wait=N (seconds, at most MAX_WAIT) it
answers as soon as the status is final, or after N seconds with the status
then.  The waiting is AsyncOTPClient.wait(), so under ASGI a waiting request
holds no thread.  The answer itself is built by views._status(), the code
behind code_status, so the two URLs cannot disagree (labels, decoys, the 503
of an unreachable Redis); it runs in the same sync_to_async() call that reads
the session, which an async view needs anyway (the session may hit the
database).  urls.py wires it as async/status/<job>.json.

resend (POST) sends the pending code again with AsyncOTPClient.send(): the
daemon texts the same code while it is valid.  It answers {job, to,
status_url}, or {error, kind} with 429 (and Retry-After) over a limit, 503
when Redis cannot be reached.  It is not wired here; to use it add

    path("async/resend/", async_views.resend, name="async_resend"),

Django 3.2's view decorators (require_GET, never_cache, ...) are not
async-aware, so these views check the method and set the cache headers
themselves.

One client per event loop
-------------------------
redis.asyncio ties each connection to the event loop that opened it, and
Django 3.2 runs async views in different loops: under ASGI in the server's
one loop; under WSGI (runserver, gunicorn's sync workers, the test Client)
async_to_sync() runs each request in a new loop that it closes afterwards.
A client cached per process would be used from a dead loop on the second
request (AsyncOTPClient refuses that with RuntimeError).  So otp_client()
keeps one client per running loop, and closes it as that loop shuts down:
with the client it starts a task that only waits, and closes the client
when it is cancelled.  asyncio.run() and asgiref's async_to_sync (Django's
WSGI path) cancel the tasks left when their coroutine is done and let them
finish before closing the loop, so under WSGI each request gets a client
that is closed at its end, and under ASGI the server's loop keeps one for
its whole life.  A loop closed without cancelling its tasks would leave its
client's sockets to the garbage collector and its entry here; Django does
not run views in such loops.  The client is rebuilt when an OTPD_ setting
changes (override_settings).
"""
import asyncio
import math
import secrets
import time

import redis
from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponseNotAllowed, JsonResponse
from django.urls import reverse
from django.utils.cache import add_never_cache_headers

from otpd import FINAL, mask_to
from otpd.aio import AsyncOTPClient, redis_from_settings
from otpd.django import conf
from otpd.django.errors import translate

from . import views

MAX_WAIT = 25.0   # seconds; below the usual 30 s proxy timeouts
POLL = 0.1        # seconds between two reads of the status while waiting

# event loop -> (settings, its AsyncOTPClient, the task that closes it with the loop).
# Each loop's entry is only touched from that loop's thread.
_clients = {}


def _settings():
    return (conf.redis_url(), conf.redis_sentinels(), conf.redis_master_name(),
            conf.redis_sentinel_password(), conf.hash_key(), conf.prefix())


async def otp_client():
    """The running event loop's AsyncOTPClient, built from settings on first use."""
    loop = asyncio.get_running_loop()
    settings = _settings()
    entry = _clients.get(loop)
    if entry is not None and entry[0] == settings:
        return entry[1]
    url, sentinels, master_name, sentinel_password, hash_key, prefix = settings
    try:
        client = AsyncOTPClient(redis=redis_from_settings(url, sentinels, master_name,
                                                          sentinel_password),
                                hash_key=hash_key, prefix=prefix)
    except ValueError as e:
        raise ImproperlyConfigured(str(e)) from None
    if entry is None:
        _clients[loop] = (settings, client, loop.create_task(_close_with_loop(loop)))
        # Let that task start: one cancelled before its first step would skip its finally.
        await asyncio.sleep(0)
    else:  # an OTPD_ setting changed
        _clients[loop] = (settings, client, entry[2])
        await entry[1].close()
    return client


async def _close_with_loop(loop):
    try:
        await loop.create_future()  # until the loop's end cancels this task
    finally:
        entry = _clients.pop(loop, None)
        if entry is not None:
            await entry[1].close()


def _no_store(resp):
    add_never_cache_headers(resp)
    return resp


def _snapshot(request, job_id):
    """(this session's pending request for job_id, its status JSON), or (None, None)."""
    state = views._state(request, job_id)
    return (state, views._status(state)) if state is not None else (None, None)


def _status_response(st):
    return _no_store(JsonResponse(st, status=503 if st["status"] == "unavailable" else 200))


async def status_json(request, job_id):
    """GET: the job's progress as code_status sends it; ?wait=N long-polls up to N s."""
    if request.method != "GET":
        return HttpResponseNotAllowed(["GET"])
    try:
        wait = float(request.GET.get("wait") or 0)
    except ValueError:
        wait = math.nan
    if not (math.isfinite(wait) and wait >= 0):
        return _no_store(JsonResponse({"error": "wait must be a number of seconds"}, status=400))
    wait = min(wait, MAX_WAIT)
    state, st = await sync_to_async(_snapshot)(request, job_id)
    if state is None:  # only the session that asked may watch
        return _no_store(JsonResponse({"id": job_id, "status": "unknown", "final": True,
                                       "label": views.STATUS_TEXT["unknown"]}, status=404))
    if not wait or st["final"]:
        return _status_response(st)
    if state["user"] is None:
        # A decoy: nothing was sent; its simulated progress ends FAKE_SEND_S after it began.
        await asyncio.sleep(max(0.0, min(wait, state["at"] + views.FAKE_SEND_S - time.time())))
    else:
        try:
            # None: no record (unknown or expired), which the page takes as final too.
            await (await otp_client()).wait(job_id, timeout=wait, poll=POLL,
                                            final=FINAL | {None})
        except (TimeoutError, redis.RedisError, ImproperlyConfigured):
            pass  # answered below as code_status would: the status then, or 503
    return _status_response(await sync_to_async(views._status)(state))


def _replace_state(request, state):
    request.session["pwreset"] = state


async def resend(request):
    """POST: send the pending code again (see the module's docstring)."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    state = await sync_to_async(views._state)(request)
    if state is None:
        return _no_store(JsonResponse({"error": "No code was requested in this session.",
                                       "kind": "unknown"}, status=409))
    if state["user"] is None:
        job = "%s-%s" % (views.PURPOSE, secrets.token_hex(8))  # a decoy's
    else:
        try:
            otp = await otp_client()
            job = await otp.send(state["to"], views.PURPOSE, ttl=views.CODE_TTL,
                                 max_attempts=views.MAX_ATTEMPTS,
                                 channel=state.get("channel", "sms"))
        except Exception as e:
            err = translate(e)
            if err is None:
                raise
            resp = JsonResponse({"error": err.message, "kind": err.kind},
                                status=err.status_code if err.status_code >= 400 else 409)
            if getattr(err, "retry_after", None) is not None:
                resp["Retry-After"] = str(err.retry_after)
            return _no_store(resp)
    await sync_to_async(_replace_state)(request, dict(state, job=job, at=time.time(), wrong=0))
    return _no_store(JsonResponse({"job": job, "to": mask_to(state["to"]),
                                   "status_url": reverse("async_status", args=[job])}))
