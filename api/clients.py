"""Client registry (scope `admin`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from schemas.clients import ClientCreate, ClientCreated, ClientPublic, ClientSecretRotated
from service.auth import clients as registry
from service.errors import NotFound, Unprocessable

from .deps import AdminDep, SessionDep
from .responses import problems

router = APIRouter(prefix="/v1", tags=["administration"])


@router.post("/clients", status_code=201, responses=problems(401, 403, 409, 422))
async def create_client(
    body: ClientCreate, session: SessionDep, caller: AdminDep, response: Response
) -> ClientCreated:
    """Register a machine client; its secret is shown once, in this response only."""
    if body.client_id and not body.issuer:
        raise Unprocessable("client_id can only be chosen for an external issuer's client")
    created = await registry.create_client(
        session,
        name=body.name,
        agency_type=body.agency_type,
        agency_name=body.agency_name,
        scopes=list(body.scopes),
        issuer=body.issuer,
        client_id=body.client_id,
    )
    public = ClientPublic.model_validate(created.client)
    response.headers["Location"] = f"/v1/clients/{public.client_id}"
    return ClientCreated(**public.model_dump(), client_secret=created.secret)


@router.get("/clients", responses=problems(401, 403))
async def list_clients(session: SessionDep, caller: AdminDep) -> list[ClientPublic]:
    """Every registered client."""
    return [ClientPublic.model_validate(client) for client in await registry.list_clients(session)]


ClientIdPath = Annotated[str, Path(max_length=64)]


@router.get("/clients/{client_id}", responses=problems(401, 403, 404))
async def get_client(
    client_id: ClientIdPath, session: SessionDep, caller: AdminDep
) -> ClientPublic:
    """One registered client (never its secret)."""
    client = await registry.get_client(session, client_id)
    if client is None:
        raise NotFound("no client with this id")
    return ClientPublic.model_validate(client)


@router.post("/clients/{client_id}/disable", responses=problems(401, 403, 404, 409))
async def disable_client(
    client_id: ClientIdPath, session: SessionDep, caller: AdminDep
) -> ClientPublic:
    """Disable a client: its tokens are refused from the next request on. A client cannot
    disable itself (409)."""
    disabled = await registry.disable_client(session, client_id, acting_client_id=caller.client_id)
    return ClientPublic.model_validate(disabled)


@router.post("/clients/{client_id}/enable", responses=problems(401, 403, 404))
async def enable_client(
    client_id: ClientIdPath, session: SessionDep, caller: AdminDep
) -> ClientPublic:
    """Enable a disabled client again, with the secret it had."""
    return ClientPublic.model_validate(await registry.enable_client(session, client_id))


@router.post("/clients/{client_id}/secret", responses=problems(401, 403, 404, 409))
async def rotate_client_secret(
    client_id: ClientIdPath, session: SessionDep, caller: AdminDep
) -> ClientSecretRotated:
    """Issue a new secret, shown once in this response; the old one stops working at once, and
    tokens already issued run until they expire. 409 for an external issuer's client."""
    rotated = await registry.rotate_client_secret(session, client_id)
    public = ClientPublic.model_validate(rotated.client)
    return ClientSecretRotated(**public.model_dump(), client_secret=rotated.secret)
