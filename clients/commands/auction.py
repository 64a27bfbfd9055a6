"""The flexibility auction on a server: ``flex post|needs|submit|withdraw|offers|auction|results|awards``.

Added by :mod:`clients.commands.flex` to its group, next to the offline
``flex clear``. The operator posts needs and clears the auction (``flex
auction``, once the market's gate is closed); aggregators submit and
withdraw offers and read their awards. The needs and offers files have the
columns of the offline auction (see :mod:`engine.flexibility`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dsomarket.clients.commands.remote import acknowledge, add_connection, show, talk
from dsomarket.clients.output import add_format_options

if TYPE_CHECKING:
    from dsomarket.clients.api import Client

# The client library (and gRPC with it) is imported by each command below that talks to a server, so that the
# offline `flex clear` of the same group starts without it.


def register(actions) -> None:
    """Add the server commands to the ``flex`` group's ``actions``."""
    p = actions.add_parser("post", help="post the DSO's needs for a market, all or none (operator)",
                           description="Columns: need_id, kind (line|voltage|import), interval (ISO 8601 UTC), "
                                       "max_price (per MWh of relief) and, by kind, element (line or bus id), "
                                       "direction, required_kw or required_pu, partial_ok.")
    p.add_argument("--market", required=True)
    p.add_argument("--file", required=True, type=Path)
    add_connection(p)
    p.set_defaults(func=_post)

    p = actions.add_parser("needs", help="needs posted on a server",
                           description="Aggregators see every need but not its max_price.")
    p.add_argument("--market", default="")
    _list(p)
    p.set_defaults(func=_needs)

    p = actions.add_parser("submit", help="submit flexibility offers to a server, all or none",
                           description="Columns: offer_id, resource_id, direction (up|down), quantity_kw, "
                                       "price (per MWh), interval (ISO 8601 UTC start)[, availability_price, "
                                       "divisible, min_kw, tan_phi]; CSV or Parquet.")
    p.add_argument("--market", required=True)
    p.add_argument("--file", required=True, type=Path)
    add_connection(p)
    p.set_defaults(func=_submit)

    p = actions.add_parser("withdraw", help="withdraw flexibility offers by id")
    p.add_argument("--market", required=True)
    p.add_argument("--offer", action="append", required=True, metavar="OFFER_ID", help="an offer id (repeat)")
    add_connection(p)
    p.set_defaults(func=_withdraw)

    p = actions.add_parser("offers", help="flexibility offers on a server")
    p.add_argument("--market", default="")
    p.add_argument("--aggregator", default="", help="operator and auditor: whose (default all)")
    p.add_argument("--include-withdrawn", action="store_true")
    _list(p)
    p.set_defaults(func=_offers)

    p = actions.add_parser("auction", help="clear a market's flexibility auction on the server (operator)",
                           description="Clear the auction of a market whose gate is closed, before the energy "
                                       "market is cleared. Exit status 1 when it is not optimal.")
    p.add_argument("--market", required=True)
    p.add_argument("--pricing", choices=("pay_as_bid", "uniform"), default="pay_as_bid",
                   help="default %(default)s")
    add_connection(p)
    p.set_defaults(func=_auction)

    p = actions.add_parser("results", help="each need's outcome: met, shortfall, cost, marginal price")
    p.add_argument("--market", default="")
    _list(p)
    p.set_defaults(func=_results)

    p = actions.add_parser("awards", help="flexibility awards (yours, as an aggregator)")
    p.add_argument("--market", default="")
    p.add_argument("--aggregator", default="", help="operator and auditor: whose awards (default all)")
    _list(p)
    p.set_defaults(func=_awards)


def _list(p) -> None:
    add_connection(p)
    add_format_options(p)


def _post(args) -> int:
    from dsomarket.clients.commands.tables import read_needs

    needs = read_needs(args.file)
    return acknowledge(args, lambda c: c.post_needs(args.market, needs), "needs posted")


def _needs(args) -> int:
    from dsomarket.clients.api import PostedFlexNeed

    return show(args, lambda c: c.list_needs(market_id=args.market), PostedFlexNeed)


def _submit(args) -> int:
    from dsomarket.clients.commands.tables import read_flex_offers

    offers = read_flex_offers(args.file)
    return acknowledge(args, lambda c: c.submit_flex_offers(args.market, offers), "offers acknowledged")


def _withdraw(args) -> int:
    return acknowledge(args, lambda c: c.withdraw_flex_offers(args.market, args.offer), "offers withdrawn")


def _offers(args) -> int:
    from dsomarket.clients.api import PostedFlexOffer

    return show(args, lambda c: c.list_flex_offers(market_id=args.market, aggregator_id=args.aggregator,
                                                   include_withdrawn=args.include_withdrawn), PostedFlexOffer)


def _auction(args) -> int:
    async def work(client: Client) -> int:
        r = await client.clear_flexibility(args.market, pricing=args.pricing)
        cost = "" if r.total_cost is None else f", cost {r.total_cost} {r.currency}"
        print(f"flexibility auction of {r.market_id}: {r.status} ({r.pricing}){cost}; {r.needs_met} of "
              f"{r.need_count} needs met, {r.offers_accepted} of {r.offer_count} offers accepted "
              f"({r.accepted_kw:.1f} kW)")
        return 0 if r.status == "optimal" else 1

    return talk(args, work)


def _results(args) -> int:
    from dsomarket.clients.api import FlexNeedResult

    return show(args, lambda c: c.list_flex_need_results(market_id=args.market), FlexNeedResult)


def _awards(args) -> int:
    from dsomarket.clients.api import FlexAward

    return show(args, lambda c: c.list_flex_awards(market_id=args.market, aggregator_id=args.aggregator),
                FlexAward)
