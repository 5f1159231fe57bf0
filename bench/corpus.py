"""A corpus of realistic unit files: the shipped examples plus generated units shaped like real fleet deployments
(web servers with sidekicks, databases pinned by metadata, global agents), with comments, blank lines and wrapped
lines as people write them."""

from __future__ import annotations

import random
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "configs" / "units"

_WEB = """\
# {app} instance %i: {image}, behind the load balancer
[Unit]
Description={app} web server %i
After=docker.service
Requires=docker.service
Wants={app}-discovery@%i.service

[Service]
EnvironmentFile=-/etc/environment
Environment="APP_ENV={env}" "LOG_LEVEL=info"
TimeoutStartSec={timeout}
Restart=on-failure
RestartSec={restart}s
ExecStartPre=-/usr/bin/docker kill {app}-%i
ExecStartPre=-/usr/bin/docker rm {app}-%i
ExecStartPre=/usr/bin/docker pull {image}
ExecStart=/usr/bin/docker run --rm --name {app}-%i \\
    -p {port}:8080 -e APP_ENV=${{APP_ENV}} -e LOG_LEVEL=${{LOG_LEVEL}} \\
    -v /var/lib/{app}:/data {image}
ExecStop=/usr/bin/docker stop -t 10 {app}-%i

[X-Fleet]
Conflicts={app}@*.service
MachineMetadata="region={region}" "disk=ssd"
"""

_SIDEKICK = """\
[Unit]
Description=Announce {app}@%i
BindsTo={app}@%i.service
After={app}@%i.service

[Service]
ExecStart=/bin/sh -c "while true; do etcdctl set /services/{app}/%H:{port} running --ttl 60; sleep 45; done"
ExecStop=/usr/bin/etcdctl rm /services/{app}/%H:{port}

[X-Fleet]
MachineOf={app}@%i.service
"""

_DB = """\
[Unit]
Description={app} database
After=docker.service

[Service]
Type=simple
KillMode=none
KillSignal=SIGINT
TimeoutStopSec=2min 30s
SuccessExitStatus=0 143 SIGTERM
ExecStartPre=-/usr/bin/docker rm -f {app}-db
ExecStart=/usr/bin/docker run --name {app}-db -v /srv/{app}:/var/lib/db {image}
ExecStop=/usr/bin/docker stop -t 120 {app}-db
ExecStopPost=-/usr/bin/docker rm {app}-db

[X-Fleet]
MachineMetadata=role=db
MachineMetadata=region={region}
"""

_GLOBAL = """\
[Unit]
Description={app} node agent

[Service]
Restart=always
RestartSec=10
ExecStart=/usr/bin/docker run --rm --name {app}-agent --net host --privileged {image}
ExecStop=/usr/bin/docker stop {app}-agent

[X-Fleet]
Global=true
MachineMetadata=region={region}
"""

_APPS = ["api", "web", "auth", "billing", "search", "cart", "feed", "media", "chat", "metrics", "logs", "mail"]
_REGIONS = ["us-east", "us-west", "eu-central", "ap-south"]


def corpus(size: int = 1000, seed: int = 7) -> list[tuple[str, str]]:
    """``size`` (name, text) pairs, the same every run."""
    rng = random.Random(seed)
    units = [(p.name, p.read_text()) for p in sorted(EXAMPLES.glob("*.service"))]
    while len(units) < size:
        app = rng.choice(_APPS) + str(rng.randrange(100))
        fields = {
            "app": app,
            "image": f"registry.local/{app}:{rng.randrange(1, 40)}.{rng.randrange(10)}",
            "env": rng.choice(["prod", "staging"]),
            "timeout": rng.choice(["0", "5min", "90s"]),
            "restart": rng.randrange(1, 30),
            "port": rng.randrange(8000, 9000),
            "region": rng.choice(_REGIONS),
        }
        kind = rng.random()
        if kind < 0.45:
            units.append((f"{app}@{rng.randrange(1, 9)}.service", _WEB.format(**fields)))
        elif kind < 0.7:
            units.append((f"{app}-discovery@{rng.randrange(1, 9)}.service", _SIDEKICK.format(**fields)))
        elif kind < 0.9:
            units.append((f"{app}-db.service", _DB.format(**fields)))
        else:
            units.append((f"{app}-agent.service", _GLOBAL.format(**fields)))
    return units[:size]
