"""Requests for Support (referrals) to the Children's Front Door (SPEC 2.2)."""

from __future__ import annotations

import uuid
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request, Security
from fastapi.responses import Response

from schemas.common import IsoDateTime, Page
from schemas.referrals import (
    DecisionCreate,
    ReferralCreate,
    ReferralPublic,
    ReferralStatus,
    WithdrawCreate,
)
from service import referrals
from service.auth.caller import Caller
from service.auth.scopes import WRITE_REFERRALS
from service.auth.tokens import VerifiedToken
from service.db import transaction
from service.idempotency import check_key
from service.logs import request_id_var

from .deps import (
    IdempotencyKeyDep,
    PageDep,
    SessionDep,
    access_reason,
    authenticate,
    verify_token,
)
from .responses import problems

router = APIRouter(prefix="/v1", tags=["referrals"])

Writer = Annotated[Caller, Security(authenticate, scopes=[WRITE_REFERRALS])]
WriterToken = Annotated[VerifiedToken, Security(verify_token, scopes=[WRITE_REFERRALS])]
Reader = Annotated[Caller, Security(authenticate, scopes=["referrals:read"])]
Decider = Annotated[Caller, Security(authenticate, scopes=["referrals:decide"])]


@router.post(
    "/referrals",
    status_code=201,
    response_model=ReferralPublic,
    responses=problems(400, 401, 403, 409, 413, 422, 503),
)
async def create_referral(
    body: ReferralCreate,
    request: Request,
    token: WriterToken,
    idempotency_key: IdempotencyKeyDep = None,
) -> Response:
    """Send a Request for Support about one child; a same-key retry replays the answer."""
    # The hot path: no session; the database function checks the client behind the token.
    app_state = request.app.state
    sender = referrals.Sender(
        client_id=token.client_id,
        issuer=token.issuer,
        default_issuer=app_state.settings.issuer,
        request_id=request_id_var.get(),
        access_reason=access_reason(request),
    )
    created = await referrals.create_referral(
        app_state.pool, sender, check_key(idempotency_key), body
    )
    if isinstance(created, referrals.Replay):
        async with transaction(app_state.session_factory) as session:
            status, content = await referrals.replay_created(session, created)
        headers = {"Idempotent-Replayed": "true"}
        if status == 201:
            headers["Location"] = referral_location(orjson.loads(content)["id"])
        return Response(content, status_code=status, media_type="application/json", headers=headers)
    return Response(
        created.model_dump_json(),
        status_code=201,
        media_type="application/json",
        headers={"Location": referral_location(created.id)},
    )


def referral_location(referral_id: uuid.UUID | str) -> str:
    return f"/v1/referrals/{referral_id}"


@router.get("/referrals", responses=problems(401, 403, 422, 503))
async def list_referrals(
    session: SessionDep,
    caller: Reader,
    page: PageDep,
    status: ReferralStatus | None = None,
    received_from: Annotated[
        IsoDateTime | None, Query(description="Received at or after (with a UTC offset)")
    ] = None,
    received_to: Annotated[
        IsoDateTime | None, Query(description="Received before (with a UTC offset)")
    ] = None,
    child_id: uuid.UUID | None = None,
    overdue: Annotated[
        bool | None, Query(description="Still undecided after decision_due_at")
    ] = None,
    urgent: Annotated[bool | None, Query(description="Marked at immediate risk")] = None,
) -> Page[ReferralPublic]:
    """Referrals this client may see (its agency's, or all with read:all), newest first."""
    filters = referrals.ReferralFilters(
        status=status,
        received_from=received_from,
        received_to=received_to,
        child_id=child_id,
        overdue=overdue,
        urgent=urgent,
    )
    return await referrals.list_referrals(session, caller, filters, page)


@router.get("/referrals/{referral_id}", responses=problems(401, 403, 404, 422, 503))
async def get_referral(
    referral_id: uuid.UUID, session: SessionDep, caller: Reader
) -> ReferralPublic:
    """One referral, with the Front Door's decision once made; another agency's is 404."""
    return await referrals.get_referral(session, caller, referral_id)


@router.post(
    "/referrals/{referral_id}/decision", responses=problems(401, 403, 404, 409, 413, 422, 503)
)
async def decide_referral(
    referral_id: uuid.UUID, body: DecisionCreate, session: SessionDep, caller: Decider
) -> ReferralPublic:
    """Record the Front Door's decision on a received referral."""
    return await referrals.decide_referral(session, caller, referral_id, body)


@router.post(
    "/referrals/{referral_id}/withdraw", responses=problems(401, 403, 404, 409, 413, 422, 503)
)
async def withdraw_referral(
    referral_id: uuid.UUID, body: WithdrawCreate, session: SessionDep, caller: Writer
) -> ReferralPublic:
    """The referring agency withdraws its referral before the Front Door decides it."""
    return await referrals.withdraw_referral(session, caller, referral_id, body)
