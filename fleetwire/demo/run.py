"""`fleetwire demo`: the whole loop on loopback, with nothing to configure.

`run_demo` (the default): an emulated Kubernetes API (`fleetwire.sim.kube_emulator`), the
operator (kopf with the project's handlers, in this process), the Fleet API simulator and
its vehicles, and the ingest server. A FleetTelemetryConfig with a private CA goes in; the
operator issues the certificate, configures the vehicles (an unpaired one and one on old
firmware are skipped, with their reasons), and the vehicles stream through the server.
A renewal under the same CA follows (a new leaf in the served Secret): every vehicle's `ca`
accepts it, so nothing is pushed and no handshake fails.
Then the private CA is replaced, as when a CA is rotated: the operator stages the certificate
from the new chain (the vehicles' `ca` would refuse it), pushes a `ca` accepting both chains to
every vehicle, promotes the certificate once they all hold it, and the running pod reloads it;
vehicles that reconnect afterwards are accepted at once; the pushes it cost and the TLS
failures during it (none) are printed. A timeline is printed as it happens; exit status 0
when every step happened.

The server is the operator's own Deployment: the kubelet stand-in (`fleetwire.sim.kubelet`)
runs its pod as a local process in a bubblewrap sandbox (the TLS Secret and the config
mounted where the pod spec says, the probes run as written), the vehicles reach it through
the vehicle Service's port on loopback, and the demo reads its metrics through the metrics
Service. The CA rotation reaches the running pod the way it does on a cluster: the
stand-in swaps the mounted Secret's `..data` link and the server reloads its certificate.

`run_server_demo` (`fleetwire demo --server-only`, and the fallback without kmock): the
ingest path alone: a throwaway PKI, the server, a handful of simulated vehicles streaming
for a few seconds plus one impostor whose certificate is not from a vehicle CA, the
decoded records, and a summary; exit status 0 when every record was acknowledged and the
impostor was refused.
"""


from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TextIO

from fleetwire.demo.cluster import whole_loop
from fleetwire.demo.printing import Timeline
from fleetwire.demo.server_only import run_server_demo

__all__ = ["run_demo"]


async def run_demo(*, vehicles: int = 8, out: TextIO = sys.stdout, workdir: Path | None = None,
                   step_timeout: float = 40.0) -> bool:
    """The whole loop (see the module's docstring); True when every step happened."""
    try:
        from fleetwire.sim.kube_emulator import KubeApi
    except ImportError:
        print("fleetwire demo: kmock is not installed (pip install 'fleetwire[demo]'), so the operator cannot "
              "run against an emulated cluster; showing the ingest server alone\n", file=out)
        return await run_server_demo(out=out, workdir=workdir)
    directory = workdir or Path(tempfile.mkdtemp(prefix="fleetwire-demo-"))
    say = Timeline(out).say
    print(f"fleetwire demo: the operator, the Fleet API simulator and the server on loopback (files in {directory})",
          file=out)
    from fleetwire.sim.kubelet import KubeletThread

    if shutil.which("bwrap") is None:
        print("fleetwire demo: bubblewrap (bwrap) is not installed, so the server's pod cannot run "
              "(apt-get install bubblewrap); showing the ingest server alone\n", file=out)
        return await run_server_demo(out=out, workdir=workdir)
    cluster = KubeApi(directory).start()
    node = KubeletThread(cluster.url, directory / "node").start()
    stack = contextlib.AsyncExitStack()
    try:
        return await whole_loop(cluster, node, stack, directory, vehicles, say, out, step_timeout)
    except TimeoutError as exc:
        say(f"FAILED: {exc}")
        print("kubelet stand-in errors: " + ("; ".join(node.kubelet.errors[-3:]) or "none"), file=out)
        for pod in node.kubelet.pods.values():
            tail = pod.log.read_text(errors="replace")[-2000:] if pod.log.exists() else ""
            print(f"--- pod {pod.name} ({pod.waiting or 'started'}) ---\n{tail}", file=out)
        return False
    finally:
        await stack.aclose()
        await asyncio.to_thread(node.stop)
        cluster.stop()
