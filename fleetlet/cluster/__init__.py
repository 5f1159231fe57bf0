"""The cluster: gossip membership over websockets, failure detection, and unit states shared between machines.

- :mod:`~fleetlet.cluster.state`: each member's versioned state, reconciled by digests (Scuttlebutt), pure;
- :mod:`~fleetlet.cluster.detector`: the phi accrual failure detector, pure;
- :mod:`~fleetlet.cluster.membership`: alive / suspect / dead / left, and the view's changes as events, pure;
- :mod:`~fleetlet.cluster.records`: what a member says of itself (its machine record, heartbeat, unit states);
- :mod:`~fleetlet.cluster.wire` and :mod:`~fleetlet.cluster.channel`: the messages, and one connection's protocol
  (handshake with the cluster key of :mod:`~fleetlet.cluster.auth`, then exchanges);
- :mod:`~fleetlet.cluster.gossiper`: one member's rounds, and its answers to inbound gossip;
- transports: :mod:`~fleetlet.cluster.websocket` (aiohttp, ``/v1/gossip``) and
  :mod:`~fleetlet.cluster.memory_network` (the fake, beside it).
"""
