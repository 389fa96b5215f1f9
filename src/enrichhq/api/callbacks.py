"""receiver_v1's HTTP side: the bodies providers really send, and who vouches for them.

- `{callback_token, data}`: enrichhq's own shape (the token may come in X-Callback-Token).
- A flat body: n8n's "Using Fields Below" and Clay's HTTP API column send the fields at the top
  level; with a token present, every key but the token (and the seed's id fields) is the data.
- The seed's `{workflow_id, company_id, company_domain, data}`, sent with the API key
  (`Authorization: Bearer <key>` or `apikey`, as Supabase clients send it) and no token.
- An array of any of these (n8n sending all items in one request): each answered in a list.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from enrichhq import exceptions, jsonsafe, receiver
from enrichhq.api.deps import Services, bearer_of, key_matches, services

#: keys that say who a callback is for, never part of its data.
ID_FIELDS = ("callback_token", "workflow_id", "company_id", "company_domain", "batch_id")
#: callbacks in one array body; n8n sends a page of items, not a table.
MAX_CALLBACKS = 1000
#: the answer's status to an array unless all its callbacks succeeded alike (WebDAV's, as others use it).
MULTI_STATUS = 207


@dataclass(frozen=True)
class Sender:
    """What the request's headers say about its sender."""

    #: the API key came (Bearer or apikey).
    keyed: bool
    #: a token from a header: X-Callback-Token, or a Bearer that is not the API key.
    token: str | None
    #: the token is the Authorization Bearer (not X-Callback-Token): maybe a wrong API key.
    token_is_bearer: bool = False


def sender_of(svc: Services, request: Request) -> Sender:
    """Read the headers: the key (constant time), and a token from a header.

    With an `apikey` header the request comes from a Supabase client, whose Authorization holds
    a key or a session, never a callback token: reading it as one said "malformed token".
    """
    headers = request.headers
    bearer = bearer_of(headers.get("authorization"))
    apikey = headers.get("apikey")
    by_bearer = key_matches(svc.settings, bearer)
    by_apikey = key_matches(svc.settings, apikey)
    header_token = headers.get("x-callback-token")
    token = header_token or (None if by_bearer or apikey is not None else bearer)
    return Sender(by_bearer or by_apikey, token, token_is_bearer=not header_token and token is not None)


def split(body: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """(data, id fields) of one callback: `data` when it is the only other key, else the flat rest."""
    ids = {k: body[k] for k in ID_FIELDS if k in body}
    rest = {k: v for k, v in body.items() if k not in ID_FIELDS}
    if list(rest) == ["data"]:
        return rest["data"], ids
    return rest, ids


def _problem(ids: dict[str, Any]) -> str | None:
    wrong = [k for k, v in ids.items() if v is not None and not isinstance(v, str)]
    if wrong:
        return f"{', '.join(wrong)} must be text (a string), as the request sent it"
    return None


async def one(svc: Services, who: Sender, body: Any) -> receiver.Receipt:
    """Answer one callback of a request."""
    if not isinstance(body, dict):
        return receiver.Receipt(
            422,
            {
                "error": "a callback must be a JSON object: {callback_token, data}, the fields "
                "themselves with callback_token, or {workflow_id, company_id, data} with the API key"
            },
        )
    data, ids = split(body)
    problem = _problem(ids)
    if problem is not None:
        return receiver.Receipt(422, {"error": problem})
    token = ids.get("callback_token") or who.token
    forward = await svc.forward()
    names_its_item = bool(ids.get("workflow_id") and (ids.get("company_id") or ids.get("company_domain")))
    if not ids.get("callback_token") and who.token_is_bearer and names_its_item:
        # The original shape with a Bearer that is not our key: the key is wrong (an old
        # deployment's service-role key, say), not a malformed callback token.
        return receiver.Receipt(
            401, {"error": "the API key is wrong: send ENRICHHQ_API_KEY as Authorization: Bearer or apikey"}
        )
    if token or not who.keyed:
        return await receiver.receive(
            svc.dbs, svc.settings, svc.pipeline, token, data, svc.batcher, forward, named=ids
        )
    if not ids.get("workflow_id") or not (ids.get("company_id") or ids.get("company_domain")):
        return receiver.Receipt(401, {"error": receiver.MISSING_TOKEN})
    ref = receiver.ItemRef(
        ids["workflow_id"], ids.get("company_id"), ids.get("company_domain"), ids.get("batch_id")
    )
    return await receiver.receive_keyed(svc.dbs, svc.pipeline, ref, data, svc.batcher, forward)


async def _answered(svc: Services, who: Sender, body: Any) -> receiver.Receipt:
    try:
        return await one(svc, who, body)
    except exceptions.DatabaseError as exc:  # HQ down while logging a refusal, say: the sender retries
        return receiver.Receipt(503, {"error": f"{exc}; send the callback again"})


async def answer(request: Request) -> JSONResponse:
    """The receiver's answer to a request: one callback, or a list of them."""
    try:  # before any token is looked at
        body = jsonsafe.loads(await request.body() or b"{}")
    except exceptions.InputError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    except ValueError:
        return JSONResponse({"error": "the body must be JSON: {callback_token, data}"}, status_code=422)
    svc = services(request)
    who = sender_of(svc, request)
    if not isinstance(body, list):
        receipt = await _answered(svc, who, body)
        return JSONResponse(receipt.body, status_code=receipt.status_code)
    if not 1 <= len(body) <= MAX_CALLBACKS:
        return JSONResponse(
            {"error": f"an array of callbacks holds 1 to {MAX_CALLBACKS} of them, not {len(body)}"},
            status_code=422,
        )
    # Together, so the receiver's batcher stores them in one chunk.
    receipts = await asyncio.gather(*(_answered(svc, who, item) for item in body))
    codes = {r.status_code for r in receipts}
    # One success status when all share it; else 207, each callback's own status in the list (an
    # error status keeps its one error body, never a list).
    status = codes.pop() if len(codes) == 1 and max(codes) < 300 else MULTI_STATUS
    return JSONResponse([{**r.body, "status_code": r.status_code} for r in receipts], status_code=status)
