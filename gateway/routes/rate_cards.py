"""/v1/rate-cards: append (admin, finance) and list (admin, finance, tenant-admin) rate cards.

Rate cards are never changed: a new price is a new card with a later ``effective_from``; a
second card with the same ``effective_from`` is 409. A card effective in the past is accepted,
and the answer's ``reprice_hint`` says how to reprice usage already posted since then.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from litestar import Response, get, post
from litestar.datastructures import State
from litestar.params import JSONBody
from litestar.status_codes import HTTP_201_CREATED
from sqlalchemy.orm import Session, sessionmaker

from accounting.ledger_models import RateCardRow
from accounting.rate_cards import RateCard, rate_card_document
from gateway.accounting_schemas import RateCardCreate, RateCardList, RateCardView
from gateway.auth import AuthenticatedPrincipal
from gateway.budget_service import create_rate_card, list_rate_cards, reprice_hint
from gateway.timestamps import ensure_utc


@post("/v1/rate-cards", tags=["accounting"], summary="Add a rate card (admin or finance)")
async def post_rate_card(
    data: JSONBody[RateCardCreate], state: State, principal: AuthenticatedPrincipal
) -> Response[RateCardView]:
    """201 with the stored card; 422 naming the bad field; 409 when a card with the same
    effective_from exists."""
    session_factory: sessionmaker[Session] = state.session_factory
    now = datetime.now(UTC)

    def store() -> RateCardView:
        with session_factory() as session:
            row, card = create_rate_card(session, principal, data, now=now)
            return rate_card_view(row, card, reprice_hint=reprice_hint(card.effective_from, int(time.time())))

    view = await asyncio.to_thread(store)
    return Response(view, status_code=HTTP_201_CREATED, headers={"Location": "/v1/rate-cards"})


@get("/v1/rate-cards", tags=["accounting"], summary="Every rate card, newest first")
async def get_rate_cards(state: State, principal: AuthenticatedPrincipal) -> RateCardList:
    """All cards by effective_from, newest first; the one in force is the first not in the future."""
    session_factory: sessionmaker[Session] = state.session_factory

    def read() -> RateCardList:
        with session_factory() as session:
            return RateCardList(
                rate_cards=[rate_card_view(row, card) for row, card in list_rate_cards(session, principal)]
            )

    return await asyncio.to_thread(read)


def rate_card_view(row: RateCardRow, card: RateCard, *, reprice_hint: str | None = None) -> RateCardView:
    """The API form of a stored card (decimals as strings)."""
    document = rate_card_document(card)
    return RateCardView(
        id=row.id,
        effective_from=datetime.fromtimestamp(card.effective_from, UTC),
        currency=card.currency,
        prices=document["prices"],
        qos_multipliers=document["qos_multipliers"],
        created_at=ensure_utc(row.created_at),
        created_by=row.created_by,
        reprice_hint=reprice_hint,
    )
