"""dsomarket: market clearing for distribution system operators.

The installed package maps the repository's top-level folders into one namespace:
``dsomarket.engine`` (pure library: feeders, bids, clearing, interface curves,
flexibility, settlement), ``dsomarket.server`` (the gRPC service),
``dsomarket.clients`` (the client library and the ``dsomarket`` command) and
``dsomarket.v1`` (the generated protobuf/gRPC stubs of ``proto/dsomarket/v1``).
Importing this package imports none of them, so ``import dsomarket`` stays cheap.
"""

__version__ = "0.2.0"
__all__ = ["__version__"]
